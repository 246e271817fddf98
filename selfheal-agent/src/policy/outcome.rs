//! What comes back: the engine's outcome of each action, and the detectors' "problem cleared".
//! Follow-up actions (the next attempt after a failure) are scheduled here and handed out by
//! the next [`Policy::tick`].

use std::time::Instant;

use super::{
    Policy, Unit,
    action::{Action, ActionOutcome},
    backoff,
    config::PolicyConfig,
    explain::human,
    ladder::{self, Env},
    unit::{Isolation, LastAction, Phase, UnitSpec, UnitState, is_event},
};
use crate::detect::ProblemKind;

/// A recovery failed.
pub(super) fn record_failure(state: &mut UnitState, now: Instant, config: &PolicyConfig) {
    state.consecutive_failures += 1;
    state.breaker.on_failure(now, &config.breaker);
}

/// A recovery was verified: the incident is over.
pub(super) fn record_success(state: &mut UnitState, now: Instant, config: &PolicyConfig) {
    state.incident = None;
    state.consecutive_failures = 0;
    state.breaker.on_success(now, &config.breaker);
    state.fallback.primary_verified = true;
}

/// Our action ran: verify it the way the incident's kind allows.
fn verify(state: &mut UnitState, now: Instant, config: &PolicyConfig) {
    let Some(incident) = &mut state.incident else {
        return;
    };
    incident.phase = if incident.cleared || is_event(&incident.kind) {
        Phase::Settling {
            until: now + config.cooldown,
        }
    } else {
        Phase::Verifying {
            since: now,
            deadline: now + config.recovery_timeout,
        }
    };
}

/// The incident goes on after a failed attempt; the next step waits for the next tick.
fn carry_on(spec: &UnitSpec, state: &mut UnitState, env: &mut Env<'_>, now: Instant) {
    let Some(kind) = state.incident.as_ref().map(|i| i.kind.clone()) else {
        return;
    };
    let step = ladder::next_step(spec, state, &kind, env, now);
    ladder::commit(state, step, now, false);
}

/// Whether the outcome of `ran` is the outcome of the in-flight `sent`. The engine completes a
/// scale step's limits with what systemd had (those the config gives no base for) before it runs
/// it, so a scale step is known by its step, not its limits.
fn answers(sent: &Action, ran: &Action) -> bool {
    match (sent, ran) {
        (Action::Scale { step: sent, .. }, Action::Scale { step: ran, .. }) => sent == ran,
        _ => sent == ran,
    }
}

/// The fleet held the action: neither a failure nor an attempt, but the problem is still
/// there, so once the whole batch is back the same action is scheduled again after a backoff
/// that grows with each hold (up to the longest backoff).
fn retry_held(state: &mut UnitState, env: &mut Env<'_>, action: &Action, now: Instant) {
    if !state.in_flight.is_empty() {
        return;
    }
    let delay = backoff::delay(&env.config.backoff, state.backoff_level, env.jitter);
    let Some(incident) = state
        .incident
        .as_mut()
        .filter(|i| matches!(i.phase, Phase::Acting))
    else {
        return;
    };
    state.backoff_level = state.backoff_level.saturating_add(1);
    incident.phase = Phase::Scheduled {
        due: now + delay,
        actions: vec![action.clone()],
        reason: format!(
            "{} was held by the fleet: trying again in {}",
            action.describe(),
            human(delay)
        ),
    };
}

fn set_idle(state: &mut UnitState) {
    if let Some(incident) = &mut state.incident {
        incident.phase = Phase::Idle;
    }
}

