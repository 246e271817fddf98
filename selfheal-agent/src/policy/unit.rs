//! What the policy knows and remembers about one unit.

use std::time::{Duration, Instant};

use super::{
    action::{Action, StartLimit},
    breaker::Breaker,
    budget::RestartHistory,
    remediation::Remediation,
};
use crate::{config::RestartPolicy, detect::ProblemKind};

/// A unit as configured: what the engine hands the policy at start and on reload.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitSpec {
    pub name: String,
    /// Governs crash and clean exit only: `never` watches, `on-failure` ignores clean exits.
    pub restart: RestartPolicy,
    /// The least delay before a restart (backoff may wait longer).
    pub restart_delay: Duration,
    pub remediation: Remediation,
}

impl UnitSpec {
    /// Fills an index no unit was given (the engine gives them in order, so only a bug leaves
    /// one); it is retired at once.
    pub(super) fn placeholder() -> Self {
        Self {
            name: String::new(),
            restart: RestartPolicy::Never,
            restart_delay: Duration::ZERO,
            remediation: Remediation::default(),
        }
    }
}

/// One incident: a problem and the recovery attempts it took, until it is verified gone,
/// escalated, contained, or the unit is stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub kind: ProblemKind,
    pub started: Instant,
    /// Restarts in this incident (at most `backoff.max_attempts`).
    pub restart_attempts: u32,
    /// The detector said the problem cleared while our action was still running.
    pub cleared: bool,
    /// An isolation of this incident failed: the ladder moves past `isolate` instead of
    /// retrying it at once, forever.
    pub isolation_failed: Option<String>,
    pub phase: Phase,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Nothing of ours pending: waiting on the circuit, the fallback, a detector, an operator.
    Idle,
    /// Actions due at `due` (a backoff delay, a start limit, a budget for a trial).
    Scheduled {
        due: Instant,
        actions: Vec<Action>,
        reason: String,
    },
    /// Handed to the engine; outcomes pending.
    Acting,
    /// A condition-type problem must clear before `deadline`.
    Verifying { since: Instant, deadline: Instant },
    /// The problem is gone (or, for crash/exit, the unit came back): it must not return before
    /// `until` (the cooldown after the action) for the recovery to count as a success.
    Settling { until: Instant },
}

/// Crash and exit are events, with no "cleared" signal: a restart is verified by the unit not
/// failing again within the cooldown. Every other kind is a condition that a detector clears.
pub fn is_event(kind: &ProblemKind) -> bool {
    matches!(kind, ProblemKind::Crash | ProblemKind::Exit)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalation {
    pub at: Instant,
    pub reason: String,
    /// The kind of the incident that escalated, so status and /health can name it.
    pub problem: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fallback {
    pub running: bool,
    /// Why it failed to start; the ladder skips it until the circuit closes.
    pub failed: Option<String>,
    /// The primary proved healthy since the fallback started (a verified recovery, or the
    /// circuit closing from half-open): the fallback may stop. An operator's reset alone does
    /// not prove it.
    pub primary_verified: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScaleState {
    pub step: u32,
    /// The last step change (or attempt at one): step-down waits for a healthy period after it.
    pub changed_at: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Isolation {
    pub frozen: bool,
    pub quarantined: bool,
    pub since: Instant,
    pub until: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastAction {
    pub at: Instant,
    pub action: String,
    /// "in progress", "done", "failed: ...", "not executed: ...".
    pub result: String,
}

/// The problem of a unit held back by the storm breaker, to act on once it is calm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub kind: ProblemKind,
    pub since: Instant,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitState {
    pub restarts: RestartHistory,
    /// Failed recoveries since the last success (forgotten after the stable period).
    pub consecutive_failures: u32,
    /// Recovery attempts since the unit was last stable: the exponent of the backoff.
    pub backoff_level: u32,
    pub breaker: Breaker,
    pub incident: Option<Incident>,
    pub escalation: Option<Escalation>,
    pub fallback: Fallback,
    pub scale: ScaleState,
    pub isolation: Option<Isolation>,
    pub last_problem: Option<(Instant, ProblemKind)>,
    pub last_action: Option<LastAction>,
    pub held: Option<Held>,
    /// Actions handed to the engine whose outcome has not come back.
    pub in_flight: Vec<Action>,
    /// From the last [`super::UnitContext`]; systemd's, not ours, so not persisted.
    pub start_limit: StartLimit,
}

impl UnitState {
    /// Under remediation, for the storm breaker: something of ours is running, being verified,
    /// or scheduled within `horizon` (a trial waiting an hour for the budget does not count).
    pub fn is_active(&self, now: Instant, horizon: Duration) -> bool {
        !self.in_flight.is_empty()
            || self.incident.as_ref().is_some_and(|i| match i.phase {
                Phase::Idle => false,
                Phase::Scheduled { due, .. } => due <= now + horizon,
                Phase::Acting | Phase::Verifying { .. } | Phase::Settling { .. } => true,
            })
    }
}
