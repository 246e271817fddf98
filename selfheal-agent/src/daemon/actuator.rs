//! The actuator side of the engine: the one place where an action is about to run
//! ([`Engine::start`]) and where every action's end is reported ([`Engine::finished`]).
//! Quarantine, release and escalation run here at once (in fleet mode a quarantine first waits
//! for a slot on a task); systemd-side actions run as their own tasks (`execute.rs`) and come
//! back through the engine's outcome channel.

use std::path::PathBuf;

use log::warn;

use super::{
    engine::Engine,
    execute::{Admitted, Finished, Target, admit_quarantine, execute_gated},
    supervisor::{Input, Work},
};
use crate::{
    detect::ProblemKind,
    policy::{Action, ActionOutcome, ScaledLimits},
};

impl Engine {
    /// An action is about to run.
    pub(super) fn start(&mut self, mut work: Work) {
        if let Action::Scale { factor, limits, .. } = &mut work.action {
            self.fill_scale_bases(work.unit, *factor, limits);
        }
        let (unit, name) = (work.unit, work.name.clone());
        match &work.action {
            // Fleet mode: isolating a unit takes it out of service, so it needs a slot first;
            // the quarantine is applied when the gate's answer comes back (`finished`).
            Action::Quarantine if self.p.fleet.is_some() => {
                let (gate, live) = (self.p.fleet.clone(), self.live(unit, work.kind.as_ref()));
                let tx = self.finished_tx.clone();
                tokio::spawn(async move {
                    let Some(gate) = gate else { return };
                    let _ = tx
                        .send(admit_quarantine(gate, live, unit, name).await)
                        .await;
                });
            }
            Action::Quarantine | Action::Release => {
                let on = matches!(work.action, Action::Quarantine);
                let outcome = self.isolate_network(unit, on);
                let quarantined = on && outcome == ActionOutcome::Done;
                self.p.metrics.set_quarantined(&name, quarantined);
                self.finished(Finished::now(unit, work.action, outcome));
            }
            Action::Escalate { reason } => {
                let kind = work
                    .kind
                    .clone()
                    .unwrap_or_else(|| ProblemKind::Custom("escalation".into()));
                self.p.metrics.escalated(&name, &kind);
                warn!("{name}: ESCALATED to an operator: {reason}");
                if let Some(pusher) = self.p.pusher.clone() {
                    let reason = reason.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pusher.push_escalation(&name, &kind, &reason).await {
                            warn!("{name}: cannot alert Alertmanager about the escalation: {e}");
                        }
                    });
                }
                self.finished(Finished::now(unit, work.action, ActionOutcome::Done));
            }
            _ => {
                let (object_path, cgroup_dir, systemd) = self.target_of(unit);
                let target = Target {
                    unit,
                    name,
                    object_path,
                    cgroup_dir,
                    systemd,
                };
                let (conn, tx) = (self.p.conn.clone(), self.finished_tx.clone());
                let (gate, live) = (self.p.fleet.clone(), self.live(unit, work.kind.as_ref()));
                tokio::spawn(async move {
                    let done = execute_gated(gate, live, conn, target, work.action).await;
                    let _ = tx.send(done).await;
                });
            }
        }
    }

    /// An action ended (those run at once; spawned ones come back through the channel). A
    /// quarantine the fleet admitted is applied here, where the quarantine lives.
    pub(super) fn finished(&mut self, mut done: Finished) {
        if let Some(admitted) = done.admitted.take() {
            done = self.quarantine_admitted(done.unit, admitted);
        }
        self.feed(Input::Outcome(done));
    }

    /// Applies a quarantine under its slot; the slot is released after the settle period.
    fn quarantine_admitted(&mut self, unit: u32, admitted: Admitted) -> Finished {
        let outcome = self.isolate_network(unit, true);
        let ok = outcome == ActionOutcome::Done;
        self.p.metrics.set_quarantined(&admitted.name, ok);
        let mut done = Finished::now(unit, Action::Quarantine, outcome);
        if let Some(permit) = admitted.permit {
            done.slot = Some(permit.slot.clone());
            tokio::spawn(permit.finish(ok, done.action.describe()));
        }
        done
    }

    /// Whether acting on the unit disrupts a serving unit (fleet mode takes a slot for it).
    /// A unit whose main process just died is not live, whatever systemd's state says yet:
    /// the kernel's exit record reaches the agent before systemd's PropertiesChanged does, so
    /// an exit's restart is judged by its cause and by whether the main pid is still there.
    fn live(&self, unit: u32, cause: Option<&ProblemKind>) -> bool {
        if matches!(cause, Some(ProblemKind::Crash | ProblemKind::Exit)) {
            return false;
        }
        let state = self.p.state.lock();
        state.unit(unit).is_some_and(|u| {
            u.systemd.active_state == "active"
                && u.systemd.main_pid != 0
                && crate::sensors::procfs::is_running(u.systemd.main_pid)
        })
    }

    /// The unit's object path, cgroup directory and the tracker's picture of it (kept current
    /// by systemd's signals: an action needs no round trip to learn it again).
    fn target_of(
        &self,
        unit: u32,
    ) -> (
        Option<zbus::zvariant::OwnedObjectPath>,
        Option<PathBuf>,
        Option<crate::systemd::UnitSnapshot>,
    ) {
        let state = self.p.state.lock();
        let Some(u) = state.unit(unit) else {
            return (None, None, None);
        };
        let dir = u
            .watched_cgroup
            .as_ref()
            .map(|c| self.p.v2_root.join(c.trim_start_matches('/')));
        let known = u.object_path.is_some().then(|| u.systemd.clone());
        (u.object_path.clone(), dir, known)
    }

    /// Limits the config gives no base for are scaled from what systemd had before the agent
    /// first scaled the unit (nothing is sent for limits that were unlimited).
    fn fill_scale_bases(&mut self, unit: u32, factor: f64, limits: &mut ScaledLimits) {
        let base = *self.scale_bases.entry(unit).or_insert_with(|| {
            let state = self.p.state.lock();
            let finite = |v: u64| (v != 0 && v < (1 << 62)).then_some(v);
            state
                .unit(unit)
                .map_or_else(Default::default, |u| ScaledLimits {
                    cpu_quota_percent: finite(u.systemd.cpu_quota_per_sec_us).map(|us| us / 10_000),
                    memory_max: finite(u.systemd.memory_max),
                    memory_high: finite(u.systemd.memory_high),
                    tasks_max: finite(u.systemd.tasks_max),
                })
        });
        let scaled = |v: Option<u64>| v.map(|v| (v as f64 * factor).round() as u64);
        limits.cpu_quota_percent = limits.cpu_quota_percent.or(scaled(base.cpu_quota_percent));
        limits.memory_max = limits.memory_max.or(scaled(base.memory_max));
        limits.memory_high = limits.memory_high.or(scaled(base.memory_high));
        limits.tasks_max = limits.tasks_max.or(scaled(base.tasks_max));
    }

    fn isolate_network(&mut self, unit: u32, on: bool) -> ActionOutcome {
        let cgroup = self.target_of(unit).1;
        let Some(quarantine) = self.p.quarantine.as_mut() else {
            return ActionOutcome::NotExecuted(
                "network quarantine is not available on this kernel".into(),
            );
        };
        if !on {
            quarantine.release(unit);
            return ActionOutcome::Done;
        }
        let Some(dir) = cgroup else {
            return ActionOutcome::Failed("the unit has no cgroup to quarantine".into());
        };
        match quarantine.isolate(unit, &dir) {
            Ok(()) => ActionOutcome::Done,
            Err(e) => ActionOutcome::Failed(e),
        }
    }
}
