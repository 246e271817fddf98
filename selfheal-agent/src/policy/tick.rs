//! Time-driven work: scheduled actions that fell due, verification deadlines, the breaker's
//! half-open trial and closing, stopping the fallback, stepping scale down, ending isolation,
//! forgetting after a stable period, and units the storm breaker held.

use std::time::Instant;

use super::{
    Policy, Unit,
    action::{Action, Decision, UnitContext},
    breaker::CircuitState,
    config::PolicyConfig,
    explain::human,
    ladder::{self, Env},
    outcome::{record_failure, record_success},
    remediation::Strategy,
    scale,
    unit::{Phase, UnitState},
};

/// Ends the unit's isolation: the actions that undo it, or `None` when it is not isolated.
pub(super) fn end_isolation(state: &mut UnitState, now: Instant) -> Option<Vec<Action>> {
    let isolation = state.isolation.take()?;
    let mut actions = Vec::new();
    if isolation.frozen {
        actions.push(Action::Thaw);
    }
    if isolation.quarantined {
        actions.push(Action::Release);
    }
    ladder::start(state, &actions, now);
    Some(actions)
}

impl Policy {
    /// Everything that fell due by `now`. Call it regularly (every agent tick) and after
    /// outcomes; [`Policy::next_due`] says when it next has work.
    pub fn tick(&mut self, now: Instant) -> Vec<Decision> {
        let mut decisions = Vec::new();
        // Only the units awake: one at rest has nothing that falls due.
        let awake: Vec<u32> = self.awake.iter().copied().collect();
        for &unit in &awake {
            let index = unit as usize;
            let Policy {
                config,
                units,
                jitter,
                ..
            } = self;
            if units.get(index).is_none_or(|u| u.retired) {
                continue;
            }
            let mut env = Env { config, jitter };
            tick_unit(unit, &mut units[index], &mut env, now, &mut decisions);
        }
        self.release_held(now, &mut decisions);
        for unit in awake {
            if self.settled(unit, now) {
                self.awake.remove(&unit);
            }
        }
        decisions
    }

    /// Once the storm breaker is calm, units it held get their turn, as many as there is room.
    fn release_held(&mut self, now: Instant, decisions: &mut Vec<Decision>) {
        let active = self.active_units(now);
        let released = self.storm.poll(active, now, &self.config.storm);
        if self.storm.tripped.is_some() {
            return;
        }
        // A held unit is never settled, so it is awake.
        let held: Vec<(u32, _)> = self
            .awake
            .iter()
            .filter_map(|&i| Some((i, self.units.get(i as usize)?.state.held.clone()?)))
            .collect();
        for (unit, problem) in held {
            let context = UnitContext {
                stopping: false,
                start_limit: self.units[unit as usize].state.start_limit,
            };
            let mut decision = self.respond(unit, &problem.kind, false, &context, now);
            if released {
                decision.reason = format!("storm breaker calm again; {}", decision.reason);
            }
            decisions.push(decision);
            if self.storm.tripped.is_some() {
                break;
            }
        }
    }
}

