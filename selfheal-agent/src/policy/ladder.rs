//! Walking a unit's ladder: the first rung that can act answers the problem; the ones passed on
//! the way say why in the reason.

use std::time::Instant;

use super::{
    action::Action,
    backoff::{self, Jitter},
    breaker::CircuitState,
    config::PolicyConfig,
    explain::human,
    remediation::Strategy,
    scale,
    unit::{Escalation, Incident, LastAction, Phase, UnitSpec, UnitState},
};
use crate::detect::ProblemKind;

/// What the policy needs besides the unit.
pub struct Env<'a> {
    pub config: &'a PolicyConfig,
    pub jitter: &'a mut Jitter,
}

/// The answer to a problem, before it is applied to the unit.
#[derive(Debug)]
pub enum Step {
    Act {
        due: Instant,
        actions: Vec<Action>,
        reason: String,
    },
    Hold(String),
}

enum Rung {
    Act(Step),
    Hold(String),
    Skip(String),
}

/// The next step for the unit's open incident, facing `kind`.
pub fn next_step(
    spec: &UnitSpec,
    state: &mut UnitState,
    kind: &ProblemKind,
    env: &mut Env<'_>,
    now: Instant,
) -> Step {
    let ladder = spec.remediation.ladder(kind);
    if ladder.is_empty() {
        return Step::Hold(format!(
            "no strategy is configured for {}: watching only",
            kind.name()
        ));
    }
    let mut passed = Vec::new();
    for rung in ladder {
        match try_rung(*rung, spec, state, env, now, &passed) {
            Rung::Act(step) => return step,
            Rung::Hold(reason) => return Step::Hold(reason),
            Rung::Skip(why) => passed.push(format!("{}: {why}", rung.name())),
        }
    }
    let tried = passed.join("; ");
    if state.consecutive_failures > env.config.escalate_after {
        let reason = format!(
            "{} failed recoveries in a row and nothing left to try ({tried})",
            state.consecutive_failures
        );
        return escalate(reason, now);
    }
    Step::Hold(format!("nothing left to try ({tried})"))
}

fn escalate(reason: String, now: Instant) -> Step {
    Step::Act {
        due: now,
        actions: vec![Action::Escalate {
            reason: reason.clone(),
        }],
        reason: format!("escalating: {reason}"),
    }
}

/// "restart: budget spent; " before the reason of the rung that acted.
fn prefixed(passed: &[String], reason: String) -> String {
    if passed.is_empty() {
        reason
    } else {
        format!("{}; {reason}", passed.join("; "))
    }
}

fn try_rung(
    rung: Strategy,
    spec: &UnitSpec,
    state: &mut UnitState,
    env: &mut Env<'_>,
    now: Instant,
    passed: &[String],
) -> Rung {
    let config = env.config;
    let too_many_failures = state.consecutive_failures > config.escalate_after;
    let failures = || format!("{} failed recoveries in a row", state.consecutive_failures);
    match rung {
        Strategy::Restart => {
            match state.breaker.state() {
                CircuitState::Open => return Rung::Skip("the circuit is open".into()),
                CircuitState::HalfOpen => {
                    return Rung::Skip(
                        "the circuit is half-open: only its trial restarts the unit".into(),
                    );
                }
                CircuitState::Closed => {}
            }
            let attempts = state.incident.as_ref().map_or(0, |i| i.restart_attempts);
            let max = config.backoff.max_attempts;
            if attempts >= max {
                return Rung::Skip(format!(
                    "{attempts} of {max} attempts used in this incident"
                ));
            }
            if too_many_failures {
                return Rung::Skip(failures());
            }
            let (max_restarts, window) = (config.budget.max_restarts, config.budget.window);
            let used = state.restarts.used(now, window);
            if used >= max_restarts {
                return Rung::Skip(format!(
                    "{used} of {max_restarts} restarts used in the last {}",
                    human(window)
                ));
            }
            let delay =
                backoff::before_attempt(&config.backoff, attempts, state.backoff_level, env.jitter)
                    .max(spec.restart_delay);
            let (due, when) = match restart_time(state, env.config, now, now + delay) {
                Ok(at) if at > now + delay => (at, start_limit_note(state, at, now)),
                Ok(_) if delay.is_zero() => (now, "now (first attempt of the incident)".into()),
                Ok(_) => (now + delay, format!("in {} (backoff)", human(delay))),
                Err(why) => return Rung::Skip(why),
            };
            state.backoff_level += 1;
            if let Some(incident) = &mut state.incident {
                incident.restart_attempts += 1;
            }
            let reason = format!("restart attempt {} of {max} {when}", attempts + 1);
            Rung::Act(Step::Act {
                due,
                actions: vec![Action::Restart],
                reason: prefixed(passed, reason),
            })
        }
        Strategy::Fallback => {
            let Some(name) = &spec.remediation.fallback else {
                return Rung::Skip("no fallback unit declared".into());
            };
            if let Some(why) = &state.fallback.failed {
                return Rung::Skip(format!("{name} failed to start ({why})"));
            }
            if state.fallback.running {
                let circuit = state.breaker.state().name();
                return Rung::Hold(prefixed(
                    passed,
                    format!("fallback {name} is running; the circuit is {circuit}"),
                ));
            }
            let why = if passed.is_empty() {
                "the ladder falls back".to_owned()
            } else {
                passed.join("; ")
            };
            state.breaker.trip(now, why);
            state.fallback.primary_verified = false;
            Rung::Act(Step::Act {
                due: now,
                actions: vec![Action::StartFallback(name.clone())],
                reason: prefixed(passed, format!("circuit open; starting fallback {name}")),
            })
        }
        Strategy::Scale => {
            let (step, max) = (
                state.scale.step,
                scale::max_step(&config.scale, &spec.remediation),
            );
            if step >= max {
                let factor = scale::factor(&config.scale, step);
                return Rung::Skip(format!("already at the largest step ({step}, ×{factor})"));
            }
            if too_many_failures {
                return Rung::Skip(failures());
            }
            let actions = scale::step_actions(&config.scale, &spec.remediation, step, step + 1);
            let factor = scale::factor(&config.scale, step + 1);
            Rung::Act(Step::Act {
                due: now,
                actions,
                reason: prefixed(
                    passed,
                    format!("scale up to step {} of {max} (×{factor})", step + 1),
                ),
            })
        }
        Strategy::Isolate => {
            if let Some(isolation) = &state.isolation {
                let left = isolation.until.saturating_duration_since(now);
                return Rung::Hold(format!("isolated for {} more", human(left)));
            }
            if let Some(why) = state
                .incident
                .as_ref()
                .and_then(|i| i.isolation_failed.as_ref())
            {
                return Rung::Skip(format!("isolation failed ({why})"));
            }
            let remediation = &spec.remediation;
            let mut actions = Vec::new();
            if remediation.freeze {
                actions.push(Action::Freeze);
            }
            if remediation.network_quarantine {
                actions.push(Action::Quarantine);
            }
            let reason = format!("isolating for {}", human(config.quarantine_duration));
            Rung::Act(Step::Act {
                due: now,
                actions,
                reason: prefixed(passed, reason),
            })
        }
        Strategy::Escalate => {
            let reason = if passed.is_empty() {
                "the ladder escalates".to_owned()
            } else {
                passed.join("; ")
            };
            Rung::Act(escalate(reason, now))
        }
    }
}

