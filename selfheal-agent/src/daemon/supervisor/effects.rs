//! What the supervisor asks the world to do: actions for the actuator, records for history,
//! the audit log and metrics, and whether the policy's state changed (to be saved). Plain
//! owned data, so the supervisor stays pure and its tests can read every effect.

use std::time::Duration;

use crate::{
    detect::ProblemKind,
    policy::{Action, ActionOutcome},
    report::history::Event,
};

/// One action for the actuator. Every one comes back as an [`Input::Outcome`] exactly once.
///
/// [`Input::Outcome`]: super::Input::Outcome
#[derive(Clone, Debug, PartialEq)]
pub struct Work {
    pub unit: u32,
    pub name: String,
    pub action: Action,
    /// The problem the action answers, named in escalation alerts and metrics; `None` for
    /// the policy's follow-ups and operator commands.
    pub kind: Option<ProblemKind>,
}

/// An audit log line, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditNote {
    Decision {
        unit: String,
        problem: String,
        evidence: String,
        actions: String,
        reason: String,
        dry_run: bool,
    },
    Action {
        unit: String,
        action: String,
        outcome: &'static str,
        detail: String,
        duration_ms: u64,
        /// CLOCK_MONOTONIC (ns) when the systemd call was sent.
        issued_ns: Option<u64>,
        /// Fleet mode: the slot the action held.
        slot: Option<crate::fleet::SlotRecord>,
    },
}

/// A metric to move.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricNote {
    ProblemDetected {
        unit: String,
        kind: ProblemKind,
    },
    ActionFinished {
        unit: String,
        action: &'static str,
        result: &'static str,
    },
    ProbeFinished {
        unit: String,
        probe: String,
        ok: bool,
        latency: Duration,
    },
}

#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub run: Vec<Work>,
    /// History entries, by unit index; the executor also logs each one's summary.
    pub history: Vec<(u32, Event)>,
    pub audit: Vec<AuditNote>,
    pub metrics: Vec<MetricNote>,
    /// The policy's state changed: save it.
    pub save: bool,
}

impl Effects {
    pub(super) fn note(&mut self, unit: u32, message: String) {
        self.history.push((unit, Event::Unit { message }));
    }
}

/// "done", "failed" or "skipped" (not executed), as history, audit and metrics spell it.
pub fn result_name(outcome: &ActionOutcome) -> &'static str {
    match outcome {
        ActionOutcome::Done => "done",
        ActionOutcome::Failed(_) => "failed",
        ActionOutcome::NotExecuted(_) => "skipped",
    }
}
