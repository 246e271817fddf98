//! Saving the policy's state and restoring it in a new process.

use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

fn wall() -> SystemTime {
    UNIX_EPOCH + secs(1_700_000_000)
}

/// Through JSON, as the agent's state file would carry it.
fn through_json(state: &PolicyState) -> PolicyState {
    let text = serde_json::to_string(state).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn web() -> UnitSpec {
    with_remediation("web.service", "fallback = \"web-fallback.service\"")
}

/// A new process: another clock origin, other unit indices, `down` after the save.
fn restart_agent(state: &PolicyState, down: Duration) -> (Policy, Instant, Vec<String>) {
    let now = Instant::now() + secs(100_000);
    let mut policy = Policy::new(
        PolicyConfig::default(),
        vec![spec("db.service"), web()],
        SEED,
    );
    let unknown = policy
        .restore(through_json(state), now, wall() + down, &|_| false)
        .unwrap();
    (policy, now, unknown)
}

/// Crashes right after each restart until the ladder falls back.
fn crash_to_fallback(h: &mut Harness) {
    loop {
        let decision = h.crash(0);
        if !decision.actions.is_empty() {
            h.done(&decision);
            return;
        }
        let restart = h.next_action(0, secs(10)).unwrap();
        h.done(&restart);
        h.advance(secs(1));
    }
}

#[test]
fn budget_failures_and_the_open_circuit_survive_with_their_timers_shifted_by_the_downtime() {
    let mut h = Harness::one(web());
    crash_to_fallback(&mut h);
    h.advance(secs(30));
    let state = h.policy.save(h.now, wall());

    let (mut policy, now, unknown) = restart_agent(&state, secs(20));
    assert!(unknown.is_empty());
    let status = policy.unit_status(1, now).unwrap();
    assert_eq!(status.restarts_left, 0);
    assert_eq!(status.consecutive_failures, 3);
    assert_eq!(status.circuit, CircuitState::Open);
    assert!(status.fallback_running);
    assert!(policy.unit_status(0, now).unwrap().circuit == CircuitState::Closed);
    let words = policy.explain(1, now, wall() + secs(20));
    assert!(words.contains("half-open in 10 s"), "{words}");

    let early = policy.tick(now + secs(9));
    assert!(early.iter().all(|d| d.cause != "breaker"), "{early:?}");
    let due = policy.tick(now + secs(10));
    assert!(
        due.iter().any(|d| d.unit == 1 && d.cause == "breaker"),
        "{due:?}"
    );
}

#[test]
fn the_budget_window_keeps_sliding_while_the_agent_is_down() {
    let mut h = Harness::one(web());
    crash_to_fallback(&mut h);
    let state = h.policy.save(h.now, wall());
    let (policy, now, _) = restart_agent(&state, secs(3600));
    assert_eq!(policy.unit_status(1, now).unwrap().restarts_left, 3);
}

#[test]
fn an_escalation_survives_and_units_no_longer_configured_are_named() {
    let mut h = Harness::new(PolicyConfig::default(), vec![web(), spec("gone.service")]);
    let decision = h.problem(0, ProblemKind::Stall(StallKind::Hung));
    h.done(&decision);
    let state = h.policy.save(h.now, wall());
    let (policy, now, unknown) = restart_agent(&state, secs(5));
    assert_eq!(unknown, ["gone.service"]);
    let status = policy.unit_status(1, now).unwrap();
    assert!(status.escalated.is_some_and(|r| r.contains("escalates")));
    assert_eq!(status.escalated_problem.as_deref(), Some("hung"));
}

#[test]
fn a_restart_in_flight_at_the_save_counts_and_is_verified_after_the_restore() {
    let mut h = Harness::one(web());
    h.crash(0);
    h.next_action(0, secs(2)).unwrap();
    let state = h.policy.save(h.now, wall());
    let (mut policy, now, _) = restart_agent(&state, secs(1));
    assert_eq!(policy.unit_status(1, now).unwrap().restarts_left, 2);
    let verified = policy.tick(now + secs(60));
    assert!(
        verified
            .iter()
            .any(|d| d.unit == 1 && d.cause == "verified"),
        "{verified:?}"
    );
}

#[test]
fn a_scheduled_restart_that_fell_due_while_down_runs_at_once() {
    let mut h = Harness::one(web());
    let decision = h.crash(0);
    assert!(decision.actions.is_empty(), "scheduled");
    let state = h.policy.save(h.now, wall());
    let (mut policy, now, _) = restart_agent(&state, secs(10));
    let due = policy.tick(now);
    assert!(
        due.iter().any(|d| d.unit == 1 && has(d, &Action::Restart)),
        "{due:?}"
    );
}

#[test]
fn a_quarantine_ends_on_time_across_a_restart() {
    let toml = "[custom]\ncompromised = [\"isolate\"]";
    let mut h = Harness::one(with_remediation("web.service", toml));
    let decision = h.problem(0, ProblemKind::Custom("compromised".into()));
    h.done(&decision);
    h.advance(secs(100));
    let state = h.policy.save(h.now, wall());
    let now = Instant::now() + secs(100_000);
    let mut policy = Policy::new(
        PolicyConfig::default(),
        vec![with_remediation("web.service", toml)],
        SEED,
    );
    policy
        .restore(through_json(&state), now, wall() + secs(50), &|_| false)
        .unwrap();
    assert!(policy.tick(now + secs(149)).is_empty());
    let released = policy.tick(now + secs(150));
    assert!(
        released.iter().any(|d| has(d, &Action::Thaw)),
        "{released:?}"
    );
}

#[test]
fn a_state_of_another_version_is_refused() {
    let h = Harness::one(web());
    let mut value = serde_json::to_value(h.policy.save(h.now, wall())).unwrap();
    value["version"] = serde_json::json!(99);
    let state: PolicyState = serde_json::from_value(value).unwrap();
    let mut policy = Policy::new(PolicyConfig::default(), vec![web()], SEED);
    let error = policy
        .restore(state, Instant::now(), wall(), &|_| false)
        .unwrap_err();
    assert!(error.to_string().contains("version 99"), "{error}");
}

#[test]
fn unknown_fields_in_the_state_are_rejected() {
    let h = Harness::one(web());
    let mut value = serde_json::to_value(h.policy.save(h.now, wall())).unwrap();
    value["units"]["web.service"]["surprise"] = serde_json::json!(1);
    assert!(serde_json::from_value::<PolicyState>(value).is_err());
}

#[test]
fn a_config_reload_keeps_each_units_state_and_index() {
    let mut h = Harness::new(PolicyConfig::default(), vec![spec("a.service"), web()]);
    let decision = h.problem(1, ProblemKind::Stall(StallKind::Hung));
    h.done(&decision);
    h.policy
        .reconfigure(PolicyConfig::default(), vec![(1, web())]);
    h.policy.remove_unit(0);
    h.policy.add_unit(2, spec("b.service"));
    assert!(h.status(1).escalated.is_some(), "web.service keeps index 1");
    assert!(h.status(2).escalated.is_none());
    assert_eq!(h.policy.index_of("web.service"), Some(1));
    assert_eq!(h.policy.index_of("a.service"), None);
    assert!(
        h.policy.unit_status(0, h.now).is_none(),
        "index 0 is retired"
    );
    // A removed unit added again gets a new index, and starts afresh.
    h.policy.add_unit(3, spec("a.service"));
    assert_eq!(h.policy.index_of("a.service"), Some(3));
}

#[test]
fn a_saved_instance_waits_for_its_adoption_and_is_kept_in_the_next_save() {
    let mut h = Harness::exactly(PolicyConfig::default(), vec![spec("work@1.service")]);
    let decision = h.crash(0);
    h.done(&decision);
    let state = h.policy.save(h.now, wall());

    // The next agent knows no unit yet: a pattern adopts the instance later.
    let now = Instant::now() + secs(100_000);
    let mut policy = Policy::new(PolicyConfig::default(), vec![], SEED);
    let unknown = policy
        .restore(through_json(&state), now, wall() + secs(5), &|name| {
            name.starts_with("work@")
        })
        .unwrap();
    assert!(unknown.is_empty());
    let kept = serde_json::to_value(policy.save(now, wall() + secs(5))).unwrap();
    // Kept in the next save, its times 5 s further in the past.
    assert_eq!(
        kept["units"]["work@1.service"]["restarts_ms"],
        serde_json::json!([-5000]),
        "{kept:#}"
    );
    policy.add_unit(0, spec("work@1.service"));
    assert_eq!(policy.unit_status(0, now).unwrap().restarts_left, 2);
}

#[test]
fn a_quarantined_instance_not_adopted_yet_is_named_for_its_pins() {
    let toml = "isolation = [\"network\"]\n[custom]\ncompromised = [\"isolate\"]";
    let mut h = Harness::one(with_remediation("work@1.service", toml));
    let decision = h.problem(0, ProblemKind::Custom("compromised".into()));
    h.done(&decision);
    let state = h.policy.save(h.now, wall());

    let now = Instant::now() + secs(100_000);
    let mut policy = Policy::new(PolicyConfig::default(), vec![], SEED);
    policy
        .restore(through_json(&state), now, wall() + secs(5), &|_| true)
        .unwrap();
    assert_eq!(policy.pending_quarantined(), ["work@1.service"]);
    policy.add_unit(0, with_remediation("work@1.service", toml));
    assert!(policy.pending_quarantined().is_empty());
    assert!(policy.unit_status(0, now).unwrap().quarantined);
}