/// Applies one outcome to the unit (also used to save in-flight actions as done).
pub(super) fn apply_outcome(
    spec: &UnitSpec,
    state: &mut UnitState,
    env: &mut Env<'_>,
    action: &Action,
    outcome: &ActionOutcome,
    now: Instant,
) {
    let config = env.config;
    if let Some(i) = state.in_flight.iter().position(|a| answers(a, action)) {
        state.in_flight.remove(i);
    }
    state.last_action = Some(LastAction {
        at: now,
        action: action.describe(),
        result: outcome.describe(),
    });
    let acting = state
        .incident
        .as_ref()
        .is_some_and(|i| matches!(i.phase, Phase::Acting));
    match (action, outcome) {
        (Action::Restart, ActionOutcome::NotExecuted(_)) => {
            // The attempt was not made: it is not used up. A hold keeps the backoff it raised,
            // so each retry of a held restart waits longer.
            if let Some(incident) = &mut state.incident {
                incident.restart_attempts = incident.restart_attempts.saturating_sub(1);
            }
            if outcome.held_by_fleet() {
                retry_held(state, env, action, now);
            } else {
                state.backoff_level = state.backoff_level.saturating_sub(1);
            }
        }
        (
            Action::Scale { .. } | Action::Freeze | Action::Quarantine,
            ActionOutcome::NotExecuted(_),
        ) if outcome.held_by_fleet() => {
            retry_held(state, env, action, now);
        }
        (Action::Restart, ActionOutcome::Done) => {
            state.restarts.record(now);
            verify(state, now, config);
        }
        (Action::Restart, ActionOutcome::Failed(_)) => {
            state.restarts.record(now);
            record_failure(state, now, config);
            carry_on(spec, state, env, now);
        }
        (Action::Scale { step, .. }, ActionOutcome::Done) => {
            state.scale.step = *step;
            state.scale.changed_at = Some(now);
            if acting {
                verify(state, now, config);
            }
        }
        (Action::Scale { .. }, ActionOutcome::Failed(_)) if acting => {
            record_failure(state, now, config);
            carry_on(spec, state, env, now);
        }
        (Action::StartFallback(_), ActionOutcome::Done) => state.fallback.running = true,
        (Action::StartFallback(_), ActionOutcome::Failed(why)) => {
            state.fallback.failed = Some(why.clone());
            carry_on(spec, state, env, now);
        }
        (Action::Freeze | Action::Quarantine, ActionOutcome::Done) => {
            let isolation = state.isolation.get_or_insert(Isolation {
                frozen: false,
                quarantined: false,
                since: now,
                until: now + config.quarantine_duration,
            });
            match action {
                Action::Freeze => isolation.frozen = true,
                _ => isolation.quarantined = true,
            }
            // Contained, not healed: the incident ends without a verdict.
            state.incident = None;
        }
        (Action::Freeze | Action::Quarantine, ActionOutcome::Failed(why)) => {
            if let Some(incident) = &mut state.incident {
                incident.isolation_failed = Some(why.clone());
            }
            if state.in_flight.is_empty() && state.isolation.is_none() {
                record_failure(state, now, config);
                carry_on(spec, state, env, now);
            }
        }
        // Not executed, bookkeeping actions, or a failure another outcome of the batch
        // already dealt with: nothing beyond the rule below.
        _ => {}
    }
    // The whole batch is back and nothing moved the incident on: it waits.
    let still_acting = state
        .incident
        .as_ref()
        .is_some_and(|i| matches!(i.phase, Phase::Acting));
    if state.in_flight.is_empty() && still_acting {
        set_idle(state);
    }
}

impl Policy {
    /// The engine's outcome of one action it was handed (each exactly once).
    pub fn on_outcome(
        &mut self,
        unit: u32,
        action: &Action,
        outcome: &ActionOutcome,
        now: Instant,
    ) {
        self.wake(unit);
        let Policy {
            config,
            units,
            jitter,
            ..
        } = self;
        let Some(Unit { spec, state, .. }) = usize::try_from(unit)
            .ok()
            .and_then(|i| units.get_mut(i))
            .filter(|u| !u.retired)
        else {
            return;
        };
        let mut env = Env { config, jitter };
        apply_outcome(spec, state, &mut env, action, outcome, now);
    }

    /// A detector says `kind` is gone from the unit.
    pub fn on_cleared(&mut self, unit: u32, kind: &ProblemKind, now: Instant) {
        self.wake(unit);
        let config = &self.config;
        let Some(Unit { state, .. }) = usize::try_from(unit)
            .ok()
            .and_then(|i| self.units.get_mut(i))
        else {
            return;
        };
        if state.held.as_ref().is_some_and(|h| h.kind == *kind) {
            state.held = None;
        }
        let Some(incident) = &mut state.incident else {
            return;
        };
        if incident.kind != *kind {
            return;
        }
        match incident.phase {
            Phase::Verifying { since, .. } => {
                let until = since + config.cooldown;
                if until <= now {
                    record_success(state, now, config);
                } else {
                    incident.phase = Phase::Settling { until };
                }
            }
            Phase::Acting => incident.cleared = true,
            // Gone before we acted (systemd restarted it, the dependency came back).
            Phase::Scheduled { .. } | Phase::Idle => {
                state.incident = None;
                state.breaker.restart_credit(now);
            }
            Phase::Settling { .. } => {}
        }
    }
}

/// For explanations: "last action: restart at 12:01:05 UTC (done)".
pub(super) fn describe_last(last: &LastAction, when: &str) -> String {
    format!("last action: {} at {when} ({})", last.action, last.result)
}
