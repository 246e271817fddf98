//! Verification: every healing action must be seen to work.

use super::*;

fn spinning() -> ProblemKind {
    ProblemKind::Stall(StallKind::Spinning)
}

#[test]
fn a_condition_still_present_after_the_recovery_timeout_is_a_failed_recovery() {
    let mut h = Harness::one(spec("web.service"));
    h.problem(0, spinning());
    let restart = h.next_action(0, secs(2)).unwrap();
    h.done(&restart);
    let done_at = h.now;
    assert!(h.run(secs(299)).iter().all(|d| d.actions.is_empty()));
    assert_eq!(h.status(0).consecutive_failures, 0);
    let failed = h.run(secs(2));
    let verdict = failed
        .iter()
        .find(|d| d.cause == "spinning")
        .expect("verdict");
    assert!(
        verdict.reason.contains("did not clear within 5 min"),
        "{}",
        verdict.reason
    );
    assert!(
        verdict.reason.contains("restart attempt 2 of 3"),
        "{}",
        verdict.reason
    );
    assert!(h.now >= done_at + secs(300));
    assert_eq!(h.status(0).consecutive_failures, 1);
}

#[test]
fn a_cleared_problem_verifies_the_recovery_once_the_cooldown_passes() {
    let mut h = Harness::one(spec("web.service"));
    h.problem(0, spinning());
    let restart = h.next_action(0, secs(2)).unwrap();
    h.done(&restart);
    h.advance(secs(10));
    h.cleared(0, spinning());
    assert_eq!(
        h.status(0).incident.as_deref(),
        Some("spinning"),
        "settling"
    );
    let verified = h.run(secs(50));
    assert!(
        verified.iter().any(|d| d.cause == "verified"),
        "{verified:?}"
    );
    let status = h.status(0);
    assert_eq!(status.incident, None);
    assert_eq!(status.consecutive_failures, 0);
}

#[test]
fn the_same_condition_reported_again_while_verifying_is_not_a_new_failure() {
    let mut h = Harness::one(spec("web.service"));
    h.problem(0, spinning());
    let restart = h.next_action(0, secs(2)).unwrap();
    h.done(&restart);
    h.advance(secs(20));
    let decision = h.problem(0, spinning());
    assert!(decision.actions.is_empty());
    assert!(decision.reason.contains("verifying"), "{}", decision.reason);
    assert_eq!(h.status(0).consecutive_failures, 0);
}

#[test]
fn a_problem_that_clears_before_its_restart_is_due_cancels_it() {
    let mut h = Harness::one(spec("web.service"));
    h.problem(0, ProblemKind::ConsecutiveFailures);
    h.cleared(0, ProblemKind::ConsecutiveFailures);
    assert!(h.next_action(0, secs(5)).is_none());
    assert_eq!(h.status(0).restarts_left, 3);
}

#[test]
fn a_problem_cleared_while_the_restart_runs_is_verified_by_the_cooldown() {
    let mut h = Harness::one(spec("web.service"));
    h.problem(0, ProblemKind::PerformanceDegradation);
    let restart = h.next_action(0, secs(2)).unwrap();
    h.cleared(0, ProblemKind::PerformanceDegradation);
    h.done(&restart);
    let verified = h.run(secs(61));
    assert!(
        verified.iter().any(|d| d.cause == "verified"),
        "{verified:?}"
    );
}

#[test]
fn leaks_and_failing_probes_get_a_restart() {
    use crate::detect::LeakKind;
    for kind in [
        ProblemKind::Leak(LeakKind::Memory),
        ProblemKind::Leak(LeakKind::Fd),
        ProblemKind::ConsecutiveFailures,
        ProblemKind::PerformanceDegradation,
        ProblemKind::Stall(StallKind::Wedged),
        ProblemKind::Stall(StallKind::Stopped),
    ] {
        let mut h = Harness::one(spec("web.service"));
        h.problem(0, kind.clone());
        let decision = h.next_action(0, secs(2));
        assert!(
            decision.is_some_and(|d| has(&d, &Action::Restart)),
            "{kind:?}"
        );
    }
}
