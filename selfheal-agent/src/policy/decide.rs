//! A problem arrives: the gates, the incident, the ladder.

use std::time::Instant;

use super::{
    Policy, Unit,
    action::{Action, Decision, UnitContext},
    breaker::CircuitState,
    explain::human,
    ladder::{self, Env},
    outcome::record_failure,
    unit::{Held, Phase, is_event},
};
use crate::{
    config::RestartPolicy,
    detect::{Problem, ProblemKind},
};

/// Where the unit's open incident stands when a new problem arrives.
enum Standing {
    /// No incident: this problem may open one.
    Fresh,
    /// Our last action did not heal the unit.
    RecoveryFailed(String),
    /// Nothing of ours pending: the ladder decides again.
    Waiting,
    /// The problem is already being handled.
    Busy(String),
}

impl Policy {
    /// What to do about `problem`. May return no actions, with the reason (budget spent, storm
    /// breaker, unit being stopped, escalated, ...).
    pub fn decide(&mut self, problem: &Problem, unit: &UnitContext, now: Instant) -> Decision {
        self.respond(problem.unit, &problem.kind, problem.unkillable, unit, now)
    }

    pub(super) fn respond(
        &mut self,
        index: u32,
        kind: &ProblemKind,
        unkillable: bool,
        context: &UnitContext,
        now: Instant,
    ) -> Decision {
        self.wake(index);
        let active = self.active_units(now);
        let Policy {
            config,
            units,
            storm,
            jitter,
            ..
        } = self;
        let cause = kind.name();
        let say = |reason: String| Decision::nothing(index, cause, reason);
        let Some(Unit { spec, state, .. }) = usize::try_from(index)
            .ok()
            .and_then(|i| units.get_mut(i))
            .filter(|u| !u.retired)
        else {
            return say("not a configured unit".to_owned());
        };
        state.start_limit = context.start_limit;
        state.last_problem = Some((now, kind.clone()));
        state.breaker.restart_credit(now);

        if let Some(escalation) = &state.escalation {
            return say(format!(
                "escalated {} ago ({}); nothing is done until an operator resets the unit",
                human(now.saturating_duration_since(escalation.at)),
                escalation.reason
            ));
        }
        // A stop while our own restart runs is ours: the in-progress check below answers it.
        if context.stopping && state.in_flight.is_empty() {
            let scheduled = state
                .incident
                .take()
                .is_some_and(|i| matches!(i.phase, Phase::Scheduled { .. }));
            state.held = None;
            let mut reason = "the unit is being stopped by systemd or an operator".to_owned();
            if scheduled {
                reason.push_str("; the scheduled action is cancelled");
            }
            return say(reason);
        }
        if is_event(kind) && !spec.restart.wants_restart(*kind == ProblemKind::Exit) {
            return say(match spec.restart {
                RestartPolicy::Never => "restart = \"never\": the unit is only watched".to_owned(),
                _ => "restart = \"on-failure\" and the exit was clean".to_owned(),
            });
        }
        if unkillable {
            let reason = format!(
                "{cause}: a task of the unit survives SIGKILL (uninterruptible sleep), so restarting cannot help"
            );
            state.incident = None;
            state.held = None;
            let actions = vec![Action::Escalate {
                reason: reason.clone(),
            }];
            ladder::start(state, &actions, now);
            return Decision {
                unit: index,
                cause: cause.to_owned(),
                actions,
                reason: format!("escalating: {reason}"),
            };
        }
        if !state.in_flight.is_empty() {
            return say("an action on this unit is in progress".to_owned());
        }
        if let Some(isolation) = &state.isolation {
            let left = isolation.until.saturating_duration_since(now);
            return say(format!(
                "isolated for {} more; problems are expected meanwhile",
                human(left)
            ));
        }

        let standing = match &state.incident {
            None => Standing::Fresh,
            Some(incident) => match &incident.phase {
                Phase::Scheduled { due, reason, .. } => Standing::Busy(format!(
                    "already decided: {reason} (due in {})",
                    human(due.saturating_duration_since(now))
                )),
                Phase::Acting => Standing::Busy("an action on this unit is in progress".to_owned()),
                Phase::Verifying { deadline, .. } if !is_event(kind) && incident.kind == *kind => {
                    Standing::Busy(format!(
                        "verifying the last action: {cause} has {} left to clear",
                        human(deadline.saturating_duration_since(now))
                    ))
                }
                Phase::Verifying { .. } => Standing::RecoveryFailed(format!(
                    "the last recovery failed: {cause} while verifying it against {}",
                    incident.kind.name()
                )),
                Phase::Settling { .. } => Standing::RecoveryFailed(format!(
                    "the last recovery failed: {cause} again within the {} cooldown",
                    human(config.cooldown)
                )),
                Phase::Idle => Standing::Waiting,
            },
        };
        let mut prefix = None;
        match standing {
            Standing::Busy(reason) => return say(reason),
            Standing::RecoveryFailed(why) => {
                record_failure(state, now, config);
                prefix = Some(why);
            }
            Standing::Waiting => {
                if state.breaker.state() == CircuitState::HalfOpen {
                    record_failure(state, now, config);
                }
            }
            Standing::Fresh => {
                if state.breaker.state() == CircuitState::HalfOpen {
                    record_failure(state, now, config);
                }
                let already_held = state.held.is_some();
                if let Err(reason) = storm.admit(active, already_held, now, &config.storm) {
                    let since = state.held.as_ref().map_or(now, |h| h.since);
                    state.held = Some(Held {
                        kind: kind.clone(),
                        since,
                    });
                    return say(reason);
                }
                state.held = None;
                ladder::open_incident(state, kind, now);
            }
        }
        if let Some(incident) = &mut state.incident {
            incident.kind = kind.clone();
        }
        let mut env = Env { config, jitter };
        let step = ladder::next_step(spec, state, kind, &mut env, now);
        let (actions, reason) = ladder::commit(state, step, now, true);
        Decision {
            unit: index,
            cause: cause.to_owned(),
            actions,
            reason: match prefix {
                Some(prefix) => format!("{prefix}; {reason}"),
                None => reason,
            },
        }
    }
}
