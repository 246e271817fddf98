//! Crash and exit: backoff, budget, cooldown, escalation, restart policies, start limits.

use super::*;

/// Plays a unit that crashes again right after each restart; returns the delay before each
/// restart and the last decision (which did not restart).
fn crash_loop(h: &mut Harness, unit: u32, context: UnitContext) -> (Vec<Duration>, Decision) {
    let mut delays = Vec::new();
    loop {
        let crashed_at = h.now;
        let decision = h.problem_with(unit, ProblemKind::Crash, false, context);
        if !decision.actions.is_empty() || !decision.reason.contains("restart attempt") {
            return (delays, decision);
        }
        let restart = h
            .next_action(unit, secs(400))
            .expect("the scheduled restart");
        assert_eq!(restart.actions, [Action::Restart], "{restart:?}");
        delays.push(h.now - crashed_at);
        h.done(&restart);
        h.advance(secs(1));
    }
}

fn assert_near(actual: Duration, nominal: f64, jitter: f64) {
    let (low, high) = (nominal * (1.0 - jitter), nominal * (1.0 + jitter) + 0.011);
    let got = actual.as_secs_f64();
    assert!(
        (low..=high).contains(&got),
        "{got} s is not {nominal} s ± {jitter}"
    );
}

#[test]
fn a_crash_loop_backs_off_1_2_4_seconds_then_escalates_and_never_restarts_again() {
    let mut h = Harness::one(spec("web.service"));
    let (delays, last) = crash_loop(&mut h, 0, UnitContext::default());

    assert_eq!(delays.len(), 3, "{delays:?}");
    for (delay, nominal) in delays.iter().zip([1.0, 2.0, 4.0]) {
        assert_near(*delay, nominal, 0.1);
    }
    assert!(
        delays.iter().any(|d| d.subsec_millis() != 0),
        "jitter moves the delays off whole seconds: {delays:?}"
    );
    let [Action::Escalate { reason }] = last.actions.as_slice() else {
        panic!("expected an escalation: {last:?}");
    };
    assert!(reason.contains("3 of 3"), "{reason}");
    h.done(&last);

    let again = h.crash(0);
    assert!(again.actions.is_empty());
    assert!(again.reason.contains("escalated"), "{}", again.reason);
    assert_eq!(restarts(&h.run(secs(7200)), 0), 0);
    assert!(h.status(0).escalated.is_some());
}

#[test]
fn an_operator_reset_clears_the_escalation_and_restarts_resume() {
    let mut h = Harness::one(spec("web.service"));
    let (_, last) = crash_loop(&mut h, 0, UnitContext::default());
    h.done(&last);
    let reset = h.policy.reset(0);
    assert!(
        reset.reason.contains("escalation cleared"),
        "{}",
        reset.reason
    );
    let status = h.status(0);
    assert_eq!(status.escalated, None);
    assert_eq!(status.restarts_left, 3);
    assert_eq!(status.circuit, CircuitState::Closed);
    let decision = h.crash(0);
    assert!(
        decision.reason.contains("restart attempt 1 of 3"),
        "{}",
        decision.reason
    );
    assert!(h.next_action(0, secs(2)).is_some());
}

#[test]
fn the_budget_is_back_after_the_stable_period_and_the_backoff_starts_over() {
    let mut h = Harness::one(spec("web.service"));
    // Three crashes ten minutes apart, each healed by one restart.
    for _ in 0..3 {
        h.crash(0);
        let restart = h.next_action(0, secs(10)).expect("restart");
        h.done(&restart);
        h.advance(secs(600));
        let verified = h.tick();
        assert!(
            verified.iter().any(|d| d.cause == "verified"),
            "{verified:?}"
        );
    }
    assert_eq!(h.status(0).restarts_left, 0);
    assert_eq!(h.status(0).consecutive_failures, 0);

    let forgotten = h.run(secs(3600));
    assert!(
        forgotten.iter().any(|d| d.cause == "stable"),
        "{forgotten:?}"
    );
    assert_eq!(h.status(0).restarts_left, 3);

    let crashed_at = h.now;
    h.crash(0);
    h.next_action(0, secs(10)).expect("a restart again");
    assert_near(h.now - crashed_at, 1.0, 0.1);
}

