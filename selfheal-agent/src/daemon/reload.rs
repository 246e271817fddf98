//! `SIGHUP` (`systemctl reload selfheal`): the config is read again and, when valid, applied
//! without losing state. What a reload can change while the agent runs: each unit's policy
//! (restart, ladders — they apply to the next incident —, stall and leak thresholds), the
//! `[policy]` table, and the set of `[[unit]]` tables: a unit or pattern added is monitored
//! (its instances adopted), one removed is let go (see `membership.rs`); a unit whose probes
//! or detectors changed has them replaced at once (a probe kept keeps its state). What needs a restart of the agent (`[agent]`, `[http]`…) is refused with the
//! reason, and so is an invalid file (with its file:line:col): the running config stays in
//! force either way.

use std::path::Path;

use crate::{
    config::{Config, ConfigError, UnitPolicy},
    policy::{PolicyConfig, UnitSpec},
};

/// A config the running agent can switch to.
#[derive(Debug)]
pub struct Reload {
    pub config: Config,
    /// One per `[[unit]]`, in file order.
    pub units: Vec<UnitPolicy>,
}

impl Reload {
    pub fn policy(&self) -> PolicyConfig {
        self.config.policy.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("[{table}] changed; it is applied on the agent's next start, not on reload")]
    NeedsRestart { table: &'static str },
}

pub fn load(path: &Path, running: &Config) -> Result<Reload, ReloadError> {
    check(running, Config::load(path)?)
}

/// Whether the running agent can switch from `running` to `new`.
pub fn check(running: &Config, new: Config) -> Result<Reload, ReloadError> {
    let fixed = [
        ("agent", running.agent != new.agent),
        ("http", running.http != new.http),
        ("webhook", running.webhook != new.webhook),
        ("alertmanager", running.alertmanager != new.alertmanager),
    ];
    if let Some((table, _)) = fixed.into_iter().find(|(_, changed)| *changed) {
        return Err(ReloadError::NeedsRestart { table });
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
        assert_eq!(spec(&reload.units[1]).restart.as_str(), "always");
    }

    #[test]
    fn added_and_removed_units_are_accepted() {
        let running = config(TWO);
        let new =
            config("[[unit]]\nname = \"web.service\"\n\n[[unit]]\nname = \"work@*.service\"\n");
        let reload = check(&running, new).expect("accepted");
        let names: Vec<&str> = reload.units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["web.service", "work@*.service"]);
    }

    #[test]
    fn a_probe_change_is_accepted_with_the_new_probes() {
        let probe =
            "\n[[unit.probe]]\nname = \"up\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/up\"\n";
        let with_probe = TWO.replacen(
            "name = \"web.service\"\n",
            &format!("name = \"web.service\"\n{probe}"),
            1,
        );
        let reload = check(&config(TWO), config(&with_probe)).expect("accepted");
        let probes: Vec<&str> = reload.units[0]
            .probes
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(probes, ["up"]);
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
