//! The `[policy]` and remediation tables as TOML.

use serde::Deserialize;

use super::*;
use crate::detect::LeakKind;

/// The proposed `selfheal.toml` sections, every key at its default.
const EXAMPLE: &str = r#"
[policy]
cooldown = "60s"
recovery_timeout = "5m"
stable_period = "1h"
escalate_after = 2
quarantine_duration = "5m"

[policy.budget]
max_restarts = 3
window = "1h"

[policy.backoff]
initial = "1s"
multiplier = 2.0
max = "5m"
max_attempts = 3
immediate_first = true
jitter = 0.1

[policy.breaker]
failure_threshold = 5
open_for = "60s"
success_threshold = 3

[policy.storm]
max_units = 5
calm_period = "2m"

[policy.scale]
factor = 1.5
max_factor = 3.0
step_down_after = "10m"

[defaults.remediation]
crash = ["restart", "fallback", "escalate"]
exit = ["restart", "escalate"]
stopped = ["restart", "escalate"]
hung = ["escalate"]
spinning = ["restart", "escalate"]
wedged = ["restart", "escalate"]
starved = ["scale"]
fd_leak = ["restart", "escalate"]
socket_leak = ["restart", "escalate"]
connection_leak = ["restart", "escalate"]
thread_leak = ["restart", "escalate"]
memory_leak = ["restart", "escalate"]
consecutive_failures = ["restart", "escalate"]
performance_degradation = ["restart", "escalate"]
integration_failure = ["fallback", "escalate"]
isolation = ["freeze", "network"]

[defaults.remediation.custom]
compromised = ["isolate", "escalate"]

[[unit]]
name = "web.service"

[unit.remediation]
fallback = "web-fallback.service"
cpu_quota = "50%"
memory_max = "512M"
memory_high = "400M"
tasks_max = 64

[[unit]]
name = "worker@1.service"

[unit.remediation]
max_instances = 4
starved = ["scale", "escalate"]
"#;

#[derive(Deserialize)]
struct File {
    policy: PolicyConfig,
    defaults: Defaults,
    unit: Vec<UnitTable>,
}

#[derive(Deserialize)]
struct Defaults {
    remediation: RemediationConfig,
}

#[derive(Deserialize)]
struct UnitTable {
    name: String,
    remediation: RemediationConfig,
}

fn parse_error(toml: &str) -> String {
    ::toml::from_str::<RemediationConfig>(toml)
        .unwrap_err()
        .to_string()
}

#[test]
fn the_example_states_every_default() {
    let file: File = ::toml::from_str(EXAMPLE).unwrap();
    assert_eq!(file.policy, PolicyConfig::default());
    file.policy.validate().unwrap();
    let defaults = &file.defaults.remediation;
    let bare = Remediation::resolve(
        "a.service",
        &RemediationConfig::default(),
        &RemediationConfig::default(),
    )
    .unwrap();
    let written =
        Remediation::resolve("a.service", defaults, &RemediationConfig::default()).unwrap();
    for kind in ProblemKind::BUILTIN {
        assert_eq!(written.ladder(&kind), bare.ladder(&kind), "{}", kind.name());
    }
}

#[test]
fn the_example_units_resolve() {
    let file: File = ::toml::from_str(EXAMPLE).unwrap();
    let defaults = &file.defaults.remediation;
    let web = &file.unit[0];
    let web = Remediation::resolve(&web.name, defaults, &web.remediation).unwrap();
    assert_eq!(web.fallback.as_deref(), Some("web-fallback.service"));
    assert_eq!(web.bases.cpu_quota_percent, Some(50));
    assert_eq!(web.bases.memory_max, Some(512 << 20));
    assert_eq!(web.bases.tasks_max, Some(64));
    let compromised = ProblemKind::Custom("compromised".into());
    assert_eq!(
        web.ladder(&compromised),
        [Strategy::Isolate, Strategy::Escalate]
    );
    let worker = &file.unit[1];
    let worker = Remediation::resolve(&worker.name, defaults, &worker.remediation).unwrap();
    assert_eq!(worker.max_instances, 4);
    assert_eq!(
        worker.ladder(&starved()),
        [Strategy::Scale, Strategy::Escalate]
    );
    assert_eq!(
        worker.extra_instance(3).as_deref(),
        Some("worker@4.service")
    );
}

#[test]
fn every_builtin_kind_has_a_ladder_key() {
    for kind in ProblemKind::BUILTIN {
        let toml = format!("{} = [\"escalate\"]", kind.name());
        let own: RemediationConfig =
            ::toml::from_str(&toml).unwrap_or_else(|e| panic!("{toml}: {e}"));
        let resolved =
            Remediation::resolve("a.service", &RemediationConfig::default(), &own).unwrap();
        assert_eq!(
            resolved.ladder(&kind),
            [Strategy::Escalate],
            "{}",
            kind.name()
        );
    }
}

