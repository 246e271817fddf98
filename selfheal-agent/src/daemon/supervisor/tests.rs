//! Scenario tests: the supervisor driven with every kind of input and an injected clock.

use std::time::{Duration, Instant, SystemTime};

use super::{command::CommandError, *};
use crate::{
    detect::{StallKind, probe::ProbeRules},
    policy::tests::spec,
    policy::{Action, PolicyConfig, UnitContext},
    sensors::probes::{CustomFinding, ProbeResult},
    units::ProcessRole,
};

const WEB: u32 = 0;
const DB: u32 = 1;

struct Harness {
    sup: Supervisor,
    now: Instant,
}

impl Harness {
    fn new(dry_run: bool) -> Self {
        let names = ["web.service".to_owned(), "db.service".to_owned()];
        let policy = Policy::new(
            PolicyConfig::default(),
            names.iter().map(|n| spec(n)).collect(),
            7,
        );
        let mut sup = Supervisor::new(policy, &names, dry_run);
        let now = Instant::now();
        let fx = sup.handle(
            Input::Probes {
                unit: WEB,
                probes: vec![(
                    "http".to_owned(),
                    ProbeRules {
                        consecutive_failures: 3,
                        grace: Duration::from_secs(5),
                        ..ProbeRules::default()
                    },
                )],
                detectors: Vec::new(),
            },
            now,
        );
        assert_eq!(fx, Effects::default());
        Self { sup, now }
    }

    fn feed(&mut self, input: Input) -> Effects {
        self.sup.handle(input, self.now)
    }

    fn advance(&mut self, secs: u64) -> Effects {
        self.now += Duration::from_secs(secs);
        self.feed(Input::Time)
    }

    /// Feeds `input`, then lets time pass until the policy hands out an action (a backoff may
    /// delay the first restart); returns everything that came out.
    fn until_work(&mut self, input: Input) -> Effects {
        let mut all = self.feed(input);
        for _ in 0..30 {
            if !all.run.is_empty() {
                break;
            }
            let fx = self.advance(1);
            merge(&mut all, fx);
        }
        all
    }

    fn finish(&mut self, work: &Work, outcome: ActionOutcome) -> Effects {
        self.feed(Input::Outcome(Finished::now(
            work.unit,
            work.action.clone(),
            outcome,
        )))
    }
}

fn merge(all: &mut Effects, fx: Effects) {
    all.run.extend(fx.run);
    all.history.extend(fx.history);
    all.audit.extend(fx.audit);
    all.metrics.extend(fx.metrics);
    all.save |= fx.save;
}

fn exit(unit: u32, role: ProcessRole, status: u32) -> Input {
    let facts = ExitFacts {
        pid: 42,
        role,
        status: Some(status),
        signal: None,
        oom_killed: false,
    };
    let record = Event::Exit {
        pid: 42,
        comm: "web".into(),
        role,
        status: Some(status),
        signal: None,
        signal_name: None,
        oom_killed: false,
        core_dumped: false,
        kernel_to_agent_us: Some(10),
    };
    Input::Exit {
        unit,
        facts,
        record,
        during_action: false,
    }
}

