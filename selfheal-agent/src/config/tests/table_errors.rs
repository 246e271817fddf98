//! Errors in the feature tables (stall, remediation, probes, policy, http and alerting): each
//! points at the key, with its path from the top of the file, even when a feature module
//! found it.

use super::*;

const WEB: &str = "[[unit]]\nname = \"web.service\"\n";

#[test]
fn bad_ladder_strategy_points_at_the_strategy() {
    let text = format!("{WEB}\n[unit.remediation]\ncrash = [\"restart\", \"reboot\"]\n");
    assert_eq!(
        error_of(&text),
        r#"selfheal.toml:5:21: unit.remediation.crash: expected one of "restart", "fallback", "scale", "isolate", "escalate", found "reboot""#
    );
}

#[test]
fn ladder_with_escalate_before_the_end_is_rejected() {
    let text = "[defaults.remediation]\nhung = [\"escalate\", \"restart\"]\n";
    assert_eq!(
        error_of(text),
        r#"selfheal.toml:2:8: defaults.remediation.hung: "escalate" must come last: "restart" after it could never run"#
    );
}

#[test]
fn unknown_key_in_unit_stall_lists_the_stall_keys() {
    let text = format!("{WEB}\n[unit.stall]\ntreshold = \"1m\"\n");
    assert_eq!(
        error_of(&text),
        concat!(
            r#"selfheal.toml:5:1: unit.stall.treshold: unknown key "treshold"; expected one of "threshold", "spinning", "#,
            r#""spinning_cpu_percent", "starved_runq_p99", "starved_psi_some_avg10", "starved_for""#
        )
    );
}

#[test]
fn fallback_in_the_defaults_points_at_the_defaults() {
    let text = format!("[defaults.remediation]\nfallback = \"spare.service\"\n\n{WEB}");
    let message = error_of(&text);
    assert!(
        message.starts_with(
            "selfheal.toml:2:12: defaults.remediation.fallback: a fallback belongs to one unit"
        ),
        "{message}"
    );
}

#[test]
fn remediation_error_found_by_resolving_a_unit_points_into_that_unit() {
    let text = format!("{WEB}\n[unit.remediation]\nmax_instances = 3\n");
    assert_eq!(
        error_of(&text),
        r#"selfheal.toml:5:17: unit.remediation.max_instances: needs a numbered template instance such as "worker@1.service"; "web.service" is not one"#
    );
}

#[test]
fn probe_with_a_bad_url_points_at_the_url() {
    let text = format!(
        "{WEB}\n[[unit.probe]]\nname = \"health\"\nkind = \"http\"\nurl = \"ftp://127.0.0.1/health\"\n"
    );
    assert_eq!(
        error_of(&text),
        r#"selfheal.toml:7:7: unit.probe.url: expected a URL such as "http://127.0.0.1:8080/health", found "ftp://127.0.0.1/health": it must start with "http://""#
    );
}

#[test]
fn probe_missing_a_key_its_kind_needs_points_at_the_probe() {
    let text = format!(
        "{WEB}\n[[unit.probe]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"db:5432\"\n\n[[unit.probe]]\nname = \"health\"\nkind = \"http\"\n"
    );
    assert_eq!(
        error_of(&text),
        r#"selfheal.toml:9:1: unit.probe.url: a kind = "http" probe needs url"#
    );
}

#[test]
fn second_probe_error_points_at_the_second_probe() {
    let text = format!(
        "{WEB}\n[[unit.probe]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"db:5432\"\n\n[[unit.probe]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"db:5433\"\n"
    );
    assert_eq!(
        error_of(&text),
        r#"selfheal.toml:10:8: unit.probe.name: duplicate probe "db" in this unit; each probe needs its own name"#
    );
}

#[test]
fn detector_kind_that_is_not_snake_case_is_rejected() {
    let text = format!(
        "{WEB}\n[[unit.detector]]\nname = \"depth\"\ncommand = [\"/bin/true\"]\nkind = \"Queue Backlog\"\n"
    );
    assert_eq!(
        error_of(&text),
        r#"selfheal.toml:7:8: unit.detector.kind: expected a problem kind name in snake_case such as "queue_backlog", found "Queue Backlog""#
    );
}

#[test]
fn backoff_multiplier_of_the_wrong_type_names_both_types() {
    assert_eq!(
        error_of("[policy.backoff]\nmultiplier = \"2x\"\n"),
        "selfheal.toml:2:14: policy.backoff.multiplier: expected a float, found a string"
    );
}

#[test]
fn backoff_multiplier_below_one_is_rejected_at_the_value() {
    assert_eq!(
        error_of("[policy]\nbackoff = { multiplier = 0.5 }\n"),
        "selfheal.toml:2:26: policy.backoff.multiplier: expected a number of at least 1.0, found 0.5"
    );
}

#[test]
fn alertmanager_over_https_is_rejected() {
    let message = error_of("[alertmanager]\nurl = \"https://am:9093\"\n");
    assert!(
        message.starts_with(
            r#"selfheal.toml:2:7: alertmanager.url: "https://am:9093" uses https, which the agent does not speak"#
        ),
        "{message}"
    );
}

#[test]
fn zero_sizes_and_timeouts_that_would_disable_a_feature_are_rejected() {
    assert_eq!(
        error_of("[webhook]\nmax_body = 0\n"),
        "selfheal.toml:2:12: webhook.max_body: expected a number of bytes above zero, found 0"
    );
    assert_eq!(
        error_of("[alertmanager]\ntimeout = \"0s\"\n"),
        "selfheal.toml:2:11: alertmanager.timeout: expected a duration above zero, found 0s"
    );
}

#[test]
fn http_listen_must_be_an_address_with_a_port() {
    let message = error_of("[http]\nlisten = \"localhost\"\n");
    assert!(
        message.starts_with("selfheal.toml:2:10: http.listen: "),
        "{message}"
    );
}