#[test]
fn a_units_ladder_overrides_the_defaults_kind_by_kind() {
    let defaults: RemediationConfig =
        ::toml::from_str("crash = [\"escalate\"]\nfd_leak = [\"escalate\"]").unwrap();
    let own: RemediationConfig = ::toml::from_str("crash = [\"restart\"]").unwrap();
    let resolved = Remediation::resolve("a.service", &defaults, &own).unwrap();
    assert_eq!(resolved.ladder(&ProblemKind::Crash), [Strategy::Restart]);
    assert_eq!(
        resolved.ladder(&ProblemKind::Leak(LeakKind::Fd)),
        [Strategy::Escalate]
    );
    assert_eq!(
        resolved.ladder(&ProblemKind::Leak(LeakKind::Socket)),
        [Strategy::Restart, Strategy::Escalate]
    );
}

#[test]
fn an_unknown_strategy_is_rejected_with_the_known_ones() {
    let error = parse_error("crash = [\"restat\"]");
    assert!(error.contains("unknown variant `restat`"), "{error}");
    assert!(
        error.contains("`restart`") && error.contains("`escalate`"),
        "{error}"
    );
}

#[test]
fn an_unknown_kind_is_rejected_and_custom_kinds_have_their_own_table() {
    let error = parse_error("crsh = [\"restart\"]");
    assert!(error.contains("unknown field `crsh`"), "{error}");
    assert!(error.contains("`crash`"), "{error}");
}

#[test]
fn a_ladder_names_each_strategy_once_and_escalates_last() {
    let error = parse_error("crash = [\"restart\", \"restart\"]");
    assert!(error.contains("\"restart\" appears twice"), "{error}");
    let error = parse_error("crash = [\"escalate\", \"restart\"]");
    assert!(error.contains("\"escalate\" must come last"), "{error}");
}

#[test]
fn an_empty_ladder_means_watch_only() {
    let own: RemediationConfig = ::toml::from_str("crash = []").unwrap();
    let resolved = Remediation::resolve("a.service", &RemediationConfig::default(), &own).unwrap();
    assert!(resolved.ladder(&ProblemKind::Crash).is_empty());
}

#[test]
fn resolution_rejects_what_cannot_work() {
    let resolve = |name: &str, defaults: &str, own: &str| {
        let defaults: RemediationConfig = ::toml::from_str(defaults).unwrap();
        let own: RemediationConfig = ::toml::from_str(own).unwrap();
        Remediation::resolve(name, &defaults, &own).unwrap_err()
    };
    let e = resolve("a.service", "", "[custom]\ncrash = [\"restart\"]");
    assert_eq!(e.key, "custom.crash");
    let e = resolve("a.service", "fallback = \"b.service\"", "");
    assert_eq!(e.key, "fallback");
    let e = resolve("a.service", "", "fallback = \"a.service\"");
    assert!(e.message.contains("its own fallback"), "{e}");
    let e = resolve("web.service", "", "max_instances = 3");
    assert!(e.message.contains("numbered template instance"), "{e}");
    let e = resolve("a.service", "", "isolation = []");
    assert_eq!(e.key, "isolation");
}

#[test]
fn max_instances_from_the_defaults_applies_only_to_numbered_instances() {
    let defaults: RemediationConfig = ::toml::from_str("max_instances = 3").unwrap();
    let none = RemediationConfig::default();
    assert_eq!(
        Remediation::resolve("web.service", &defaults, &none)
            .unwrap()
            .max_instances,
        1
    );
    assert_eq!(
        Remediation::resolve("w@1.service", &defaults, &none)
            .unwrap()
            .max_instances,
        3
    );
}

#[test]
fn sizes_and_quotas_are_spelled_as_in_systemd() {
    let error = parse_error("memory_max = \"512MB\"");
    assert!(error.contains("a size such as"), "{error}");
    let error = parse_error("cpu_quota = \"1.5\"");
    assert!(error.contains("a CPU quota such as"), "{error}");
}

#[test]
fn unknown_policy_keys_and_bad_numbers_are_rejected() {
    let error = ::toml::from_str::<PolicyConfig>("cooldwn = \"5s\"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `cooldwn`"), "{error}");
    let error = ::toml::from_str::<PolicyConfig>("cooldown = \"5 parsecs\"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("a duration"), "{error}");
    let cases = [
        ("[backoff]\nmultiplier = 0.5", "backoff.multiplier"),
        ("[backoff]\njitter = 1.0", "backoff.jitter"),
        ("[backoff]\ninitial = \"10m\"", "backoff.initial"),
        ("[scale]\nfactor = 1.0", "scale.factor"),
        ("[storm]\nmax_units = 0", "storm.max_units"),
        ("[budget]\nwindow = \"0s\"", "budget.window"),
    ];
    for (toml, key) in cases {
        let config: PolicyConfig = ::toml::from_str(toml).unwrap();
        assert_eq!(config.validate().unwrap_err().key, key, "{toml}");
    }
}
