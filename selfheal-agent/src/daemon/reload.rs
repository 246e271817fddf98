//! `SIGHUP` (`systemctl reload selfheal`): the config is read again and, when valid, applied
//! without losing state. What a reload can change while the agent runs: each unit's policy
//! (restart, ladders — they apply to the next incident —, stall and leak thresholds) and the
//! `[policy]` table. What needs a restart of the agent is refused with the reason, and so is an
//! invalid file (with its file:line:col): the running config stays in force either way.

use std::path::Path;

use crate::{
    config::{Config, ConfigError, UnitPolicy},
    policy::{PolicyConfig, UnitSpec},
};

/// A config the running agent can switch to.
#[derive(Debug)]
pub struct Reload {
    pub config: Config,
    pub units: Vec<UnitPolicy>,
}

impl Reload {
    pub fn policy(&self) -> PolicyConfig {
        self.config.policy.clone()
    }

    /// The policy's view of each unit, in the unit table's order.
    pub fn specs(&self) -> Vec<UnitSpec> {
        self.units.iter().map(spec).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(
        "the set of units changed (added: {added:?}, removed: {removed:?}); \
         this agent applies that on its next start, not on reload"
    )]
    UnitsChanged {
        added: Vec<String>,
        removed: Vec<String>,
    },
    #[error("[{table}] changed; it is applied on the agent's next start, not on reload")]
    NeedsRestart { table: &'static str },
}

pub fn load(path: &Path, running: &Config) -> Result<Reload, ReloadError> {
    check(running, Config::load(path)?)
}

/// Whether the running agent can switch from `running` to `new`.
pub fn check(running: &Config, new: Config) -> Result<Reload, ReloadError> {
    let names = |c: &Config| -> Vec<String> { c.units.iter().map(|u| u.name.clone()).collect() };
    let (old, now) = (names(running), names(&new));
    if old != now {
        return Err(ReloadError::UnitsChanged {
            added: now.iter().filter(|n| !old.contains(n)).cloned().collect(),
            removed: old.iter().filter(|n| !now.contains(n)).cloned().collect(),
        });
    }
    let fixed = [
        ("agent", running.agent != new.agent),
        ("http", running.http != new.http),
        ("webhook", running.webhook != new.webhook),
        ("alertmanager", running.alertmanager != new.alertmanager),
    ];
    if let Some((table, _)) = fixed.into_iter().find(|(_, changed)| *changed) {
        return Err(ReloadError::NeedsRestart { table });
    }
    let changed_probes = running
        .units
        .iter()
        .zip(&new.units)
        .find(|(a, b)| a.probes != b.probes || a.detectors != b.detectors);
    if changed_probes.is_some() {
        return Err(ReloadError::NeedsRestart {
            table: "unit.probe / unit.detector",
        });
    }
    let units = new.unit_policies();
    Ok(Reload { config: new, units })
}

pub fn spec(unit: &UnitPolicy) -> UnitSpec {
    UnitSpec {
        name: unit.name.clone(),
        restart: unit.restart,
        restart_delay: unit.restart_delay,
        remediation: unit.remediation.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml").expect("valid config")
    }

    const TWO: &str = r#"
[[unit]]
name = "web.service"

[[unit]]
name = "db.service"
restart = "never"
"#;

    #[test]
    fn a_changed_unit_policy_is_applied() {
        let running = config(TWO);
        let new = config(&TWO.replace("\"never\"", "\"always\""));
        let reload = check(&running, new).expect("accepted");
        assert_eq!(reload.units[1].name, "db.service");
        assert_eq!(reload.specs()[1].restart.as_str(), "always");
    }

    #[test]
    fn added_and_removed_units_are_named_in_the_refusal() {
        let running = config(TWO);
        let new = config(
            r#"
[[unit]]
name = "web.service"

[[unit]]
name = "cache.service"
"#,
        );
        let err = check(&running, new).expect_err("refused").to_string();
        assert!(err.contains("added: [\"cache.service\"]"), "{err}");
        assert!(err.contains("removed: [\"db.service\"]"), "{err}");
    }

    #[test]
    fn a_changed_agent_table_needs_a_restart() {
        let running = config(TWO);
        let new = config(&format!("[agent]\ntick = \"2s\"\n{TWO}"));
        let err = check(&running, new).expect_err("refused").to_string();
        assert!(err.starts_with("[agent] changed"), "{err}");
    }

    #[test]
    fn an_invalid_file_is_refused_with_its_position() {
        let dir = std::env::temp_dir().join(format!("selfheal-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("selfheal.toml");
        std::fs::write(
            &path,
            "[[unit]]\nname = \"web.service\"\nrestart = \"sometimes\"\n",
        )
        .expect("written");
        let err = load(&path, &config(TWO)).expect_err("refused").to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains("selfheal.toml:3:"), "{err}");
    }
}
