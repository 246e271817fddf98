//! What the schema's types cannot check: each error points at the offending value, or at the
//! table that misses a required one.
//!
//! The feature modules check their own tables and name the bad key relative to the table they
//! were given; this file turns those keys into paths from the top of the file.

use super::error::{Source, Step};
use super::{Config, ConfigError, UNIT_SUFFIXES, UnitConfig};
use crate::policy::{Remediation, RemediationConfig};
use crate::report::alert_out::{AlertError, alerts_endpoint};
use crate::sensors::probes;
use crate::units::pattern::UnitPattern;

impl Config {
    /// Checks the tables in schema order; the first problem found is the error.
    pub(super) fn validate(&self, source: &Source<'_>) -> Result<(), ConfigError> {
        self.validate_agent(source)?;
        // The defaults alone first, so a bad `[defaults.remediation]` is blamed on that table
        // rather than on the first unit that inherits it (no unit name: no unit-only checks).
        Remediation::resolve(
            "",
            &self.defaults.remediation,
            &RemediationConfig::default(),
        )
        .map_err(|error| {
            let at = keys(&["defaults", "remediation"], &error.key);
            source.error(&at, error.message)
        })?;
        for (index, unit) in self.units.iter().enumerate() {
            self.validate_unit(source, index, unit)?;
        }
        self.policy
            .validate()
            .map_err(|error| source.error(&keys(&["policy"], &error.key), error.message))?;
        if self.webhook.max_body == 0 {
            let at = keys(&["webhook"], "max_body");
            return Err(source.error(&at, "expected a number of bytes above zero, found 0".into()));
        }
        if let Some(url) = &self.alertmanager.url {
            alerts_endpoint(url).map_err(|error| {
                let message = match error {
                    AlertError::BadUrl { url, reason } => format!("{url:?} {reason}"),
                    other => other.to_string(),
                };
                source.error(&keys(&["alertmanager"], "url"), message)
            })?;
        }
        self.fleet
            .validate()
            .map_err(|(key, message)| source.error(&keys(&["fleet"], key), message))?;
        if self.alertmanager.timeout.is_zero() {
            let at = keys(&["alertmanager"], "timeout");
            return Err(source.error(&at, "expected a duration above zero, found 0s".into()));
        }
        Ok(())
    }

    fn validate_agent(&self, source: &Source<'_>) -> Result<(), ConfigError> {
        let paths = [
            ("status_socket", &self.agent.status_socket),
            ("state_dir", &self.agent.state_dir),
            ("audit_log", &self.agent.audit_log),
        ];
        for (key, value) in paths {
            if value.as_os_str().is_empty() {
                let at = keys(&["agent"], key);
                return Err(source.error(&at, "expected a path, found an empty string".into()));
            }
        }
        Ok(())
    }

