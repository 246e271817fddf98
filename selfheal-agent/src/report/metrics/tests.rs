use super::*;

const WEB: &str = "web.service";

/// The value of one series (`name{labels}` exactly as rendered), if it is there.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every family's name, with the label names of its first series, in rendered order.
fn label_names(text: &str, family: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("{family}{{")))
        .unwrap_or_else(|| panic!("no series of {family} in:\n{text}"));
    let labels = &line[family.len() + 1..line.find('}').expect("closing brace")];
    labels
        .split(',')
        .map(|pair| pair.split('=').next().expect("name").to_owned())
        .collect()
}

/// A registry where every family has at least one series.
fn busy() -> Metrics {
    let m = Metrics::new();
    m.watch_unit(WEB);
    m.problem_detected(WEB, &ProblemKind::Crash);
    m.action_finished(WEB, "restart", "done");
    m.set_consecutive_failures(WEB, 2);
    m.recovered(WEB, Duration::from_millis(300));
    m.escalated(WEB, &ProblemKind::Stall(StallKind::Hung));
    m.set_circuit(WEB, CircuitState::Open);
    m.set_quarantined(WEB, true);
    m.set_unit_healthy(WEB, false);
    m.set_stall(WEB, StallKind::Hung, Duration::from_secs(42));
    m.set_kernel_counters(&[("process_exits", 7), ("events_lost", 1)]);
    m.set_hook_attached("sched_process_exit", true);
    m.set_scheduler(WEB, 0.5, Duration::from_millis(3));
    m.set_resource(
        WEB,
        "fds",
        100.0,
        Some(1024.0),
        Some(Duration::from_secs(60)),
    );
    m.probe_finished(WEB, "http", true, Duration::from_millis(20));
    m.fleet.set_slot_held("web", true);
    m.fleet.waited("web");
    m.fleet.denied("web", "budget");
    m.fleet.set_breaker("web", 2);
    m.fleet.set_connected("prod", true);
    m
}

#[test]
fn every_family_is_rendered_with_help_and_type() {
    let text = busy().render();
    for family in FAMILIES {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no HELP:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} has no TYPE:\n{text}"
        );
    }
}

#[test]
fn families_carry_the_documented_label_sets() {
    let text = busy().render();
    let expected: [(&str, &[&str]); 12] = [
        (RESTARTS, &["unit"]),
        (CONSECUTIVE_FAILURES, &["unit"]),
        (PROBLEMS, &["kind", "unit"]),
        (ACTIONS, &["action", "outcome", "unit"]),
        ("selfheal_recovery_duration_seconds_bucket", &["unit", "le"]),
        (CIRCUIT_STATE, &["unit"]),
        (STALL_SECONDS, &["kind", "unit"]),
        (KERNEL_EVENTS, &["event"]),
        (RESOURCE, &["resource", "unit"]),
        (EXHAUSTION, &["resource", "unit"]),
        (PROBE_UP, &["probe", "unit"]),
        (BUILD_INFO, &["version"]),
    ];
    for (family, labels) in expected {
        assert_eq!(label_names(&text, family), labels, "{family}");
    }
    assert_eq!(value(&text, KERNEL_EVENTS_LOST), Some(1.0));
}

#[test]
fn the_seed_names_keep_their_selfhealing_prefix_and_the_rest_use_selfheal() {
    for family in FAMILIES {
        let seed = family == RESTARTS || family == CONSECUTIVE_FAILURES;
        assert_eq!(family.starts_with("selfhealing_"), seed, "{family}");
        assert!(seed || family.starts_with("selfheal_"), "{family}");
    }
}