#[test]
fn a_crash_within_the_cooldown_is_the_last_recovery_failing() {
    let mut h = Harness::one(spec("web.service"));
    h.crash(0);
    let restart = h.next_action(0, secs(2)).unwrap();
    h.done(&restart);
    h.advance(secs(30));
    let decision = h.crash(0);
    assert!(
        decision.reason.contains("the last recovery failed"),
        "{}",
        decision.reason
    );
    assert!(
        decision.reason.contains("restart attempt 2 of 3"),
        "{}",
        decision.reason
    );
    assert_eq!(h.status(0).consecutive_failures, 1);
}

#[test]
fn a_crash_after_the_cooldown_is_a_new_incident_with_a_longer_backoff() {
    let mut h = Harness::one(spec("web.service"));
    h.crash(0);
    let restart = h.next_action(0, secs(2)).unwrap();
    h.done(&restart);
    h.advance(secs(61));
    h.tick();
    assert_eq!(h.status(0).incident, None);
    let crashed_at = h.now;
    let decision = h.crash(0);
    assert!(
        decision.reason.contains("restart attempt 1 of 3"),
        "{}",
        decision.reason
    );
    assert_eq!(h.status(0).consecutive_failures, 0);
    h.next_action(0, secs(5)).unwrap();
    assert_near(h.now - crashed_at, 2.0, 0.1);
}

#[test]
fn a_dry_run_counts_neither_success_nor_failure_nor_budget() {
    let mut h = Harness::one(spec("web.service"));
    for _ in 0..5 {
        let decision = h.crash(0);
        assert!(
            decision.reason.contains("restart attempt 1 of 3"),
            "{}",
            decision.reason
        );
        let restart = h.next_action(0, secs(2)).unwrap();
        h.report(&restart, ActionOutcome::NotExecuted("dry run".into()));
        h.advance(secs(5));
    }
    let status = h.status(0);
    assert_eq!(status.restarts_left, 3);
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.escalated, None);
    assert!(
        status
            .last_action
            .unwrap()
            .result
            .contains("not executed: dry run")
    );
}

#[test]
fn a_failed_restart_counts_as_a_failure_and_the_next_attempt_follows() {
    let mut h = Harness::one(spec("web.service"));
    h.crash(0);
    let restart = h.next_action(0, secs(2)).unwrap();
    h.report(&restart, ActionOutcome::Failed("start-limit-hit".into()));
    assert_eq!(h.status(0).consecutive_failures, 1);
    assert_eq!(h.status(0).restarts_left, 2);
    let next = h.next_action(0, secs(3)).expect("attempt 2");
    assert!(next.reason.contains("attempt 2 of 3"), "{}", next.reason);
}

#[test]
fn an_unkillable_task_escalates_at_once_and_is_never_restarted() {
    for kind in [ProblemKind::Crash, ProblemKind::Stall(StallKind::Spinning)] {
        let mut h = Harness::one(spec("db.service"));
        let decision = h.problem_with(0, kind.clone(), true, UnitContext::default());
        let [Action::Escalate { reason }] = decision.actions.as_slice() else {
            panic!("{kind:?}: {decision:?}");
        };
        assert!(reason.contains("survives SIGKILL"), "{reason}");
        h.done(&decision);
        assert!(h.problem(0, kind).actions.is_empty());
        assert_eq!(restarts(&h.run(secs(600)), 0), 0);
    }
}

#[test]
fn hung_escalates_by_default() {
    let mut h = Harness::one(spec("db.service"));
    let decision = h.problem(0, ProblemKind::Stall(StallKind::Hung));
    assert!(
        matches!(decision.actions.as_slice(), [Action::Escalate { .. }]),
        "{decision:?}"
    );
}

