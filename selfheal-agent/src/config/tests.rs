//! The config's behaviour as seen by a person editing `selfheal.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod errors;
mod example;
mod fleet;
mod table_errors;
mod units;

fn parse(text: &str) -> Config {
    Config::parse(text, "selfheal.toml").unwrap_or_else(|error| panic!("{error}"))
}

fn error_of(text: &str) -> String {
    match Config::parse(text, "selfheal.toml") {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn empty_file_gives_the_defaults() {
    assert_eq!(parse(""), Config::default());
    assert_eq!(parse("# nothing here\n"), Config::default());
}

#[test]
fn defaults_are_what_the_docs_promise() {
    let config = Config::default();
    assert_eq!(
        config.agent.status_socket,
        Path::new("/run/selfheal/agent.sock")
    );
    assert_eq!(config.agent.state_dir, Path::new("/var/lib/selfheal"));
    assert_eq!(
        config.agent.audit_log,
        Path::new("/var/log/selfheal/actions.jsonl")
    );
    assert_eq!(config.agent.tick, Duration::from_secs(1));
    assert!(!config.agent.quarantine_allow_loopback);
    assert_eq!(config.defaults.restart, RestartPolicy::OnFailure);
    assert_eq!(config.defaults.restart_delay, Duration::ZERO);
    assert!(config.units.is_empty());
    assert_eq!(
        Config::default_path(),
        Path::new("/etc/selfheal/selfheal.toml")
    );
}

#[test]
fn unit_overrides_beat_defaults_and_missing_keys_inherit_them() {
    let config = parse(
        r#"
[defaults]
restart = "never"
restart_delay = "5s"

[[unit]]
name = "web.service"
restart = "always"
restart_delay = "250ms"

[[unit]]
name = "db.service"
restart_delay = 3

[[unit]]
name = "crypto-agent@BTC.service"
"#,
    );
    let restarts: Vec<_> = config
        .unit_policies()
        .into_iter()
        .map(|policy| (policy.name, policy.restart, policy.restart_delay))
        .collect();
    assert_eq!(
        restarts,
        [
            (
                "web.service".to_owned(),
                RestartPolicy::Always,
                Duration::from_millis(250)
            ),
            (
                "db.service".to_owned(),
                RestartPolicy::Never,
                Duration::from_secs(3)
            ),
            (
                "crypto-agent@BTC.service".to_owned(),
                RestartPolicy::Never,
                Duration::from_secs(5)
            ),
        ]
    );
}

#[test]
fn restart_policy_decides_by_exit_cleanliness() {
    for (policy, after_clean, after_failure) in [
        (RestartPolicy::Always, true, true),
        (RestartPolicy::OnFailure, false, true),
        (RestartPolicy::Never, false, false),
    ] {
        assert_eq!(
            policy.wants_restart(true),
            after_clean,
            "{policy} after a clean exit"
        );
        assert_eq!(
            policy.wants_restart(false),
            after_failure,
            "{policy} after a failure"
        );
    }
}

#[test]
fn restart_policy_displays_as_its_config_spelling() {
    for policy in [
        RestartPolicy::Always,
        RestartPolicy::OnFailure,
        RestartPolicy::Never,
    ] {
        let config = parse(&format!("[defaults]\nrestart = \"{policy}\"\n"));
        assert_eq!(config.defaults.restart, policy);
    }
}

#[test]
fn every_kind_of_systemd_unit_name_is_accepted() {
    for name in UNIT_SUFFIXES
        .map(|suffix| format!("x{suffix}"))
        .iter()
        .chain(&["crypto-agent@BTC.service".into()])
    {
        let config = parse(&format!("[[unit]]\nname = \"{name}\"\n"));
        assert_eq!(config.units[0].name, *name);
    }
}

/// A file in the temp dir, removed even when the test fails.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("selfheal-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write temp config");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let good = TempFile::new("good.toml", "[[unit]]\nname = \"web.service\"\n");
    assert_eq!(
        Config::load(&good.0).expect("loads").units[0].name,
        "web.service"
    );

    let bad = TempFile::new("bad.toml", "[agent]\ntick = \"soon\"\n");
    let message = Config::load(&bad.0).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}:2:8: agent.tick: ", bad.0.display())),
        "{message}"
    );
}

#[test]
fn missing_file_says_it_cannot_be_read() {
    let error = Config::load(Path::new("/nonexistent/selfheal.toml")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot read /nonexistent/selfheal.toml: No such file or directory"
    );
}
