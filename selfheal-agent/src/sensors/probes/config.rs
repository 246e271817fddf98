//! `[[unit.probe]]` and `[[unit.detector]]`: health probes and operator-written detectors.
//!
//! A key left out is `None` here and takes its default when the spec is built: intervals and
//! timeouts from the constants below, thresholds from [`ProbeRules::default`] (the seeds').

use std::time::Duration;

use serde::Deserialize;

use super::{
    Check, DetectorSpec, ProbeSpec,
    address::{HostPort, HttpUrl},
};
use crate::{config::duration, detect::probe::ProbeRules};

pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_DETECTOR_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_DETECTOR_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[unit.probe]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Unique within the unit; names the probe in logs, metrics and status.
    pub name: String,
    pub kind: ProbeKind,
    /// kind = "http": the URL to GET.
    #[serde(default)]
    pub url: Option<HttpUrl>,
    /// kind = "http": the status that means healthy; any 2xx when left out.
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// kind = "http": text the body must contain (the first 64 KiB are searched).
    #[serde(default)]
    pub body_contains: Option<String>,
    /// kind = "tcp": `host:port` to connect to.
    #[serde(default)]
    pub address: Option<HostPort>,
    /// kind = "exec": program and arguments; exit status 0 means healthy.
    #[serde(default)]
    pub command: Option<Command>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub timeout: Option<Duration>,
    /// The probe checks something the unit depends on: its failures are the unit's
    /// `integration_failure`, not `consecutive_failures` or `performance_degradation`.
    #[serde(default)]
    pub dependency: bool,
    #[serde(default)]
    pub consecutive_failures: Option<Count>,
    #[serde(default)]
    pub degradation_ratio: Option<Factor>,
    #[serde(default)]
    pub baseline_ops: Option<Count>,
    #[serde(default)]
    pub error_rate: Option<Fraction>,
    #[serde(default)]
    pub error_window: Option<Count>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub grace: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Http,
    Tcp,
    Exec,
}

impl ProbeKind {
    fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Exec => "exec",
        }
    }
}

/// One `[[unit.detector]]` table: a command run every `interval`; a non-zero exit, or JSON
/// output naming a problem, raises a problem of kind `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    pub name: String,
    pub command: Command,
    /// The problem kind raised, as named in policy ladders (e.g. "queue_backlog").
    pub kind: String,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub timeout: Option<Duration>,
}

/// A program and its arguments, run directly (no shell).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Command(pub Vec<String>);

impl TryFrom<Vec<String>> for Command {
    type Error = String;

    fn try_from(words: Vec<String>) -> Result<Self, String> {
        match words.first() {
            Some(program) if !program.is_empty() => Ok(Command(words)),
            _ => Err(r#"expected a command as a list such as ["/usr/local/bin/check", "--quick"], found an empty list or an empty program"#.into()),
        }
    }
}

/// A count of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct Count(pub u32);

impl TryFrom<i64> for Count {
    type Error = String;

    fn try_from(n: i64) -> Result<Self, String> {
        u32::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .map(Count)
            .ok_or_else(|| format!("expected a whole number of at least 1, found {n}"))
    }
}

/// A multiplier above 1, such as the latency ratio that counts as degraded.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Factor(pub f64);

// Sound: `try_from` admits finite values only, never NaN.
impl Eq for Factor {}

impl TryFrom<f64> for Factor {
    type Error = String;

    fn try_from(x: f64) -> Result<Self, String> {
        if x.is_finite() && x > 1.0 {
            Ok(Factor(x))
        } else {
            Err(format!("expected a ratio above 1 such as 2.0, found {x}"))
        }
    }
}

/// A fraction in (0, 1], such as an error rate.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Fraction(pub f64);

// Sound: `try_from` admits finite values only, never NaN.
impl Eq for Fraction {}

impl TryFrom<f64> for Fraction {
    type Error = String;

    fn try_from(x: f64) -> Result<Self, String> {
        if x > 0.0 && x <= 1.0 {
            Ok(Fraction(x))
        } else {
            Err(format!(
                "expected a fraction above 0 and at most 1, such as 0.1 for 10 %, found {x}"
            ))
        }
    }
}

/// What is wrong with one probe or detector table, for the config loader to point at
/// `unit.<table>[index].<key>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unit.{table}[{index}].{key}: {message}")]
pub struct ProbeConfigError {
    /// "probe" or "detector".
    pub table: &'static str,
    pub index: usize,
    pub key: &'static str,
    pub message: String,
}

impl ProbeConfig {
    /// The thresholds the detector applies to this probe's results.
    pub fn rules(&self) -> ProbeRules {
        let defaults = ProbeRules::default();
        ProbeRules {
            dependency: self.dependency,
            consecutive_failures: self
                .consecutive_failures
                .map_or(defaults.consecutive_failures, |n| n.0),
            degradation_ratio: self
                .degradation_ratio
                .map_or(defaults.degradation_ratio, |r| r.0),
            baseline_ops: self
                .baseline_ops
                .map_or(defaults.baseline_ops, |n| n.0 as usize),
            error_rate: self.error_rate.map_or(defaults.error_rate, |r| r.0),
            error_window: self
                .error_window
                .map_or(defaults.error_window, |n| n.0 as usize),
            grace: self.grace.unwrap_or(defaults.grace),
        }
    }

