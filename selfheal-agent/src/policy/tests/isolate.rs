//! Isolation: freeze and network quarantine, released by time or by an operator.

use super::*;

fn compromised() -> ProblemKind {
    ProblemKind::Custom("compromised".into())
}

fn isolating_unit(extra: &str) -> Harness {
    let toml = format!("{extra}\n[custom]\ncompromised = [\"isolate\", \"escalate\"]");
    Harness::one(with_remediation("web.service", &toml))
}

#[test]
fn isolate_freezes_and_quarantines_and_releases_after_five_minutes() {
    let mut h = isolating_unit("");
    let decision = h.problem(0, compromised());
    assert_eq!(decision.actions, [Action::Freeze, Action::Quarantine]);
    h.done(&decision);
    let status = h.status(0);
    assert!(status.frozen && status.quarantined);

    // A frozen unit looks stopped to the stall detector: that is expected, not a new problem.
    let stopped = h.problem(0, ProblemKind::Stall(StallKind::Stopped));
    assert!(stopped.actions.is_empty());
    assert!(stopped.reason.contains("isolated"), "{}", stopped.reason);

    let isolated_at = h.now;
    let release = h.next_action(0, secs(400)).expect("released");
    assert_eq!(release.actions, [Action::Thaw, Action::Release]);
    assert_eq!(release.cause, "quarantine expired");
    assert!(h.now >= isolated_at + secs(300) && h.now < isolated_at + secs(301));
    h.done(&release);
    assert!(!h.status(0).frozen);
}

#[test]
fn an_operator_release_ends_the_isolation_early() {
    let mut h = isolating_unit("");
    let decision = h.problem(0, compromised());
    h.done(&decision);
    h.advance(secs(30));
    let release = h.policy.release(0, h.now);
    assert_eq!(release.actions, [Action::Thaw, Action::Release]);
    h.done(&release);
    assert!(!h.status(0).quarantined);
    assert!(
        h.next_action(0, secs(400)).is_none(),
        "nothing left to release"
    );
    let again = h.policy.release(0, h.now);
    assert!(again.actions.is_empty());
    assert!(again.reason.contains("not isolated"));
}

#[test]
fn isolation_can_be_network_only() {
    let mut h = isolating_unit("isolation = [\"network\"]");
    let decision = h.problem(0, compromised());
    assert_eq!(decision.actions, [Action::Quarantine]);
}

#[test]
fn custom_kinds_without_a_ladder_are_only_recorded() {
    let mut h = Harness::one(spec("web.service"));
    let decision = h.problem(0, ProblemKind::Custom("disk_full".into()));
    assert!(decision.actions.is_empty());
    assert!(
        decision
            .reason
            .contains("no strategy is configured for disk_full"),
        "{}",
        decision.reason
    );
}

#[test]
fn a_failed_isolation_is_not_retried_in_a_loop_but_escalated() {
    let mut h = isolating_unit("isolation = [\"network\"]");
    let decision = h.problem(0, compromised());
    assert_eq!(decision.actions, [Action::Quarantine]);
    let outcome = ActionOutcome::Failed("no cgroup".into());
    h.policy.on_outcome(0, &Action::Quarantine, &outcome, h.now);
    let next = h.next_action(0, secs(10)).expect("the ladder moves on");
    assert!(
        next.actions
            .iter()
            .all(|a| !matches!(a, Action::Quarantine | Action::Freeze)),
        "{next:?}"
    );
    assert!(
        next.actions
            .iter()
            .any(|a| matches!(a, Action::Escalate { .. })),
        "{next:?}"
    );
}
