//! What goes in and out of the policy besides problems: the unit's systemd facts, actions,
//! decisions and outcomes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Facts about the unit that come from systemd at the time of a problem.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnitContext {
    /// A stop job is pending or ran: the exit was asked for by systemd or an operator.
    pub stopping: bool,
    /// The unit's `StartLimitBurst=` / `StartLimitIntervalSec=`.
    pub start_limit: StartLimit,
}

/// systemd refuses a start once `burst` starts happened within `interval` (start-limit-hit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartLimit {
    /// 0: no limit.
    pub burst: u32,
    /// Zero: no limit.
    pub interval: Duration,
}

impl StartLimit {
    pub fn is_limited(&self) -> bool {
        self.burst > 0 && !self.interval.is_zero()
    }
}

/// Resource limits for one scale step, from the bases configured in `[unit.remediation]`.
/// `None`: no base configured; the engine scales the value systemd had when the agent started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaledLimits {
    /// `CPUQuota=` in percent of one CPU.
    pub cpu_quota_percent: Option<u64>,
    /// `MemoryMax=` in bytes.
    pub memory_max: Option<u64>,
    /// `MemoryHigh=` in bytes.
    pub memory_high: Option<u64>,
    /// `TasksMax=`.
    pub tasks_max: Option<u64>,
}

/// One thing the engine should do. Every action's outcome goes back through
/// [`super::Policy::on_outcome`], exactly once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Graceful restart through systemd (stop within the unit's own stop timeout, then start).
    Restart,
    /// Start the unit's declared fallback unit.
    StartFallback(String),
    /// Stop the fallback: the primary is healthy again.
    StopFallback(String),
    /// Set the unit's resource limits at runtime (`SetUnitProperties`, runtime only):
    /// `factor` × the base; step 0 is the base itself.
    Scale {
        step: u32,
        factor: f64,
        limits: ScaledLimits,
    },
    /// Start one more instance of a template unit (`worker@3.service`).
    StartInstance(String),
    /// Stop an instance started by [`Action::StartInstance`].
    StopInstance(String),
    /// Freeze the unit's processes (`FreezeUnit` or the cgroup freezer).
    Freeze,
    Thaw,
    /// Network quarantine: drop the unit's traffic (loopback too, unless [agent] quarantine_allow_loopback).
    Quarantine,
    /// End the network quarantine.
    Release,
    /// Raise an alert; the policy stops acting on the unit until an operator resets it.
    Escalate {
        reason: String,
    },
}

impl Action {
    /// The action's name in logs, metrics labels and the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::StartFallback(_) => "start_fallback",
            Action::StopFallback(_) => "stop_fallback",
            Action::Scale { .. } => "scale",
            Action::StartInstance(_) => "start_instance",
            Action::StopInstance(_) => "stop_instance",
            Action::Freeze => "freeze",
            Action::Thaw => "thaw",
            Action::Quarantine => "quarantine",
            Action::Release => "release",
            Action::Escalate { .. } => "escalate",
        }
    }

    /// "restart", "start_fallback web-fallback.service", "scale ×2.25 (step 2)".
    pub fn describe(&self) -> String {
        match self {
            Action::StartFallback(unit)
            | Action::StopFallback(unit)
            | Action::StartInstance(unit)
            | Action::StopInstance(unit) => format!("{} {unit}", self.name()),
            Action::Scale { step, factor, .. } => format!("scale ×{factor} (step {step})"),
            _ => self.name().to_owned(),
        }
    }
}

/// How an action ended, as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionOutcome {
    Done,
    Failed(String),
    /// The engine chose not to execute it (dry run, the unit is being stopped, ...): it counts
    /// neither as a success nor as a failure, nor against any budget.
    NotExecuted(String),
}

/// How a `NotExecuted` reason begins when fleet mode held the action (no slot within
/// `slot_wait`, or etcd away): unlike other skips, the policy tries it again.
pub const HELD_BY_FLEET: &str = "held by the fleet";

impl ActionOutcome {
    pub fn held_by_fleet(&self) -> bool {
        matches!(self, ActionOutcome::NotExecuted(why) if why.starts_with(HELD_BY_FLEET))
    }

    pub fn describe(&self) -> String {
        match self {
            ActionOutcome::Done => "done".to_owned(),
            ActionOutcome::Failed(why) => format!("failed: {why}"),
            ActionOutcome::NotExecuted(why) => format!("not executed: {why}"),
        }
    }
}

/// What the policy decided about one unit, with the reason in plain words for the audit log.
/// `actions` may be empty: the reason then says why nothing is done.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub unit: u32,
    /// What prompted it: a problem kind's name ("crash") or a timer ("scheduled", "breaker",
    /// "quarantine expired", "operator").
    pub cause: String,
    pub actions: Vec<Action>,
    pub reason: String,
}

impl Decision {
    pub(super) fn nothing(unit: u32, cause: &str, reason: impl Into<String>) -> Decision {
        Decision {
            unit,
            cause: cause.to_owned(),
            actions: Vec::new(),
            reason: reason.into(),
        }
    }

    /// "restart, start_fallback web-fallback.service", or "none".
    pub fn actions_summary(&self) -> String {
        if self.actions.is_empty() {
            return "none".to_owned();
        }
        let names: Vec<String> = self.actions.iter().map(Action::describe).collect();
        names.join(", ")
    }
}