fn tick_unit(
    index: u32,
    unit: &mut Unit,
    env: &mut Env<'_>,
    now: Instant,
    out: &mut Vec<Decision>,
) {
    let config = env.config;
    let Unit { spec, state, .. } = unit;
    let mut say = |cause: &str, actions: Vec<Action>, reason: String| {
        out.push(Decision {
            unit: index,
            cause: cause.to_owned(),
            actions,
            reason,
        });
    };
    state
        .restarts
        .prune(now, config.budget.window.max(state.start_limit.interval));

    if state.isolation.as_ref().is_some_and(|i| i.until <= now) {
        let actions = end_isolation(state, now).unwrap_or_default();
        let reason = format!(
            "isolated for {}: releasing",
            human(config.quarantine_duration)
        );
        say("quarantine expired", actions, reason);
    }
    if state.escalation.is_some() || !state.in_flight.is_empty() {
        return;
    }

    if let Some(incident) = &mut state.incident {
        match &mut incident.phase {
            Phase::Scheduled {
                due,
                actions,
                reason,
            } if *due <= now => {
                let (actions, reason) = (std::mem::take(actions), std::mem::take(reason));
                let kind = incident.kind.name().to_owned();
                ladder::start(state, &actions, now);
                say(&kind, actions, format!("{reason}; due now"));
                return;
            }
            _ => {}
        }
        match incident.phase {
            Phase::Verifying { deadline, .. } if deadline <= now => {
                let kind = incident.kind.clone();
                record_failure(state, now, config);
                let step = ladder::next_step(spec, state, &kind, env, now);
                let (actions, reason) = ladder::commit(state, step, now, true);
                let why = format!(
                    "{} did not clear within {} of the action: the recovery failed; {reason}",
                    kind.name(),
                    human(config.recovery_timeout)
                );
                say(kind.name(), actions, why);
                return;
            }
            Phase::Settling { until } if until <= now => {
                let kind = incident.kind.clone();
                let was_half_open = state.breaker.state() == CircuitState::HalfOpen;
                record_success(state, now, config);
                let mut reason = format!("recovered from {}: verified", kind.name());
                if was_half_open {
                    reason.push_str(&format!("; circuit {}", state.breaker.state().name()));
                }
                say("verified", Vec::new(), reason);
            }
            _ => {}
        }
    }

    if state.breaker.poll(now, &config.breaker) {
        let trial = state.incident.as_ref().is_some_and(|i| {
            matches!(i.phase, Phase::Idle)
                && spec
                    .remediation
                    .ladder(&i.kind)
                    .contains(&Strategy::Restart)
        });
        if trial {
            let step = ladder::trial(spec, state, config, now);
            state.backoff_level += 1;
            if let Some(incident) = &mut state.incident {
                incident.restart_attempts += 1;
            }
            let (actions, reason) = ladder::commit(state, step, now, true);
            say("breaker", actions, reason);
            return;
        }
        let waiting = match &state.incident {
            Some(i) => format!("waiting for {} to clear, then ", i.kind.name()),
            None => String::new(),
        };
        let reason = format!(
            "circuit half-open: {waiting}{} healthy periods of {} close it",
            config.breaker.success_threshold,
            human(config.cooldown)
        );
        say("breaker", Vec::new(), reason);
    }
    if state.incident.is_some() {
        return;
    }
    if state
        .breaker
        .credit_health(now, config.cooldown, &config.breaker)
    {
        state.fallback.primary_verified = true;
        say(
            "breaker",
            Vec::new(),
            "circuit closed: the unit stayed healthy".to_owned(),
        );
    }
    if let Some(name) = &spec.remediation.fallback
        && state.fallback.running
        && state.fallback.primary_verified
        && state.breaker.is_closed()
    {
        state.fallback.running = false;
        let actions = vec![Action::StopFallback(name.clone())];
        ladder::start(state, &actions, now);
        say(
            "breaker",
            actions,
            format!("the unit is healthy again: stopping fallback {name}"),
        );
    }
    step_down(spec, state, config, now, &mut say);
    forget_if_stable(state, config, now, &mut say);
}

fn step_down(
    spec: &super::UnitSpec,
    state: &mut UnitState,
    config: &PolicyConfig,
    now: Instant,
    say: &mut impl FnMut(&str, Vec<Action>, String),
) {
    let step = state.scale.step;
    let last_trouble = state.last_problem.as_ref().map(|(at, _)| *at);
    let quiet_since = state.scale.changed_at.max(last_trouble);
    if step == 0 || quiet_since.is_some_and(|t| now < t + config.scale.step_down_after) {
        return;
    }
    state.scale.changed_at = Some(now);
    let actions = scale::step_actions(&config.scale, &spec.remediation, step, step - 1);
    if actions.is_empty() {
        return;
    }
    ladder::start(state, &actions, now);
    let reason = format!(
        "no problem for {}: scaling down to step {} (×{})",
        human(config.scale.step_down_after),
        step - 1,
        scale::factor(&config.scale, step - 1)
    );
    say("scale", actions, reason);
}

fn forget_if_stable(
    state: &mut UnitState,
    config: &PolicyConfig,
    now: Instant,
    say: &mut impl FnMut(&str, Vec<Action>, String),
) {
    let Some((last, _)) = &state.last_problem else {
        return;
    };
    let remembers = state.consecutive_failures > 0
        || state.backoff_level > 0
        || !state.restarts.times().is_empty();
    if !remembers || now < *last + config.stable_period {
        return;
    }
    state.consecutive_failures = 0;
    state.backoff_level = 0;
    state.restarts.clear();
    state.breaker.forget_failures();
    let reason = format!(
        "stable for {}: failures, backoff and the restart budget are forgotten",
        human(config.stable_period)
    );
    say("stable", Vec::new(), reason);
}