#[test]
fn only_restarts_that_were_done_count_as_restarts() {
    let m = Metrics::new();
    m.action_finished(WEB, "restart", "done");
    m.action_finished(WEB, "restart", "failed");
    m.action_finished(WEB, "freeze", "done");
    let text = m.render();
    assert_eq!(
        value(&text, r#"selfhealing_restarts_total{unit="web.service"}"#),
        Some(1.0)
    );
    let failed = r#"selfheal_actions_total{action="restart",outcome="failed",unit="web.service"}"#;
    assert_eq!(value(&text, failed), Some(1.0));
}

#[test]
fn kernel_counters_follow_the_kernel_totals_without_double_counting() {
    let m = Metrics::new();
    m.set_kernel_counters(&[("process_exits", 5), ("events_lost", 2)]);
    m.set_kernel_counters(&[("process_exits", 5), ("events_lost", 2)]);
    m.set_kernel_counters(&[("process_exits", 9), ("events_lost", 3)]);
    let text = m.render();
    let exits = r#"selfheal_kernel_events_total{event="process_exits"}"#;
    assert_eq!(value(&text, exits), Some(9.0));
    assert_eq!(value(&text, KERNEL_EVENTS_LOST), Some(3.0));
    let lost_as_label = r#"selfheal_kernel_events_total{event="events_lost"}"#;
    assert_eq!(value(&text, lost_as_label), None);
}

#[test]
fn a_watched_unit_has_zero_series_before_anything_happens() {
    let m = Metrics::new();
    m.watch_unit(WEB);
    let text = m.render();
    assert_eq!(
        value(&text, r#"selfhealing_restarts_total{unit="web.service"}"#),
        Some(0.0)
    );
    for kind in ["stopped", "hung", "spinning", "wedged", "starved"] {
        let series = format!(r#"selfheal_stall_seconds{{kind="{kind}",unit="web.service"}}"#);
        assert_eq!(value(&text, &series), Some(0.0), "{series}");
    }
}

#[test]
fn a_stall_reports_its_age_until_cleared() {
    let m = Metrics::new();
    let series = r#"selfheal_stall_seconds{kind="spinning",unit="web.service"}"#;
    m.set_stall(WEB, StallKind::Spinning, Duration::from_millis(1500));
    assert_eq!(value(&m.render(), series), Some(1.5));
    m.clear_stall(WEB, StallKind::Spinning);
    assert_eq!(value(&m.render(), series), Some(0.0));
}

#[test]
fn entering_quarantine_is_counted_once_per_stay() {
    let m = Metrics::new();
    m.set_quarantined(WEB, true);
    m.set_quarantined(WEB, true);
    m.set_quarantined(WEB, false);
    m.set_quarantined(WEB, true);
    let text = m.render();
    let total = r#"selfheal_quarantines_total{unit="web.service"}"#;
    assert_eq!(value(&text, total), Some(2.0));
    assert_eq!(
        value(&text, r#"selfheal_quarantined{unit="web.service"}"#),
        Some(1.0)
    );
}

#[test]
fn circuit_states_are_numbered_closed_half_open_open() {
    let m = Metrics::new();
    let series = r#"selfheal_circuit_state{unit="web.service"}"#;
    for (state, number) in [
        (CircuitState::Closed, 0.0),
        (CircuitState::HalfOpen, 1.0),
        (CircuitState::Open, 2.0),
    ] {
        m.set_circuit(WEB, state);
        assert_eq!(value(&m.render(), series), Some(number));
    }
}

#[test]
fn an_unknown_limit_or_forecast_removes_its_series() {
    let m = Metrics::new();
    let limit = r#"selfheal_unit_resource_limit{resource="fds",unit="web.service"}"#;
    let forecast = r#"selfheal_unit_exhaustion_seconds{resource="fds",unit="web.service"}"#;
    m.set_resource(
        WEB,
        "fds",
        10.0,
        Some(1024.0),
        Some(Duration::from_secs(90)),
    );
    assert_eq!(value(&m.render(), limit), Some(1024.0));
    assert_eq!(value(&m.render(), forecast), Some(90.0));
    m.set_resource(WEB, "fds", 11.0, None, None);
    let text = m.render();
    assert_eq!(value(&text, limit), None);
    assert_eq!(value(&text, forecast), None);
    let used = r#"selfheal_unit_resource{resource="fds",unit="web.service"}"#;
    assert_eq!(value(&text, used), Some(11.0));
}

#[test]
fn recovery_durations_land_in_the_histogram() {
    let m = Metrics::new();
    m.recovered(WEB, Duration::from_millis(300));
    m.recovered(WEB, Duration::from_secs(20));
    let text = m.render();
    let bucket = |le: &str| {
        value(
            &text,
            &format!(
                r#"selfheal_recovery_duration_seconds_bucket{{unit="web.service",le="{le}"}}"#
            ),
        )
    };
    assert_eq!(bucket("0.5"), Some(1.0));
    assert_eq!(bucket("30"), Some(2.0));
    let count = r#"selfheal_recovery_duration_seconds_count{unit="web.service"}"#;
    assert_eq!(value(&text, count), Some(2.0));
}

#[test]
fn build_info_names_the_crate_version() {
    let text = Metrics::new().render();
    let series = format!(
        r#"selfheal_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&text, &series), Some(1.0));
}

#[test]
fn a_forgotten_unit_has_no_series_left_and_others_keep_theirs() {
    let m = busy();
    m.watch_unit("db.service");
    m.problem_detected("db.service", &ProblemKind::Crash);
    m.forget_unit(WEB);
    let text = m.render();
    let web_series: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(&format!("unit=\"{WEB}\"")))
        .collect();
    assert!(web_series.is_empty(), "{web_series:#?}");
    assert_eq!(
        value(
            &text,
            "selfheal_problems_total{kind=\"crash\",unit=\"db.service\"}"
        ),
        Some(1.0)
    );
}
