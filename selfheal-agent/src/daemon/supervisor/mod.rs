//! The supervisor: the agent's decisions in one pure type. An [`Input`] goes in (an exit, a
//! problem or its clearing from the samplers, a probe report, an alert, an action's outcome,
//! what the tracker learned about a unit, the passing of time, an operator command) and
//! [`Effects`] come out (actions to run, records to write, whether to save the state). It does
//! no I/O and takes the time as a parameter, so every path is unit-tested with an injected
//! clock. The policy's state is the only state of remediation: in-flight actions, escalation
//! and incidents are read from it, never mirrored.

mod command;
mod effects;
mod resync;
mod units;

#[cfg(test)]
mod tests;

use std::time::{Instant, SystemTime};

pub use command::Command;
pub use effects::{AuditNote, Effects, MetricNote, Work, result_name};
pub use resync::Resync;
pub use units::UnitFacts;

use super::execute::Finished;
use crate::{
    detect::{
        Problem, ProblemKind,
        exit::{ExitFacts, judge},
        probe::{ProbeDetector, ProbeEvent, ProbeRules},
    },
    policy::{ActionOutcome, Decision, Policy, PolicyConfig, UnitSpec},
    report::{history::Event, webhook::AlertObservation},
    sensors::probes::ProbeReport,
    units::ProcessRole,
};
use units::UnitTable;

#[derive(Debug)]
pub enum Input {
    /// A process of the unit ended; `record` is its history entry (the exit reader builds it).
    /// `during_action`: the supervisor was acting on the unit when the record arrived (an
    /// exit whose role systemd had to tell comes in later, maybe after the action ended).
    Exit {
        unit: u32,
        facts: ExitFacts,
        record: Event,
        during_action: bool,
    },
    /// A sampler's detector (stall, leak) found a problem.
    Problem(Problem),
    /// A sampler's detector says a problem is gone.
    Cleared {
        unit: u32,
        kind: ProblemKind,
        evidence: String,
    },
    Probe(ProbeReport),
    Alert(AlertObservation),
    /// An action the supervisor asked for ended.
    Outcome(Finished),
    /// What the tracker knows about the unit now (main pid, stopping, start limit).
    Facts {
        unit: u32,
        facts: UnitFacts,
    },
    /// The kernel dropped exit records of the unit (its per-unit lost count grew by `lost`).
    /// The engine re-reads the unit from systemd and hands in [`Input::Resynced`].
    ExitsLost {
        unit: u32,
        lost: u64,
    },
    /// systemd's answer after lost exit records: a main-process exit not seen as a record is
    /// acted on as that record would have been.
    Resynced {
        unit: u32,
        resync: Resync,
    },
    /// The unit's probes (with how their results are judged) and custom detectors from now
    /// on: at start, and when a reload changes them. A probe renamed or removed leaves nothing
    /// behind in status, and the problems it (or a removed detector) had raised are over.
    Probes {
        unit: u32,
        probes: Vec<(String, ProbeRules)>,
        detectors: Vec<String>,
    },
    /// Time passed: run the policy's timers (backoff, verification, breaker, storm).
    Time,
}

pub struct Supervisor {
    policy: Policy,
    probes: ProbeDetector,
    units: UnitTable,
    dry_run: bool,
}

impl Supervisor {
    /// `policy` was built from the same units, in the same order, as `probes` and `names`.
    /// The units `names` (by index), none of them probed yet (see [`Self::set_probes`]).
    pub fn new(policy: Policy, names: &[String], dry_run: bool) -> Self {
        let mut units = UnitTable::default();
        for (index, name) in names.iter().enumerate() {
            units.insert(index as u32, name);
        }
        Self {
            policy,
            probes: ProbeDetector::default(),
            units,
            dry_run,
        }
    }

    /// A reloaded config: the new specs (ladders, restart) of the units that stay, by index,
    /// apply to their next incident; their state (budgets, circuits, incidents) is kept.
    pub fn reload(&mut self, config: PolicyConfig, specs: Vec<(u32, UnitSpec)>) {
        self.policy.reconfigure(config, specs);
    }

    /// A unit monitored from now on (added by a reload, or adopted by a pattern) at an index
    /// the unit table gave it; the state saved for its name, if any, is taken back.
    pub fn add_unit(&mut self, index: u32, spec: UnitSpec) {
        self.units.insert(index, &spec.name);
        self.policy.add_unit(index, spec);
    }

    /// The unit is let go: what comes for its index from now on is ignored.
    pub fn remove_unit(&mut self, index: u32) {
        self.units.remove(index);
        self.policy.remove_unit(index);
        self.probes.forget(index);
    }