#[test]
fn a_restart_waits_for_systemds_start_limit_window() {
    let config = PolicyConfig {
        budget: BudgetConfig {
            max_restarts: 10,
            ..BudgetConfig::default()
        },
        ..PolicyConfig::default()
    };
    let mut h = Harness::new(config, vec![spec("web.service")]);
    let limit = UnitContext {
        stopping: false,
        start_limit: StartLimit {
            burst: 2,
            interval: secs(30),
        },
    };
    let first_crash = h.now;
    let mut delays = Vec::new();
    for _ in 0..2 {
        let at = h.now;
        h.problem_with(0, ProblemKind::Crash, false, limit);
        let restart = h.next_action(0, secs(10)).unwrap();
        delays.push(h.now - at);
        h.done(&restart);
        h.advance(secs(1));
    }
    let first_restart = first_crash + delays[0];
    let decision = h.problem_with(0, ProblemKind::Crash, false, limit);
    assert!(
        decision.reason.contains("start limit"),
        "{}",
        decision.reason
    );
    let restart = h.next_action(0, secs(60)).unwrap();
    assert!(has(&restart, &Action::Restart));
    assert!(
        h.now >= first_restart + secs(30),
        "restarted before systemd would allow it"
    );
    assert!(h.now <= first_restart + secs(31));
}

#[test]
fn a_start_limit_beyond_the_longest_backoff_escalates_and_says_why() {
    let mut h = Harness::one(spec("web.service"));
    let limit = UnitContext {
        stopping: false,
        start_limit: StartLimit {
            burst: 1,
            interval: secs(600),
        },
    };
    h.problem_with(0, ProblemKind::Crash, false, limit);
    let restart = h.next_action(0, secs(2)).unwrap();
    h.done(&restart);
    h.advance(secs(5));
    let decision = h.problem_with(0, ProblemKind::Crash, false, limit);
    let [Action::Escalate { reason }] = decision.actions.as_slice() else {
        panic!("{decision:?}");
    };
    assert!(
        reason.contains("start limit (1 starts per 10 min)"),
        "{reason}"
    );
}

#[test]
fn restart_never_only_watches_crashes_and_exits() {
    let mut h = Harness::one(UnitSpec {
        restart: RestartPolicy::Never,
        ..spec("web.service")
    });
    for kind in [ProblemKind::Crash, ProblemKind::Exit] {
        let decision = h.problem(0, kind);
        assert!(decision.actions.is_empty());
        assert!(decision.reason.contains("never"), "{}", decision.reason);
    }
    assert!(h.run(secs(60)).iter().all(|d| d.actions.is_empty()));
}

#[test]
fn restart_on_failure_leaves_a_clean_exit_alone() {
    let mut h = Harness::one(spec("web.service"));
    let decision = h.problem(0, ProblemKind::Exit);
    assert!(decision.actions.is_empty());
    assert!(decision.reason.contains("clean"), "{}", decision.reason);
    assert!(h.next_action(0, secs(5)).is_none());
}

#[test]
fn restart_always_restarts_a_clean_exit() {
    let mut h = Harness::one(UnitSpec {
        restart: RestartPolicy::Always,
        ..spec("web.service")
    });
    h.problem(0, ProblemKind::Exit);
    assert!(has(&h.next_action(0, secs(2)).unwrap(), &Action::Restart));
}

#[test]
fn the_units_restart_delay_is_the_least_wait() {
    let mut h = Harness::one(UnitSpec {
        restart_delay: secs(5),
        ..spec("web.service")
    });
    h.crash(0);
    h.next_action(0, secs(10)).unwrap();
    assert!(
        h.elapsed() >= secs(5) && h.elapsed() < secs(6),
        "{:?}",
        h.elapsed()
    );
}

#[test]
fn a_unit_being_stopped_is_left_alone_and_its_scheduled_restart_cancelled() {
    let mut h = Harness::one(spec("web.service"));
    h.crash(0);
    let stopping = UnitContext {
        stopping: true,
        ..UnitContext::default()
    };
    let decision = h.problem_with(0, ProblemKind::Exit, false, stopping);
    assert!(decision.actions.is_empty());
    assert!(
        decision.reason.contains("being stopped"),
        "{}",
        decision.reason
    );
    assert!(decision.reason.contains("cancelled"), "{}", decision.reason);
    assert!(h.next_action(0, secs(10)).is_none());
}

