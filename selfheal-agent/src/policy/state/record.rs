//! The stored form of one unit's state, and the conversions to and from it.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Clock;
use crate::detect::ProblemKind;
use crate::policy::{
    action::Action,
    breaker::{Breaker, Circuit},
    budget::RestartHistory,
    unit::{
        Escalation, Fallback, Held, Incident, Isolation, LastAction, Phase, ScaleState, UnitState,
    },
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnitRecord {
    restarts_ms: Vec<i64>,
    consecutive_failures: u32,
    backoff_level: u32,
    circuit: CircuitRecord,
    escalation: Option<EscalationRecord>,
    fallback_running: bool,
    fallback_failed: Option<String>,
    fallback_primary_verified: bool,
    scale_step: u32,
    scale_changed_ms: Option<i64>,
    isolation: Option<IsolationRecord>,
    last_problem: Option<ProblemRecord>,
    last_action: Option<LastActionRecord>,
    held: Option<ProblemRecord>,
    incident: Option<IncidentRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
enum CircuitRecord {
    Closed {
        failures: u32,
    },
    Open {
        since_ms: i64,
        reason: String,
    },
    HalfOpen {
        since_ms: i64,
        successes: u32,
        credit_from_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationRecord {
    at_ms: i64,
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IsolationRecord {
    frozen: bool,
    quarantined: bool,
    since_ms: i64,
    until_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProblemRecord {
    kind: String,
    at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LastActionRecord {
    action: String,
    result: String,
    at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentRecord {
    kind: String,
    started_ms: i64,
    restart_attempts: u32,
    cleared: bool,
    phase: PhaseRecord,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case", deny_unknown_fields)]
enum PhaseRecord {
    Idle,
    Scheduled {
        due_ms: i64,
        actions: Vec<Action>,
        reason: String,
    },
    Verifying {
        since_ms: i64,
        deadline_ms: i64,
    },
    Settling {
        until_ms: i64,
    },
}

impl UnitRecord {
    pub(super) fn from_state(s: &UnitState, c: &Clock) -> Self {
        let problem = |kind: &ProblemKind, at: Instant| ProblemRecord {
            kind: kind.name().to_owned(),
            at_ms: c.ms(at),
        };
        Self {
            restarts_ms: s.restarts.times().iter().map(|t| c.ms(*t)).collect(),
            consecutive_failures: s.consecutive_failures,
            backoff_level: s.backoff_level,
            circuit: match &s.breaker.circuit {
                Circuit::Closed { failures } => CircuitRecord::Closed {
                    failures: *failures,
                },
                Circuit::Open { since, reason } => CircuitRecord::Open {
                    since_ms: c.ms(*since),
                    reason: reason.clone(),
                },
                Circuit::HalfOpen {
                    since,
                    successes,
                    credit_from,
                } => CircuitRecord::HalfOpen {
                    since_ms: c.ms(*since),
                    successes: *successes,
                    credit_from_ms: c.ms(*credit_from),
                },
            },
            escalation: s.escalation.as_ref().map(|e| EscalationRecord {
                at_ms: c.ms(e.at),
                reason: e.reason.clone(),
                problem: e.problem.clone(),
            }),
            fallback_running: s.fallback.running,
            fallback_failed: s.fallback.failed.clone(),
            fallback_primary_verified: s.fallback.primary_verified,
            scale_step: s.scale.step,
            scale_changed_ms: s.scale.changed_at.map(|t| c.ms(t)),
            isolation: s.isolation.as_ref().map(|i| IsolationRecord {
                frozen: i.frozen,
                quarantined: i.quarantined,
                since_ms: c.ms(i.since),
                until_ms: c.ms(i.until),
            }),
            last_problem: s.last_problem.as_ref().map(|(at, kind)| problem(kind, *at)),
            last_action: s.last_action.as_ref().map(|l| LastActionRecord {
                action: l.action.clone(),
                result: l.result.clone(),
                at_ms: c.ms(l.at),
            }),
            held: s.held.as_ref().map(|h| problem(&h.kind, h.since)),
            incident: s.incident.as_ref().map(|i| IncidentRecord {
                kind: i.kind.name().to_owned(),
                started_ms: c.ms(i.started),
                restart_attempts: i.restart_attempts,
                cleared: i.cleared,
                phase: match &i.phase {
                    // In flight at the save: stored as done before this runs.
                    Phase::Idle | Phase::Acting => PhaseRecord::Idle,
                    Phase::Scheduled {
                        due,
                        actions,
                        reason,
                    } => PhaseRecord::Scheduled {
                        due_ms: c.ms(*due),
                        actions: actions.clone(),
                        reason: reason.clone(),
                    },
                    Phase::Verifying { since, deadline } => PhaseRecord::Verifying {
                        since_ms: c.ms(*since),
                        deadline_ms: c.ms(*deadline),
                    },
                    Phase::Settling { until } => PhaseRecord::Settling {
                        until_ms: c.ms(*until),
                    },
                },
            }),
        }
    }

    pub(super) fn into_state(self, c: &Clock) -> UnitState {
        let at = |ms: i64| c.at(ms);
        UnitState {
            restarts: RestartHistory::from_times(self.restarts_ms.into_iter().map(at).collect()),
            consecutive_failures: self.consecutive_failures,
            backoff_level: self.backoff_level,
            breaker: Breaker {
                circuit: match self.circuit {
                    CircuitRecord::Closed { failures } => Circuit::Closed { failures },
                    CircuitRecord::Open { since_ms, reason } => Circuit::Open {
                        since: at(since_ms),
                        reason,
                    },
                    CircuitRecord::HalfOpen {
                        since_ms,
                        successes,
                        credit_from_ms,
                    } => Circuit::HalfOpen {
                        since: at(since_ms),
                        successes,
                        credit_from: at(credit_from_ms),
                    },
                },
            },
            incident: self.incident.map(|i| Incident {
                kind: ProblemKind::from_name(&i.kind),
                started: at(i.started_ms),
                restart_attempts: i.restart_attempts,
                cleared: i.cleared,
                isolation_failed: None,
                phase: match i.phase {
                    PhaseRecord::Idle => Phase::Idle,
                    PhaseRecord::Scheduled {
                        due_ms,
                        actions,
                        reason,
                    } => Phase::Scheduled {
                        due: at(due_ms),
                        actions,
                        reason,
                    },
                    PhaseRecord::Verifying {
                        since_ms,
                        deadline_ms,
                    } => Phase::Verifying {
                        since: at(since_ms),
                        deadline: at(deadline_ms),
                    },
                    PhaseRecord::Settling { until_ms } => Phase::Settling {
                        until: at(until_ms),
                    },
                },
            }),
            escalation: self.escalation.map(|e| Escalation {
                at: at(e.at_ms),
                reason: e.reason,
                problem: e.problem,
            }),
            fallback: Fallback {
                running: self.fallback_running,
                failed: self.fallback_failed,
                primary_verified: self.fallback_primary_verified,
            },
            scale: ScaleState {
                step: self.scale_step,
                changed_at: self.scale_changed_ms.map(at),
            },
            isolation: self.isolation.map(|i| Isolation {
                frozen: i.frozen,
                quarantined: i.quarantined,
                since: at(i.since_ms),
                until: at(i.until_ms),
            }),
            last_problem: self
                .last_problem
                .map(|p| (at(p.at_ms), ProblemKind::from_name(&p.kind))),
            last_action: self.last_action.map(|l| LastAction {
                at: at(l.at_ms),
                action: l.action,
                result: l.result,
            }),
            held: self.held.map(|h| Held {
                kind: ProblemKind::from_name(&h.kind),
                since: at(h.at_ms),
            }),
            in_flight: Vec::new(),
            start_limit: Default::default(),
        }
    }
}
