//! Carries out one action of a decision against systemd and reports how it went. Every
//! action's outcome goes back to the policy exactly once.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use zbus::zvariant::OwnedObjectPath;

use crate::{
    act::{
        restart::{RestartRequest, restart},
        unit_ops::{self, Limits},
    },
    fleet::{Gate, Held, Permit},
    policy::{Action, ActionOutcome, HELD_BY_FLEET},
};

/// An action that ended, for the policy, the history, the audit log and metrics.
#[derive(Debug)]
pub struct Finished {
    pub unit: u32,
    pub action: Action,
    pub outcome: ActionOutcome,
    /// What the actuator saw ("active (running), main pid 42"), when it says more than the
    /// outcome.
    pub note: String,
    pub took: Duration,
    /// CLOCK_MONOTONIC (ns) when the systemd call was sent (restarts), for the audit log.
    pub issued_ns: Option<u64>,
    /// Fleet mode: the slot held for this action, for the audit log.
    pub slot: Option<crate::fleet::SlotRecord>,
    /// Fleet mode: a quarantine the gate admitted, for the engine to apply (it owns the
    /// quarantine) before the outcome goes on.
    pub admitted: Option<Admitted>,
}

/// A quarantine the fleet let through, with its slot's permit.
pub struct Admitted {
    pub name: String,
    pub permit: Option<crate::fleet::Permit>,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slot = self.permit.as_ref().map(|p| &p.slot);
        f.debug_struct("Admitted")
            .field("name", &self.name)
            .field("slot", &slot)
            .finish()
    }
}

impl Finished {
    /// An outcome the supervisor or its caller knows at once (dry run, quarantine, escalation).
    pub fn now(unit: u32, action: Action, outcome: ActionOutcome) -> Self {
        Self {
            unit,
            action,
            outcome,
            note: String::new(),
            took: Duration::ZERO,
            issued_ns: None,
            slot: None,
            admitted: None,
        }
    }

    pub fn detail(&self) -> String {
        match &self.outcome {
            ActionOutcome::Done => self.note.clone(),
            ActionOutcome::Failed(why) | ActionOutcome::NotExecuted(why) => why.clone(),
        }
    }
}

/// What a systemd-side action needs to know about its unit.
pub struct Target {
    pub unit: u32,
    pub name: String,
    pub object_path: Option<OwnedObjectPath>,
    /// The unit's v2 cgroup directory, for freezing it where systemd cannot.
    pub cgroup_dir: Option<std::path::PathBuf>,
    /// What the tracker knows of the unit now (`None`: not loaded yet).
    pub systemd: Option<crate::systemd::UnitSnapshot>,
}

