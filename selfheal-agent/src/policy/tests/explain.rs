//! Plain-word explanations and the status for `status`, metrics and health.

use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

fn wall() -> SystemTime {
    UNIX_EPOCH + secs(12 * 3600 + 60)
}

#[test]
fn an_open_circuit_says_since_when_when_it_half_opens_the_fallback_and_the_budget() {
    let mut h = Harness::one(with_remediation(
        "web.service",
        "fallback = \"web-fallback.service\"",
    ));
    loop {
        let decision = h.crash(0);
        if !decision.actions.is_empty() {
            h.done(&decision);
            break;
        }
        let restart = h.next_action(0, secs(10)).unwrap();
        h.done(&restart);
        h.advance(secs(1));
    }
    h.advance(secs(37));
    let words = h.policy.explain(0, h.now, wall());
    for part in [
        "web.service: ",
        "circuit open since 12:00:23 UTC",
        "half-open in 23 s",
        "fallback web-fallback.service running",
        "0 of 3 restarts left this hour",
        "3 failed recoveries in a row",
    ] {
        assert!(words.contains(part), "{part:?} missing from {words:?}");
    }
}

#[test]
fn an_escalated_unit_says_when_why_and_what_ends_it() {
    let mut h = Harness::one(spec("db.service"));
    let decision = h.problem(0, ProblemKind::Stall(StallKind::Hung));
    h.done(&decision);
    h.advance(secs(120));
    let words = h.policy.explain(0, h.now, wall());
    assert!(
        words.contains("escalated at 11:59:00 UTC (2 min ago): the ladder escalates"),
        "{words}"
    );
    assert!(words.contains("until an operator resets it"), "{words}");
}

#[test]
fn a_scheduled_restart_says_which_attempt_and_when() {
    let mut h = Harness::one(spec("web.service"));
    h.crash(0);
    let words = h.policy.explain(0, h.now, wall());
    assert!(
        words.contains("crash since 12:01:00 UTC: restart attempt 1 of 3"),
        "{words}"
    );
    let status = h.status(0);
    assert_eq!(status.next_action.as_deref(), Some("restart"));
    assert!(
        status
            .next_action_in_seconds
            .is_some_and(|s| s > 0.8 && s < 1.2)
    );
}

#[test]
fn a_quiet_unit_says_so() {
    let h = Harness::one(spec("web.service"));
    let words = h.policy.explain(0, h.now, wall());
    assert_eq!(
        words,
        "web.service: circuit closed; 3 of 3 restarts left this hour; no problem seen"
    );
    assert!(
        h.policy
            .explain(9, h.now, wall())
            .contains("not configured")
    );
}

#[test]
fn the_status_serializes_for_the_status_socket() {
    let h = Harness::one(spec("web.service"));
    let json = serde_json::to_value(h.status(0)).unwrap();
    assert_eq!(json["circuit"], "closed");
    assert_eq!(json["restarts_left"], 3);
}

#[test]
fn next_due_points_at_the_scheduled_restart() {
    let mut h = Harness::one(spec("web.service"));
    assert_eq!(h.policy.next_due(), None);
    h.crash(0);
    let due = h.policy.next_due().expect("a restart is due");
    assert!(due > h.now && due < h.now + secs(2));
    assert!(h.policy.tick(due).iter().any(|d| has(d, &Action::Restart)));
}

#[test]
fn the_status_lists_the_actions_in_flight_until_their_outcome() {
    let mut h = Harness::one(spec("web.service"));
    h.crash(0);
    assert!(
        h.status(0).in_flight.is_empty(),
        "scheduled, not handed out"
    );
    let restart = h.next_action(0, secs(10)).unwrap();
    assert_eq!(h.status(0).in_flight, vec!["restart".to_owned()]);
    h.done(&restart);
    assert!(h.status(0).in_flight.is_empty());
}

#[test]
fn a_unit_is_settled_until_a_problem_and_again_once_its_restart_leaves_the_budget_window() {
    let mut h = Harness::one(spec("web.service"));
    assert!(h.policy.settled(0, h.now), "nothing happened yet");
    let first = h.crash(0);
    assert!(
        !h.policy.settled(0, h.now),
        "an incident is open: {first:?}"
    );
    let restart = h.next_action(0, secs(10)).expect("the scheduled restart");
    assert!(!h.policy.settled(0, h.now), "a restart is in flight");
    h.done(&restart);
    h.run(secs(120));
    let status = h.status(0);
    assert!(status.incident.is_none(), "{status:?}");
    assert!(
        !h.policy.settled(0, h.now),
        "the restart still counts in the budget's window: {status:?}"
    );
    // The stable period forgets the failure and the backoff; the hour's window the restart.
    h.run(secs(3700));
    assert!(h.policy.settled(0, h.now), "{:?}", h.status(0));
    let words = h.policy.explain(0, h.now, wall());
    assert!(
        words.contains("last action: restart at ") && !words.contains(" ago"),
        "a settled unit's words do not age: {words}"
    );
    assert!(words.contains("last problem: crash at "), "{words}");
}