    /// What to check, once the keys are known to fit the kind; `Err` is (key, message).
    fn check(&self) -> Result<Check, (&'static str, String)> {
        let kind = self.kind.as_str();
        let foreign = [
            ("url", self.url.is_some(), ProbeKind::Http),
            (
                "expect_status",
                self.expect_status.is_some(),
                ProbeKind::Http,
            ),
            (
                "body_contains",
                self.body_contains.is_some(),
                ProbeKind::Http,
            ),
            ("address", self.address.is_some(), ProbeKind::Tcp),
            ("command", self.command.is_some(), ProbeKind::Exec),
        ];
        for (key, set, owner) in foreign {
            if set && owner != self.kind {
                let owner = owner.as_str();
                return Err((
                    key,
                    format!(
                        "{key} is for kind = \"{owner}\" probes; this one is kind = \"{kind}\""
                    ),
                ));
            }
        }
        let missing = |key: &'static str| (key, format!("a kind = \"{kind}\" probe needs {key}"));
        match self.kind {
            ProbeKind::Http => {
                if let Some(status) = self.expect_status.filter(|s| !(100..=599).contains(s)) {
                    let message =
                        format!("expected an HTTP status from 100 to 599, found {status}");
                    return Err(("expect_status", message));
                }
                Ok(Check::Http {
                    url: self.url.clone().ok_or_else(|| missing("url"))?,
                    expect_status: self.expect_status,
                    body_contains: self.body_contains.clone(),
                })
            }
            ProbeKind::Tcp => Ok(Check::Tcp {
                address: self.address.clone().ok_or_else(|| missing("address"))?,
            }),
            ProbeKind::Exec => Ok(Check::Exec {
                command: self.command.clone().ok_or_else(|| missing("command"))?.0,
            }),
        }
    }
}

/// Checks one unit's probe and detector tables and builds what the runner needs.
pub fn specs(
    unit: u32,
    unit_name: &str,
    probes: &[ProbeConfig],
    detectors: &[DetectorConfig],
) -> Result<(Vec<ProbeSpec>, Vec<DetectorSpec>), ProbeConfigError> {
    let mut probe_specs = Vec::new();
    for (index, probe) in probes.iter().enumerate() {
        let error = |key, message| ProbeConfigError {
            table: "probe",
            index,
            key,
            message,
        };
        let earlier = probes[..index].iter().map(|p| p.name.as_str());
        check_name("probe", &probe.name, earlier).map_err(|m| error("name", m))?;
        let check = probe
            .check()
            .map_err(|(key, message)| error(key, message))?;
        let interval = probe.interval.unwrap_or(DEFAULT_PROBE_INTERVAL);
        let timeout = probe.timeout.unwrap_or(DEFAULT_PROBE_TIMEOUT);
        check_period(interval, timeout).map_err(|(key, m)| error(key, m))?;
        probe_specs.push(ProbeSpec {
            unit,
            unit_name: unit_name.to_owned(),
            name: probe.name.clone(),
            check,
            interval,
            timeout,
            dependency: probe.dependency,
        });
    }
    let mut detector_specs = Vec::new();
    for (index, detector) in detectors.iter().enumerate() {
        let error = |key, message| ProbeConfigError {
            table: "detector",
            index,
            key,
            message,
        };
        let earlier = detectors[..index].iter().map(|d| d.name.as_str());
        check_name("detector", &detector.name, earlier).map_err(|m| error("name", m))?;
        if !is_kind_name(&detector.kind) {
            let message = format!(
                "expected a problem kind name in snake_case such as \"queue_backlog\", found {:?}",
                detector.kind
            );
            return Err(error("kind", message));
        }
        let interval = detector.interval.unwrap_or(DEFAULT_DETECTOR_INTERVAL);
        let timeout = detector.timeout.unwrap_or(DEFAULT_DETECTOR_TIMEOUT);
        check_period(interval, timeout).map_err(|(key, m)| error(key, m))?;
        detector_specs.push(DetectorSpec {
            unit,
            unit_name: unit_name.to_owned(),
            name: detector.name.clone(),
            command: detector.command.0.clone(),
            kind: detector.kind.clone(),
            interval,
            timeout,
        });
    }
    Ok((probe_specs, detector_specs))
}

/// A problem kind name: lowercase letters, digits and "_", starting with a letter. They end
/// up in metric labels and policy ladders, so they stay plain.
pub fn is_kind_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn check_name<'a>(
    what: &str,
    name: &str,
    mut earlier: impl Iterator<Item = &'a str>,
) -> Result<(), String> {
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "expected a {what} name without spaces such as \"health\", found {name:?}"
        ));
    }
    if earlier.any(|other| other == name) {
        return Err(format!(
            "duplicate {what} {name:?} in this unit; each {what} needs its own name"
        ));
    }
    Ok(())
}

fn check_period(interval: Duration, timeout: Duration) -> Result<(), (&'static str, String)> {
    if interval.is_zero() {
        return Err(("interval", "expected a duration above zero, found 0".into()));
    }
    if timeout.is_zero() {
        return Err(("timeout", "expected a duration above zero, found 0".into()));
    }
    Ok(())
}