    /// The unit at `index`: its name, then what its own tables resolve to.
    fn validate_unit(
        &self,
        source: &Source<'_>,
        index: usize,
        unit: &UnitConfig,
    ) -> Result<(), ConfigError> {
        let name_of = |index| {
            [
                Step::Key("unit".into()),
                Step::Index(index),
                Step::Key("name".into()),
            ]
        };
        // A name that does not look like a pattern is checked as a unit name below.
        let looks_like_pattern = unit.name.contains(['*', '?', '['])
            || unit
                .name
                .split_once('/')
                .is_some_and(|(slice, _)| slice.ends_with(".slice"));
        let pattern = match UnitPattern::parse(&unit.name) {
            Ok(pattern) => pattern,
            Err(e) if looks_like_pattern => {
                let problem = format!("invalid unit pattern {:?}: {e}", unit.name);
                return Err(source.error(&name_of(index), problem));
            }
            Err(_) => UnitPattern::Exact(unit.name.clone()),
        };
        if pattern.is_pattern() {
            pattern_tables_problem(source, index, unit)?;
        } else if let Some(problem) = unit_name_problem(&unit.name) {
            return Err(source.error(&name_of(index), problem));
        }
        if let Some(first) = self.units[..index]
            .iter()
            .position(|other| other.name == unit.name)
        {
            let line = source.line_of(&name_of(first)).unwrap_or_default();
            let message = format!(
                "duplicate unit \"{}\", first configured at line {line}; each unit may appear only once",
                unit.name
            );
            return Err(source.error(&name_of(index), message));
        }
        // The defaults passed on their own, so what fails here is in the unit's own table.
        Remediation::resolve(&unit.name, &self.defaults.remediation, &unit.remediation).map_err(
            |error| {
                let mut at = vec![Step::Key("unit".into()), Step::Index(index)];
                at.extend(keys(&["remediation"], &error.key));
                source.error(&at, error.message)
            },
        )?;
        // The engine numbers units by position; only the error matters here.
        let number = u32::try_from(index).unwrap_or(u32::MAX);
        probes::specs(number, &unit.name, &unit.probes, &unit.detectors).map_err(|error| {
            let at = [
                Step::Key("unit".into()),
                Step::Index(index),
                Step::Key(error.table.into()),
                Step::Index(error.index),
                Step::Key(error.key.into()),
            ];
            source.error(&at, error.message)
        })?;
        // Fleet mode: a group name becomes an etcd key segment.
        if let Some(group) = unit
            .group
            .as_deref()
            .filter(|g| g.is_empty() || g.contains('/'))
        {
            let at = [
                Step::Key("unit".into()),
                Step::Index(index),
                Step::Key("group".into()),
            ];
            let message = format!("expected a group name without \"/\", found {group:?}");
            return Err(source.error(&at, message));
        }
        Ok(())
    }
}

/// `keys(&["policy"], "backoff.multiplier")` → the steps of `policy.backoff.multiplier`; an
/// empty `relative` adds nothing.
fn keys(table: &[&str], relative: &str) -> Vec<Step> {
    let relative = relative.split('.').filter(|key| !key.is_empty());
    table
        .iter()
        .copied()
        .chain(relative)
        .map(|key| Step::Key(key.to_owned()))
        .collect()
}

/// Probes and detectors address one unit (its port, its command): on a pattern, which covers
/// many units appearing over time, they are refused, at the first one.
fn pattern_tables_problem(
    source: &Source<'_>,
    index: usize,
    unit: &UnitConfig,
) -> Result<(), ConfigError> {
    let first = if !unit.probes.is_empty() {
        "probe"
    } else if !unit.detectors.is_empty() {
        "detector"
    } else {
        return Ok(());
    };
    let at = [
        Step::Key("unit".into()),
        Step::Index(index),
        Step::Key(first.into()),
        Step::Index(0),
    ];
    let message = format!(
        "{:?} is a unit pattern: probes and detectors are not supported on a pattern \
         (each would need its own address per instance); configure them on a [[unit]] \
         naming one unit exactly",
        unit.name
    );
    Err(source.error(&at, message))
}

/// Why `name` is not a systemd unit name, if it is not one.
fn unit_name_problem(name: &str) -> Option<String> {
    let expected = "expected a systemd unit name such as \"web.service\"";
    if name.is_empty() {
        return Some(format!("{expected}, found an empty string"));
    }
    if name.contains('/') {
        return Some(format!("{expected}, found {name:?}, which contains \"/\""));
    }
    if name.contains(char::is_whitespace) {
        return Some(format!(
            "{expected}, found {name:?}, which contains whitespace"
        ));
    }
    let known = UNIT_SUFFIXES
        .iter()
        .any(|suffix| name.len() > suffix.len() && name.ends_with(suffix));
    if !known {
        let suffixes = UNIT_SUFFIXES
            .map(|suffix| format!("\"{suffix}\""))
            .join(", ");
        return Some(format!(
            "{expected}, found {name:?}; a unit name is a name followed by one of {suffixes}"
        ));
    }
    None
}