    /// Read-only, for the published snapshot and the state file.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn probes(&self) -> &ProbeDetector {
        &self.probes
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.units.index_of(name)
    }

    /// Actions of the supervisor's run on the unit: what it observes now is their doing.
    pub fn acting(&self, unit: u32) -> bool {
        self.policy.acting(unit)
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Effects {
        let mut fx = Effects::default();
        match input {
            Input::Exit {
                unit,
                facts,
                record,
                during_action,
            } => self.on_exit(unit, &facts, record, during_action, now, &mut fx),
            Input::Problem(problem) => self.raise(problem, now, &mut fx),
            Input::Cleared {
                unit,
                kind,
                evidence,
            } => self.cleared(unit, &kind, &evidence, now, &mut fx),
            Input::Probe(report) => self.on_probe(&report, now, &mut fx),
            Input::Probes {
                unit,
                probes,
                detectors,
            } => {
                let events = self.probes.set_probes(unit, probes, &detectors, now);
                self.on_probe_events(events, now, &mut fx);
            }
            Input::Alert(alert) => self.on_alert(alert, now, &mut fx),
            Input::Outcome(done) => self.on_outcome(done, now, &mut fx),
            Input::Facts { unit, facts } => self.on_facts(unit, facts, now),
            Input::ExitsLost { unit, lost } => fx.note(
                unit,
                format!(
                    "the kernel lost {lost} exit record(s) of the unit; re-reading it from systemd"
                ),
            ),
            Input::Resynced { unit, resync } => self.on_resync(unit, &resync, now, &mut fx),
            Input::Time => self.on_time(now, &mut fx),
        }
        fx
    }

    fn on_exit(
        &mut self,
        unit: u32,
        facts: &ExitFacts,
        record: Event,
        during_action: bool,
        now: Instant,
        fx: &mut Effects,
    ) {
        if self.units.get(unit).is_none() {
            return;
        }
        if facts.role == ProcessRole::Main
            && let Some(entry) = self.units.get_mut(unit)
        {
            entry.last_main_exit = facts.pid;
        }
        let evidence = record.summary();
        fx.history.push((unit, record));
        let rules = self
            .units
            .get(unit)
            .map(|e| e.facts.exit_rules.clone())
            .unwrap_or_default();
        let Some(problem) = judge(unit, facts, &rules, evidence, now) else {
            return;
        };
        if during_action || self.acting(unit) {
            fx.note(
                unit,
                "exit caused by the agent's own action; not a problem".into(),
            );
            return;
        }
        self.raise(problem, now, fx);
    }

    /// After lost exit records: the main process's end systemd kept, unless it was already
    /// seen as a record (the lost ones were others) or the unit is running.
    fn on_resync(&mut self, unit: u32, resync: &Resync, now: Instant, fx: &mut Effects) {
        let Some(entry) = self.units.get(unit) else {
            return;
        };
        let Some((facts, record)) = resync.main_exit() else {
            return;
        };
        if entry.last_main_exit == facts.pid {
            return;
        }
        fx.note(
            unit,
            format!(
                "systemd says main process {} ended while its exit record was lost",
                facts.pid
            ),
        );
        self.on_exit(unit, &facts, record, false, now, fx);
    }

    /// A detector found a problem: the policy decides, the decision is applied.
    fn raise(&mut self, problem: Problem, now: Instant, fx: &mut Effects) {
        let Some(entry) = self.units.get(problem.unit) else {
            return;
        };
        let mut context = entry.facts.context;
        context.stopping |= self.acting(problem.unit);
        fx.metrics.push(MetricNote::ProblemDetected {
            unit: entry.name.clone(),
            kind: problem.kind.clone(),
        });
        let decision = self.policy.decide(&problem, &context, now);
        self.apply(decision, Some(&problem), now, fx);
    }

    /// Records a decision and hands its actions out (or, in a dry run, reports them skipped).
    fn apply(
        &mut self,
        decision: Decision,
        problem: Option<&Problem>,
        now: Instant,
        fx: &mut Effects,
    ) {
        fx.save = true;
        let Some(name) = self.units.name(decision.unit).map(str::to_owned) else {
            return;
        };
        let mut summary = decision.actions_summary();
        if self.dry_run && !decision.actions.is_empty() {
            summary.push_str(" (dry run: not acting)");
        }
        let evidence = problem.map(|p| p.evidence.clone()).unwrap_or_default();
        fx.audit.push(AuditNote::Decision {
            unit: name.clone(),
            problem: decision.cause.clone(),
            evidence: evidence.clone(),
            actions: summary.clone(),
            reason: decision.reason.clone(),
            dry_run: self.dry_run,
        });
        fx.history.push((
            decision.unit,
            Event::Decision {
                problem: decision.cause.clone(),
                action: summary,
                reason: decision.reason.clone(),
                evidence,
            },
        ));
        let kind = problem.map(|p| p.kind.clone());
        for action in decision.actions {
            if self.dry_run {
                let done = Finished::now(decision.unit, action, skipped("dry run"));
                self.on_outcome(done, now, fx);
            } else {
                fx.run.push(Work {
                    unit: decision.unit,
                    name: name.clone(),
                    action,
                    kind: kind.clone(),
                });
            }
        }
    }

    fn on_outcome(&mut self, done: Finished, now: Instant, fx: &mut Effects) {
        fx.save = true;
        self.policy
            .on_outcome(done.unit, &done.action, &done.outcome, now);
        if let Some(name) = self.units.name(done.unit) {
            let result = result_name(&done.outcome);
            let detail = done.detail();
            let duration_ms = done.took.as_millis() as u64;
            fx.metrics.push(MetricNote::ActionFinished {
                unit: name.to_owned(),
                action: done.action.name(),
                result,
            });
            fx.audit.push(AuditNote::Action {
                unit: name.to_owned(),
                action: done.action.describe(),
                outcome: result,
                detail: detail.clone(),
                duration_ms,
                issued_ns: done.issued_ns,
                slot: done.slot.clone(),
            });
            fx.history.push((
                done.unit,
                Event::Action {
                    action: done.action.describe(),
                    outcome: result.to_owned(),
                    detail,
                    duration_ms,
                },
            ));
        }
        // Follow-ups (the next backoff step, a fallback) come out of the policy's timers.
        self.on_time(now, fx);
    }

    fn on_time(&mut self, now: Instant, fx: &mut Effects) {
        for decision in self.policy.tick(now) {
            self.apply(decision, None, now, fx);
        }
    }

    fn on_probe(&mut self, report: &ProbeReport, now: Instant, fx: &mut Effects) {
        let unit = match report {
            ProbeReport::Result(r) => r.unit,
            ProbeReport::Finding(f) => f.unit,
        };
        // A late report of a unit let go, or of a probe a reload replaced.
        if self.units.get(unit).is_none() {
            return;
        }
        let events = match report {
            ProbeReport::Result(result) => {
                if let Some(name) = self.units.name(result.unit)
                    && self.probes.declares(result.unit, &result.probe)
                {
                    fx.metrics.push(MetricNote::ProbeFinished {
                        unit: name.to_owned(),
                        probe: result.probe.clone(),
                        ok: result.ok,
                        latency: result.latency,
                    });
                }
                self.probes.on_result(result)
            }
            ProbeReport::Finding(finding) => self.probes.on_finding(finding),
        };
        self.on_probe_events(events, now, fx);
    }

    fn on_probe_events(&mut self, events: Vec<ProbeEvent>, now: Instant, fx: &mut Effects) {
        for event in events {
            match event {
                ProbeEvent::Detected(problem) => self.raise(problem, now, fx),
                ProbeEvent::Cleared {
                    unit,
                    kind,
                    evidence,
                    ..
                } => self.cleared(unit, &kind, &evidence, now, fx),
            }
        }
    }

    fn on_alert(&mut self, alert: AlertObservation, now: Instant, fx: &mut Effects) {
        let Some(unit) = self.units.index_of(&alert.unit_name) else {
            return;
        };
        if alert.firing {
            let problem = Problem {
                unit,
                kind: alert.kind,
                detected_at: now,
                evidence: format!("Alertmanager: {}", alert.summary),
                pid: None,
                unkillable: false,
            };
            self.raise(problem, now, fx);
        } else {
            let evidence = format!("Alertmanager: {} resolved", alert.summary);
            self.cleared(unit, &alert.kind, &evidence, now, fx);
        }
    }

    /// A problem went away: the policy counts its recovery, history says so.
    fn cleared(
        &mut self,
        unit: u32,
        kind: &ProblemKind,
        evidence: &str,
        now: Instant,
        fx: &mut Effects,
    ) {
        if self.units.get(unit).is_none() {
            return;
        }
        fx.save = true;
        self.policy.on_cleared(unit, kind, now);
        fx.note(unit, format!("{} cleared: {evidence}", kind.name()));
    }

    /// The tracker's news. A new main process is a (re)start: probes get their grace period.
    /// (This is also where the kernel's per-unit main-pid map is to be updated.)
    fn on_facts(&mut self, unit: u32, facts: UnitFacts, now: Instant) {
        let Some(entry) = self.units.get_mut(unit) else {
            return;
        };
        let restarted = facts.main_pid != 0 && facts.main_pid != entry.facts.main_pid;
        entry.facts = facts;
        if restarted {
            self.probes.unit_started(unit, now);
        }
    }

    /// Why the unit is where it is, rendered on request only.
    pub fn explain(&self, unit: u32, now: Instant, wall: SystemTime) -> String {
        self.policy.explain(unit, now, wall)
    }
}

fn skipped(why: &str) -> ActionOutcome {
    ActionOutcome::NotExecuted(why.to_owned())
}