fn notes(fx: &Effects) -> Vec<&str> {
    fx.history
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Unit { message } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

fn decisions(fx: &Effects) -> Vec<(&str, &str)> {
    fx.audit
        .iter()
        .filter_map(|a| match a {
            AuditNote::Decision {
                problem, actions, ..
            } => Some((problem.as_str(), actions.as_str())),
            AuditNote::Action { .. } => None,
        })
        .collect()
}

#[test]
fn a_crash_of_the_main_process_hands_out_a_restart() {
    let mut h = Harness::new(false);
    let fx = h.until_work(exit(WEB, ProcessRole::Main, 3));
    assert!(matches!(fx.history[0], (WEB, Event::Exit { .. })));
    assert_eq!(decisions(&fx)[0].0, "crash");
    assert!(fx.metrics.contains(&MetricNote::ProblemDetected {
        unit: "web.service".into(),
        kind: ProblemKind::Crash,
    }));
    assert_eq!(fx.run.len(), 1);
    assert_eq!(fx.run[0].action, Action::Restart);
    assert_eq!(fx.run[0].name, "web.service");
    assert!(fx.save);
    assert!(h.sup.acting(WEB));
}

#[test]
fn a_late_exit_that_arrived_while_the_agent_acted_stays_the_agents_doing() {
    let mut h = Harness::new(false);
    let Input::Exit {
        unit,
        facts,
        record,
        ..
    } = exit(WEB, ProcessRole::Main, 3)
    else {
        unreachable!()
    };
    let fx = h.feed(Input::Exit {
        unit,
        facts,
        record,
        during_action: true,
    });
    assert!(!h.sup.acting(WEB));
    assert!(fx.run.is_empty());
    assert!(decisions(&fx).is_empty());
    assert_eq!(
        notes(&fx),
        ["exit caused by the agent's own action; not a problem"]
    );
}

#[test]
fn a_child_exit_is_recorded_but_is_no_problem() {
    let mut h = Harness::new(false);
    let fx = h.feed(exit(WEB, ProcessRole::Child, 1));
    assert_eq!(fx.history.len(), 1);
    assert!(fx.audit.is_empty() && fx.run.is_empty());
}

#[test]
fn an_exit_while_the_agent_acts_is_the_agents_doing() {
    let mut h = Harness::new(false);
    let fx = h.until_work(exit(WEB, ProcessRole::Main, 3));
    assert_eq!(fx.run.len(), 1);
    let fx = h.feed(exit(WEB, ProcessRole::Main, 0));
    assert_eq!(
        notes(&fx),
        ["exit caused by the agent's own action; not a problem"]
    );
    assert!(fx.audit.is_empty() && fx.run.is_empty());
}

#[test]
fn an_outcome_is_recorded_everywhere_once_and_ends_the_action() {
    let mut h = Harness::new(false);
    let fx = h.until_work(exit(WEB, ProcessRole::Main, 3));
    let fx = h.finish(&fx.run[0], ActionOutcome::Done);
    assert!(!h.sup.acting(WEB));
    assert!(fx.save);
    assert_eq!(
        fx.metrics,
        [MetricNote::ActionFinished {
            unit: "web.service".into(),
            action: "restart",
            result: "done",
        }]
    );
    assert!(matches!(
        &fx.audit[..],
        [AuditNote::Action {
            outcome: "done",
            ..
        }]
    ));
    assert!(matches!(
        &fx.history[..],
        [(WEB, Event::Action { outcome, .. })] if outcome == "done"
    ));
}

#[test]
fn a_dry_run_hands_out_nothing_and_reports_every_action_skipped() {
    let mut h = Harness::new(true);
    let fx = h.until_work(exit(WEB, ProcessRole::Main, 3));
    assert!(fx.run.is_empty());
    assert!(
        decisions(&fx)
            .iter()
            .any(|(_, actions)| actions.ends_with("(dry run: not acting)"))
    );
    assert!(fx.audit.iter().any(|a| matches!(
        a,
        AuditNote::Action { outcome: "skipped", detail, .. } if detail == "dry run"
    )));
    assert!(!h.sup.acting(WEB));
}

#[test]
fn a_samplers_problem_is_decided_with_its_evidence_and_its_clearing_is_recorded() {
    let mut h = Harness::new(false);
    let problem = Problem {
        unit: DB,
        kind: ProblemKind::Stall(StallKind::Hung),
        detected_at: h.now,
        evidence: "no task ran for 30 s".into(),
        pid: Some(7),
        unkillable: false,
    };
    let fx = h.feed(Input::Problem(problem));
    assert!(fx.audit.iter().any(|a| matches!(
        a,
        AuditNote::Decision { problem, evidence, .. }
            if problem == "hung" && evidence == "no task ran for 30 s"
    )));
    let fx = h.feed(Input::Cleared {
        unit: DB,
        kind: ProblemKind::Stall(StallKind::Hung),
        evidence: "activity resumed".into(),
    });
    assert_eq!(notes(&fx), ["hung cleared: activity resumed"]);
    assert!(fx.save);
}

fn probe_result(h: &Harness, ok: bool) -> Input {
    Input::Probe(ProbeReport::Result(ProbeResult {
        unit: WEB,
        probe: "http".into(),
        ok,
        latency: Duration::from_millis(3),
        detail: if ok { "HTTP 200" } else { "HTTP 500" }.into(),
        at: h.now,
        dependency: false,
    }))
}

fn probe_names(h: &Harness) -> Vec<String> {
    let status = h.sup.probes().probe_status(WEB);
    status.into_iter().map(|p| p.name).collect()
}

/// A reload replaced the unit's probe: the new one shows, and a late result of the old one is
/// neither judged, counted nor shown.
#[test]
fn new_probes_replace_the_old_and_a_late_result_of_an_old_one_is_ignored() {
    let mut h = Harness::new(false);
    h.advance(60);
    h.feed(Input::Probes {
        unit: WEB,
        probes: vec![("ready".to_owned(), ProbeRules::default())],
        detectors: Vec::new(),
    });
    assert_eq!(probe_names(&h), ["ready"]);
    for _ in 0..10 {
        let fx = h.feed(probe_result(&h, false));
        assert!(fx.metrics.is_empty() && fx.audit.is_empty() && fx.run.is_empty());
    }
    assert_eq!(probe_names(&h), ["ready"]);
}

/// A reload takes away the probe whose failures opened an incident: the problem is over (no
/// probe will ever say so), and the policy hears it like any clear.
#[test]
fn a_removed_probes_problem_is_cleared() {
    let mut h = Harness::new(false);
    h.advance(60);
    let mut raised = Vec::new();
    for _ in 0..3 {
        let fx = h.feed(probe_result(&h, false));
        raised.extend(decisions(&fx).into_iter().map(|(p, _)| p.to_owned()));
    }
    assert_eq!(raised, ["consecutive_failures"]);
    let fx = h.feed(Input::Probes {
        unit: WEB,
        probes: Vec::new(),
        detectors: Vec::new(),
    });
    assert_eq!(
        notes(&fx),
        ["consecutive_failures cleared: probe \"http\" was removed from the config"]
    );
    assert!(fx.save);
    assert!(probe_names(&h).is_empty());
}

#[test]
fn failed_probes_after_the_start_grace_raise_a_problem() {
    let mut h = Harness::new(false);
    let facts = UnitFacts {
        main_pid: 100,
        ..UnitFacts::default()
    };
    h.feed(Input::Facts { unit: WEB, facts });
    // Inside the grace period after the (re)start: failures do not count.
    for _ in 0..3 {
        let fx = h.feed(probe_result(&h, false));
        assert!(fx.audit.is_empty());
        assert!(matches!(
            &fx.metrics[..],
            [MetricNote::ProbeFinished { ok: false, .. }]
        ));
    }
    h.advance(10);
    let mut raised = Vec::new();
    for _ in 0..3 {
        let fx = h.feed(probe_result(&h, false));
        raised.extend(
            decisions(&fx)
                .into_iter()
                .map(|(p, _)| p.to_owned())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(raised, ["consecutive_failures"]);
}

#[test]
fn a_custom_detectors_finding_raises_its_kind() {
    let mut h = Harness::new(false);
    let finding = CustomFinding {
        unit: DB,
        detector: "replication".into(),
        kind: "replication_lag".into(),
        evidence: "lag 40 s".into(),
        at: h.now,
        ok: false,
    };
    let fx = h.feed(Input::Probe(ProbeReport::Finding(finding)));
    assert_eq!(decisions(&fx)[0].0, "replication_lag");
}

fn alert(unit: &str, firing: bool) -> Input {
    Input::Alert(AlertObservation {
        unit_name: unit.into(),
        kind: ProblemKind::Custom("high_latency".into()),
        fingerprint: "f1".into(),
        firing,
        summary: "p99 over 2 s".into(),
    })
}

#[test]
fn alerts_reach_the_named_unit_and_only_monitored_ones() {
    let mut h = Harness::new(false);
    let fx = h.feed(alert("db.service", true));
    assert!(fx.audit.iter().any(|a| matches!(
        a,
        AuditNote::Decision { unit, evidence, .. }
            if unit == "db.service" && evidence == "Alertmanager: p99 over 2 s"
    )));
    assert_eq!(h.feed(alert("other.service", true)), Effects::default());
    let fx = h.feed(alert("db.service", false));
    assert_eq!(
        notes(&fx),
        ["high_latency cleared: Alertmanager: p99 over 2 s resolved"]
    );
}

#[test]
fn a_unit_being_stopped_is_left_alone() {
    let mut h = Harness::new(false);
    let facts = UnitFacts {
        main_pid: 100,
        context: UnitContext {
            stopping: true,
            ..UnitContext::default()
        },
        ..UnitFacts::default()
    };
    h.feed(Input::Facts { unit: WEB, facts });
    let fx = h.until_work(exit(WEB, ProcessRole::Main, 3));
    assert!(fx.run.is_empty());
}

#[test]
fn lost_exits_are_said_in_the_units_history() {
    let mut h = Harness::new(false);
    let fx = h.feed(Input::ExitsLost { unit: DB, lost: 4 });
    assert_eq!(
        notes(&fx),
        ["the kernel lost 4 exit record(s) of the unit; re-reading it from systemd"]
    );
    assert!(fx.run.is_empty());
}

fn resynced(unit: u32, active_state: &str, pid: u32, code: i32, status: i32) -> Input {
    Input::Resynced {
        unit,
        resync: Resync {
            active_state: active_state.into(),
            result: "signal".into(),
            exec_main_pid: pid,
            exec_main_code: code,
            exec_main_status: status,
        },
    }
}

#[test]
fn a_main_exit_whose_record_was_lost_is_acted_on_from_systemds_answer() {
    let mut h = Harness::new(false);
    // Killed by SIGKILL (CLD_KILLED), unit failed: the crash the record would have raised.
    let fx = h.until_work(resynced(WEB, "failed", 77, 2, 9));
    assert!(notes(&fx)[0].contains("main process 77 ended while its exit record was lost"));
    let summary = fx.history.iter().find_map(|(_, e)| match e {
        Event::Exit { .. } => Some(e.summary()),
        _ => None,
    });
    assert_eq!(
        summary.as_deref(),
        Some("main process 77 ((read from systemd)) was killed by SIGKILL")
    );
    assert_eq!(decisions(&fx)[0].0, "crash");
    assert_eq!(fx.run[0].action, Action::Restart);
}

#[test]
fn a_resync_acts_only_on_an_ended_main_process_not_seen_before() {
    let mut h = Harness::new(false);
    // Still running: the lost records were of others.
    assert_eq!(
        h.feed(resynced(WEB, "active", 42, 0, 0)),
        Effects::default()
    );
    // Exit record of pid 42 seen; the lost ones were other processes' exits.
    let _ = h.until_work(exit(DB, ProcessRole::Main, 3));
    assert_eq!(h.feed(resynced(DB, "failed", 42, 1, 3)), Effects::default());
    // An unknown unit, or no main process yet.
    assert_eq!(h.feed(resynced(9, "failed", 50, 1, 3)), Effects::default());
    assert_eq!(
        h.feed(resynced(WEB, "inactive", 0, 0, 0)),
        Effects::default()
    );
}

#[test]
fn a_clean_main_exit_read_back_is_an_exit_not_a_crash() {
    let mut h = Harness::new(false);
    let fx = h.feed(resynced(WEB, "inactive", 80, 1, 0));
    assert!(fx.history.iter().any(|(u, e)| *u == WEB
        && matches!(
            e,
            Event::Exit {
                status: Some(0),
                kernel_to_agent_us: None,
                ..
            }
        )));
    assert!(
        decisions(&fx)
            .iter()
            .all(|(problem, _)| *problem != "crash")
    );
}

#[test]
fn events_for_unknown_units_are_dropped() {
    let mut h = Harness::new(false);
    assert_eq!(h.feed(exit(9, ProcessRole::Main, 3)), Effects::default());
    let cleared = Input::Cleared {
        unit: 9,
        kind: ProblemKind::Crash,
        evidence: String::new(),
    };
    assert_eq!(h.feed(cleared), Effects::default());
}

#[test]
fn a_failed_restart_is_retried_when_time_passes() {
    let mut h = Harness::new(false);
    let fx = h.until_work(exit(WEB, ProcessRole::Main, 3));
    let fx = h.finish(&fx.run[0], ActionOutcome::Failed("job failed".into()));
    let mut all = fx;
    for _ in 0..60 {
        if !all.run.is_empty() {
            break;
        }
        let fx = h.advance(1);
        merge(&mut all, fx);
    }
    assert_eq!(all.run.len(), 1, "a second attempt after the backoff");
    assert_eq!(all.run[0].action, Action::Restart);
}

#[test]
fn commands_answer_from_the_policy_and_name_unknown_units() {
    let mut h = Harness::new(false);
    let wall = SystemTime::now();
    let (answer, fx) = h.sup.command(Command::Explain, "nope.service", h.now, wall);
    assert_eq!(
        answer,
        Err(CommandError::NotMonitored("nope.service".into()))
    );
    assert_eq!(fx, Effects::default());
    let (answer, _) = h.sup.command(Command::Explain, "web.service", h.now, wall);
    assert!(answer.expect("explained").contains("web.service"));
    let (answer, fx) = h.sup.command(Command::Reset, "web.service", h.now, wall);
    assert!(answer.expect("reset").contains("restart budget full"));
    assert!(notes(&fx)[0].starts_with("operator reset: "));
    let (answer, fx) = h.sup.command(Command::Release, "db.service", h.now, wall);
    assert!(answer.expect("released").contains("not isolated"));
    assert!(fx.run.is_empty());
}

#[test]
fn an_exit_status_the_unit_declares_successful_is_not_restarted_under_on_failure() {
    let mut h = Harness::new(false);
    let facts = UnitFacts {
        main_pid: 100,
        exit_rules: crate::detect::exit::ExitRules {
            success: crate::systemd::ExitStatusSet {
                statuses: vec![3],
                signals: vec![],
            },
            ..Default::default()
        },
        ..UnitFacts::default()
    };
    h.feed(Input::Facts { unit: WEB, facts });
    let fx = h.until_work(exit(WEB, ProcessRole::Main, 3));
    assert!(fx.run.is_empty(), "{:?}", fx.run);
    // Another status is still a crash.
    let fx = h.until_work(exit(WEB, ProcessRole::Main, 4));
    assert_eq!(fx.run[0].action, Action::Restart);
}