#[test]
fn one_batch_of_actions_at_a_time() {
    let mut h = Harness::one(spec("web.service"));
    h.crash(0);
    let restart = h.next_action(0, secs(2)).unwrap();
    // Our own restart's exit, while the restart is in flight.
    let decision = h.crash(0);
    assert!(
        decision.reason.contains("in progress"),
        "{}",
        decision.reason
    );
    h.done(&restart);
    assert_eq!(h.status(0).consecutive_failures, 0);
}

#[test]
fn by_default_the_first_restart_of_an_incident_is_immediate_and_the_next_back_off() {
    let mut h = Harness::exactly(PolicyConfig::default(), vec![spec("web.service")]);
    let first = h.crash(0);
    assert_eq!(first.actions, [Action::Restart], "{first:?}");
    assert!(
        first.reason.contains("restart attempt 1 of 3 now"),
        "{}",
        first.reason
    );
    h.done(&first);
    h.advance(secs(1));
    let crashed_at = h.now;
    let second = h.crash(0);
    assert!(second.actions.is_empty(), "{second:?}");
    assert!(
        second.reason.contains("restart attempt 2 of 3 in"),
        "{}",
        second.reason
    );
    h.next_action(0, secs(3))
        .expect("the second restart after its backoff");
    assert_near(h.now - crashed_at, 1.0, 0.1);
}

#[test]
fn a_restart_held_by_the_fleet_comes_back_after_a_growing_backoff() {
    let held = || {
        ActionOutcome::NotExecuted(format!(
            "{}: all 1 slot(s) of group web are held",
            crate::policy::HELD_BY_FLEET
        ))
    };
    let mut h = Harness::one(spec("web.service"));
    h.crash(0);
    let mut restart = h.next_action(0, secs(2)).unwrap();
    let mut waits = Vec::new();
    for _ in 0..3 {
        h.report(&restart, held());
        let held_at = h.now;
        restart = h
            .next_action(0, secs(60))
            .expect("a held restart is tried again");
        assert_eq!(restart.actions, [Action::Restart]);
        assert!(
            restart.reason.contains("held by the fleet"),
            "{}",
            restart.reason
        );
        waits.push(h.now - held_at);
    }
    assert!(
        waits[0] < waits[1] && waits[1] < waits[2],
        "the backoff grows: {waits:?}"
    );
    let status = h.status(0);
    assert_eq!(status.restarts_left, 3, "a held restart uses no budget");
    assert_eq!(status.consecutive_failures, 0);
    h.done(&restart);
    assert_eq!(h.status(0).restarts_left, 2);
}

#[test]
fn a_restart_skipped_for_another_reason_is_not_tried_again() {
    let mut h = Harness::one(spec("web.service"));
    h.crash(0);
    let restart = h.next_action(0, secs(2)).unwrap();
    h.report(&restart, ActionOutcome::NotExecuted("dry run".into()));
    assert!(h.next_action(0, secs(60)).is_none());
}

/// A tick looks only at the units whose state may change with time: units at rest cost
/// nothing, a crashed one is looked at until its restart is verified and the budget's window
/// has passed, then rests again, and its restart comes on time meanwhile.
#[test]
fn a_tick_looks_only_at_units_not_at_rest() {
    let mut h = Harness::exactly(
        PolicyConfig::default(),
        vec![spec("a.service"), spec("b.service"), spec("c.service")],
    );
    h.tick();
    assert!(h.policy.awake.is_empty(), "three units at rest");
    assert_eq!(h.policy.next_due(), None);

    let restart = h.crash(1);
    assert_eq!(restart.actions, [Action::Restart], "{restart:?}");
    assert_eq!(h.policy.awake.iter().copied().collect::<Vec<_>>(), [1]);
    h.done(&restart);
    assert!(h.policy.next_due().is_some(), "verification is timed");
    h.run(secs(120));
    assert!(
        h.policy.awake.contains(&1),
        "its restart is in the budget's window"
    );
    h.run(secs(3600));
    assert!(h.policy.awake.is_empty(), "{:?}", h.status(1));
    assert_eq!(h.policy.next_due(), None);
    assert_eq!(h.status(1).restarts_left, 3);
}
