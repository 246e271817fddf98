//! The circuit breaker and the fallback.

use super::*;

const FALLBACK: &str = "web-fallback.service";

fn web_with_fallback() -> UnitSpec {
    with_remediation("web.service", &format!("fallback = \"{FALLBACK}\""))
}

/// Budgets loose enough that only the breaker stops the restarts.
fn patient() -> PolicyConfig {
    PolicyConfig {
        escalate_after: 10,
        budget: BudgetConfig {
            max_restarts: 20,
            ..BudgetConfig::default()
        },
        backoff: BackoffConfig {
            max_attempts: 10,
            ..BackoffConfig::default()
        },
        ..PolicyConfig::default()
    }
}

/// Crashes right after every restart until a decision acts without restarting.
fn crash_until_not_restarted(h: &mut Harness) -> Decision {
    loop {
        let decision = h.crash(0);
        if !decision.actions.is_empty() || !decision.reason.contains("restart attempt") {
            return decision;
        }
        let restart = h.next_action(0, secs(400)).expect("restart");
        h.done(&restart);
        h.advance(secs(1));
    }
}

#[test]
fn five_failures_open_the_circuit_and_start_the_fallback_then_a_trial_and_three_successes_close_it()
{
    let mut h = Harness::new(patient(), vec![web_with_fallback()]);
    let fallback = crash_until_not_restarted(&mut h);
    assert_eq!(fallback.actions, [Action::StartFallback(FALLBACK.into())]);
    assert!(
        fallback.reason.contains("the circuit is open"),
        "{}",
        fallback.reason
    );
    assert_eq!(h.status(0).consecutive_failures, 5);
    assert_eq!(h.status(0).circuit, CircuitState::Open);
    h.done(&fallback);
    assert!(h.status(0).fallback_running);
    let opened = h.now;

    let trial = h.next_action(0, secs(120)).expect("the half-open trial");
    assert_eq!(trial.actions, [Action::Restart]);
    assert_eq!(trial.cause, "breaker");
    assert!(
        h.now >= opened + secs(60) && h.now < opened + secs(61),
        "trial after 60 s"
    );
    assert_eq!(h.status(0).circuit, CircuitState::HalfOpen);
    h.done(&trial);

    let stop = h.next_action(0, secs(400)).expect("the fallback stops");
    assert_eq!(stop.actions, [Action::StopFallback(FALLBACK.into())]);
    // The trial's verification (60 s) and two more healthy minutes: three successes.
    let closed_after = h.now - opened;
    assert!(
        closed_after >= secs(240) && closed_after < secs(242),
        "{closed_after:?}"
    );
    h.done(&stop);
    let status = h.status(0);
    assert_eq!(status.circuit, CircuitState::Closed);
    assert!(!status.fallback_running);
    assert_eq!(status.consecutive_failures, 0);
}

#[test]
fn a_failed_trial_opens_the_circuit_again_and_the_next_trial_follows() {
    let mut h = Harness::new(patient(), vec![web_with_fallback()]);
    let fallback = crash_until_not_restarted(&mut h);
    h.done(&fallback);
    let trial = h.next_action(0, secs(120)).unwrap();
    h.done(&trial);
    h.advance(secs(5));
    let decision = h.crash(0);
    assert!(decision.actions.is_empty(), "{decision:?}");
    assert_eq!(h.status(0).circuit, CircuitState::Open);
    assert!(h.status(0).fallback_running);
    let reopened = h.now;
    let next = h.next_action(0, secs(120)).unwrap();
    assert_eq!(next.actions, [Action::Restart]);
    assert!(h.now >= reopened + secs(60));
}

#[test]
fn the_default_crash_ladder_falls_back_after_three_failed_restarts() {
    let mut h = Harness::one(web_with_fallback());
    let decision = crash_until_not_restarted(&mut h);
    assert_eq!(decision.actions, [Action::StartFallback(FALLBACK.into())]);
    assert!(decision.reason.contains("3 of 3"), "{}", decision.reason);
    assert_eq!(h.status(0).escalated, None);
}

#[test]
fn the_trial_waits_for_the_restart_budget() {
    let mut h = Harness::one(web_with_fallback());
    let fallback = crash_until_not_restarted(&mut h);
    h.done(&fallback);
    let half_open = h.run(secs(61));
    let decision = half_open
        .iter()
        .find(|d| d.cause == "breaker")
        .expect("half-open");
    assert!(decision.actions.is_empty());
    assert!(
        decision.reason.contains("when the restart budget has room"),
        "{}",
        decision.reason
    );
    assert_eq!(restarts(&h.run(secs(3000)), 0), 0);
    let trial = h.next_action(0, secs(3600)).unwrap();
    assert_eq!(trial.actions, [Action::Restart]);
}

#[test]
fn an_integration_failure_falls_back_without_restarting_and_the_fallback_stops_once_healthy() {
    let mut h = Harness::one(web_with_fallback());
    let decision = h.problem(0, ProblemKind::IntegrationFailure);
    assert_eq!(decision.actions, [Action::StartFallback(FALLBACK.into())]);
    h.done(&decision);
    h.advance(secs(30));
    h.cleared(0, ProblemKind::IntegrationFailure);
    let mut all = h.run(secs(600));
    assert_eq!(
        restarts(&all, 0),
        0,
        "a healthy unit is not restarted for its dependency"
    );
    let stop = all
        .iter()
        .position(|d| has(d, &Action::StopFallback(FALLBACK.into())))
        .expect("fallback stopped");
    let stop = all.swap_remove(stop);
    h.done(&stop);
    assert!(!h.status(0).fallback_running);
    assert_eq!(h.status(0).circuit, CircuitState::Closed);
}

#[test]
fn an_integration_failure_without_a_fallback_escalates() {
    let mut h = Harness::one(spec("web.service"));
    let decision = h.problem(0, ProblemKind::IntegrationFailure);
    let [Action::Escalate { reason }] = decision.actions.as_slice() else {
        panic!("{decision:?}");
    };
    assert!(reason.contains("no fallback unit declared"), "{reason}");
    // The policy remembers what was escalated: status and /health name it.
    let status = h.status(0);
    assert_eq!(status.escalated.as_deref(), Some(reason.as_str()));
    assert_eq!(
        status.escalated_problem.as_deref(),
        Some("integration_failure")
    );
}

#[test]
fn a_fallback_that_fails_to_start_escalates() {
    let mut h = Harness::one(web_with_fallback());
    let decision = h.problem(0, ProblemKind::IntegrationFailure);
    h.report(&decision, ActionOutcome::Failed("unit not found".into()));
    let next = h.next_action(0, secs(2)).expect("escalation");
    let [Action::Escalate { reason }] = next.actions.as_slice() else {
        panic!("{next:?}");
    };
    assert!(
        reason.contains("failed to start (unit not found)"),
        "{reason}"
    );
}

#[test]
fn after_a_reset_the_fallback_runs_until_the_unit_is_verified_healthy() {
    let mut h = Harness::one(web_with_fallback());
    let fallback = crash_until_not_restarted(&mut h);
    h.done(&fallback);
    let reset = h.policy.reset(0);
    assert!(reset.reason.contains("keeps running"), "{}", reset.reason);
    assert!(h.run(secs(600)).iter().all(|d| d.actions.is_empty()));
    assert!(h.status(0).fallback_running);

    h.crash(0);
    let restart = h.next_action(0, secs(10)).unwrap();
    h.done(&restart);
    let stop = h
        .next_action(0, secs(120))
        .expect("stop after the verified restart");
    assert_eq!(stop.actions, [Action::StopFallback(FALLBACK.into())]);
}
