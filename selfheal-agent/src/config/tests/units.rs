//! `unit_policies()`: each unit's stall, leak and remediation tables over `[defaults]`, key by
//! key, and its probes and detectors.

use super::*;
use crate::detect::leak::LeakConfig;
use crate::detect::stall::StallConfig;
use crate::detect::{LeakKind, ProblemKind, StallKind};
use crate::policy::{Strategy, default_ladder};

const TWO_UNITS: &str = r#"
[defaults.stall]
threshold = "1m"
spinning = false

[defaults.leak]
kinds = ["fd_leak"]
horizon = "2h"

[defaults.remediation]
crash = ["restart"]
hung = ["restart", "escalate"]
isolation = ["freeze"]

[[unit]]
name = "web.service"

[unit.stall]
spinning = true
starved_for = "30s"

[unit.leak]
horizon = "0s"

[unit.remediation]
crash = ["escalate"]
fallback = "web-fallback.service"

[[unit]]
name = "db.service"
"#;

fn two_units() -> [UnitPolicy; 2] {
    let policies = parse(TWO_UNITS).unit_policies();
    policies.try_into().expect("two units")
}

#[test]
fn unit_stall_keys_override_the_defaults_and_the_rest_inherit_them() {
    let [web, db] = two_units();
    assert_eq!(
        web.stall,
        StallConfig {
            threshold: Duration::from_secs(60),
            spinning: true,
            starved_for: Duration::from_secs(30),
            ..StallConfig::default()
        }
    );
    assert_eq!(
        db.stall,
        StallConfig {
            threshold: Duration::from_secs(60),
            spinning: false,
            ..StallConfig::default()
        }
    );
}

#[test]
fn unit_leak_keys_override_the_defaults_and_the_rest_inherit_them() {
    let [web, db] = two_units();
    assert_eq!(
        web.leak,
        LeakConfig {
            kinds: vec![LeakKind::Fd],
            horizon: Duration::ZERO,
            ..LeakConfig::default()
        }
    );
    assert_eq!(
        db.leak,
        LeakConfig {
            kinds: vec![LeakKind::Fd],
            horizon: Duration::from_secs(7200),
            ..LeakConfig::default()
        }
    );
}

#[test]
fn unit_ladders_override_default_ladders_which_override_built_in_ones() {
    let [web, db] = two_units();
    let hung = ProblemKind::Stall(StallKind::Hung);
    assert_eq!(
        web.remediation.ladder(&ProblemKind::Crash),
        [Strategy::Escalate]
    );
    assert_eq!(
        db.remediation.ladder(&ProblemKind::Crash),
        [Strategy::Restart]
    );
    for unit in [&web, &db] {
        assert_eq!(
            unit.remediation.ladder(&hung),
            [Strategy::Restart, Strategy::Escalate]
        );
        assert_eq!(
            unit.remediation.ladder(&ProblemKind::Exit),
            default_ladder(&ProblemKind::Exit)
        );
        assert!(unit.remediation.freeze && !unit.remediation.network_quarantine);
    }
    assert_eq!(
        web.remediation.fallback.as_deref(),
        Some("web-fallback.service")
    );
    assert_eq!(db.remediation.fallback, None);
}

#[test]
fn units_without_tables_get_the_built_in_defaults() {
    let policies = parse("[[unit]]\nname = \"web.service\"\n").unit_policies();
    let defaults = Config::default().defaults;
    assert_eq!(policies[0].stall, defaults.stall);
    assert_eq!(policies[0].leak, defaults.leak);
    assert_eq!(
        policies[0].remediation,
        crate::policy::Remediation::default()
    );
    assert!(policies[0].probes.is_empty() && policies[0].detectors.is_empty());
}

#[test]
fn probes_and_detectors_stay_with_their_unit_in_file_order() {
    let config = parse(
        r#"
[[unit]]
name = "web.service"

[[unit.probe]]
name = "http"
kind = "http"
url = "http://127.0.0.1:8080/health"

[[unit.probe]]
name = "db"
kind = "tcp"
address = "127.0.0.1:5432"
dependency = true

[[unit]]
name = "queue.service"

[[unit.detector]]
name = "depth"
command = ["/usr/local/bin/queue-check"]
kind = "queue_backlog"
"#,
    );
    let [web, queue]: [UnitPolicy; 2] = config.unit_policies().try_into().expect("two units");
    let names = |policy: &UnitPolicy| -> Vec<String> {
        let probes = policy.probes.iter().map(|p| format!("probe {}", p.name));
        let detectors = policy
            .detectors
            .iter()
            .map(|d| format!("detector {}", d.name));
        probes.chain(detectors).collect()
    };
    assert_eq!(names(&web), ["probe http", "probe db"]);
    assert!(web.probes[1].dependency);
    assert_eq!(names(&queue), ["detector depth"]);
    assert_eq!(queue.detectors[0].kind, "queue_backlog");
}

#[test]
fn remediation_that_skipped_validation_falls_back_to_the_defaults() {
    let mut config = parse(TWO_UNITS);
    // A unit cannot be its own fallback: `parse` would have refused this.
    config.units[0].remediation.fallback = Some("web.service".into());
    let web = &config.unit_policies()[0];
    assert_eq!(web.remediation.fallback, None);
    assert_eq!(
        web.remediation.ladder(&ProblemKind::Crash),
        [Strategy::Restart]
    );
}