/// Runs a systemd-side action (restart, fallback, instances, scale, freeze). Quarantine and
/// escalation are handled by the engine itself.
pub async fn execute(conn: zbus::Connection, target: Target, action: Action) -> Finished {
    let started = Instant::now();
    let job = |result: Result<String, String>| match result {
        Ok(r) if r == "done" => (ActionOutcome::Done, String::new()),
        Ok(r) => (
            ActionOutcome::Failed(format!("job ended with \"{r}\"")),
            String::new(),
        ),
        Err(e) => (ActionOutcome::Failed(e), String::new()),
    };
    let mut issued_ns = None;
    let (outcome, note) = match &action {
        Action::Restart => match target.object_path.clone() {
            None => (
                ActionOutcome::NotExecuted("the unit is not loaded in systemd".into()),
                String::new(),
            ),
            Some(object_path) => {
                let out = restart(
                    &conn,
                    RestartRequest {
                        unit: target.unit,
                        name: target.name.clone(),
                        object_path,
                        delay: Duration::ZERO,
                        known: target.systemd.clone(),
                    },
                )
                .await;
                let outcome = match out.result {
                    "done" => ActionOutcome::Done,
                    "failed" => ActionOutcome::Failed(out.detail.clone()),
                    _ => ActionOutcome::NotExecuted(out.detail.clone()),
                };
                issued_ns = out.issued_ns;
                (outcome, out.detail)
            }
        },
        Action::StartFallback(other) | Action::StartInstance(other) => {
            match unit_ops::start_verified(&conn, other).await {
                Ok(note) => (ActionOutcome::Done, note),
                Err(e) => (ActionOutcome::Failed(e), String::new()),
            }
        }
        Action::StopFallback(other) | Action::StopInstance(other) => {
            job(unit_ops::run_job(&conn, "stop", other).await)
        }
        Action::Scale { limits, .. } => {
            let limits = Limits {
                cpu_quota_per_sec_us: limits.cpu_quota_percent.map(|p| p * 10_000),
                memory_max: limits.memory_max,
                memory_high: limits.memory_high,
                tasks_max: limits.tasks_max,
            };
            match unit_ops::set_limits(&conn, &target.name, limits).await {
                // Read back from the cgroup: accepted by systemd is not enforced by the kernel.
                Ok(()) => match target.cgroup_dir.as_deref() {
                    Some(dir) => match crate::act::verify::limits(dir, &limits) {
                        Ok(note) => (ActionOutcome::Done, note),
                        Err(e) => (ActionOutcome::Failed(e), String::new()),
                    },
                    None => (ActionOutcome::Done, String::new()),
                },
                Err(e) => (ActionOutcome::Failed(e), String::new()),
            }
        }
        Action::Freeze | Action::Thaw => {
            let frozen = matches!(action, Action::Freeze);
            let dir = target.cgroup_dir.as_deref();
            match unit_ops::freeze(&conn, &target.name, frozen, dir).await {
                Ok(note) => (ActionOutcome::Done, note),
                Err(e) => (ActionOutcome::Failed(e), String::new()),
            }
        }
        Action::Quarantine | Action::Release | Action::Escalate { .. } => (
            ActionOutcome::NotExecuted("handled by the engine".into()),
            String::new(),
        ),
    };
    Finished {
        unit: target.unit,
        action,
        outcome,
        note,
        took: started.elapsed(),
        issued_ns,
        slot: None,
        admitted: None,
    }
}

/// [`execute`] behind the fleet's gate (fleet mode): a disruptive action first takes a slot
/// and holds it through the action and the settle period; a held action is not executed.
pub async fn execute_gated(
    gate: Option<Arc<Gate>>,
    live: bool,
    conn: zbus::Connection,
    target: Target,
    action: Action,
) -> Finished {
    let Some(gate) = gate else {
        return execute(conn, target, action).await;
    };
    match admit(&gate, &target.name, &action, live).await {
        Err(why) => held(target.unit, action, why),
        Ok(None) => execute(conn, target, action).await,
        Ok(Some(permit)) => {
            let mut done = execute(conn, target, action).await;
            done.slot = Some(permit.slot.clone());
            let ok = done.outcome == ActionOutcome::Done;
            tokio::spawn(permit.finish(ok, done.action.describe()));
            done
        }
    }
}

/// A network quarantine behind the fleet's gate: it needs a slot like any disruptive action.
/// The engine applies it when this comes back admitted ([`Finished::admitted`]).
pub async fn admit_quarantine(gate: Arc<Gate>, live: bool, unit: u32, name: String) -> Finished {
    let action = Action::Quarantine;
    match admit(&gate, &name, &action, live).await {
        Err(why) => held(unit, action, why),
        Ok(permit) => Finished {
            admitted: Some(Admitted { name, permit }),
            ..Finished::now(unit, action, ActionOutcome::NotExecuted("admitted".into()))
        },
    }
}

/// Asks the gate; a permit whose lease may have run out is given back and the action held.
async fn admit(
    gate: &Arc<Gate>,
    name: &str,
    action: &Action,
    live: bool,
) -> Result<Option<Permit>, String> {
    match gate.before(name, action.name(), live).await {
        Err(Held(why)) => Err(why),
        Ok(Some(permit)) if !permit.valid() => {
            tokio::spawn(permit.finish(false, action.describe()));
            Err("the slot's lease may have run out".into())
        }
        Ok(permit) => Ok(permit),
    }
}

fn held(unit: u32, action: Action, why: String) -> Finished {
    Finished::now(
        unit,
        action,
        ActionOutcome::NotExecuted(format!("{HELD_BY_FLEET}: {why}")),
    )
}