/// When a restart wanted at `wanted` can happen: systemd's start limit may push it later; if
/// that is beyond the longest backoff, say why instead.
fn restart_time(
    state: &UnitState,
    config: &PolicyConfig,
    now: Instant,
    wanted: Instant,
) -> Result<Instant, String> {
    let allowed = state.restarts.start_allowed_at(state.start_limit, now);
    if allowed <= wanted {
        return Ok(wanted);
    }
    let wait = allowed - now;
    if wait > config.backoff.max {
        let limit = state.start_limit;
        return Err(format!(
            "systemd's start limit ({} starts per {}) would refuse a start for {}, longer than the longest backoff ({})",
            limit.burst,
            human(limit.interval),
            human(wait),
            human(config.backoff.max)
        ));
    }
    Ok(allowed)
}

fn start_limit_note(state: &UnitState, at: Instant, now: Instant) -> String {
    let limit = state.start_limit;
    format!(
        "in {}: systemd's start limit ({} starts per {}) refuses a start before then",
        human(at - now),
        limit.burst,
        human(limit.interval)
    )
}

/// The half-open circuit's trial: one restart, waiting for the budget and the start limit
/// rather than giving up on them.
pub fn trial(spec: &UnitSpec, state: &UnitState, config: &PolicyConfig, now: Instant) -> Step {
    let budget = &config.budget;
    let budget_at = state
        .restarts
        .next_free(budget.max_restarts, now, budget.window)
        .unwrap_or(now);
    let wanted = budget_at.max(now + spec.restart_delay);
    let allowed = state.restarts.start_allowed_at(state.start_limit, wanted);
    let due = wanted.max(allowed);
    let reason = if due <= now {
        "circuit half-open: trial restart".to_owned()
    } else if budget_at > now {
        format!(
            "circuit half-open: trial restart in {}, when the restart budget has room",
            human(due - now)
        )
    } else {
        format!("circuit half-open: trial restart in {}", human(due - now))
    };
    Step::Act {
        due,
        actions: vec![Action::Restart],
        reason,
    }
}

/// Applies `step` to the open incident. Returns the actions to hand to the engine now (only
/// when `hand_out`; otherwise due actions wait for the next tick) and the reason.
pub fn commit(
    state: &mut UnitState,
    step: Step,
    now: Instant,
    hand_out: bool,
) -> (Vec<Action>, String) {
    match step {
        Step::Hold(reason) => {
            set_phase(state, Phase::Idle);
            (Vec::new(), reason)
        }
        Step::Act {
            due,
            actions,
            reason,
        } if due <= now && hand_out => {
            start(state, &actions, now);
            (actions, reason)
        }
        Step::Act {
            due,
            actions,
            reason,
        } => {
            let phase = Phase::Scheduled {
                due: due.max(now),
                actions,
                reason: reason.clone(),
            };
            set_phase(state, phase);
            (Vec::new(), reason)
        }
    }
}

fn set_phase(state: &mut UnitState, phase: Phase) {
    if let Some(incident) = &mut state.incident {
        incident.phase = phase;
    }
}

/// The engine gets `actions` now.
pub fn start(state: &mut UnitState, actions: &[Action], now: Instant) {
    for action in actions {
        if let Action::Escalate { reason } = action {
            state.escalation = Some(Escalation {
                at: now,
                reason: reason.clone(),
                problem: state.incident.as_ref().map(|i| i.kind.name().to_owned()),
            });
            state.incident = None;
        }
    }
    set_phase(state, Phase::Acting);
    state.in_flight.extend(actions.iter().cloned());
    let names: Vec<String> = actions.iter().map(Action::describe).collect();
    state.last_action = Some(LastAction {
        at: now,
        action: names.join(", "),
        result: "in progress".to_owned(),
    });
}

/// A new incident for `kind`, with nothing done yet.
pub fn open_incident(state: &mut UnitState, kind: &ProblemKind, now: Instant) {
    state.incident = Some(Incident {
        kind: kind.clone(),
        started: now,
        restart_attempts: 0,
        cleared: false,
        isolation_failed: None,
        phase: Phase::Idle,
    });
}
