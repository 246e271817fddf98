//! The policy: problems in, decisions out. Pure: it keeps its own state, calls nothing, and
//! takes the time as a parameter. The engine executes the [`Action`]s of each [`Decision`] and
//! reports every outcome back through [`Policy::on_outcome`]; detectors report a problem gone
//! through [`Policy::on_cleared`]; [`Policy::tick`] runs the timers.
//!
//! # From a problem to actions
//! 1. Gates, in order: an escalated unit gets nothing until an operator resets it; a unit being
//!    stopped by systemd or an operator is left alone, and a restart scheduled for it is
//!    cancelled (a stop while our own restart runs is ours); crash and clean exit obey the
//!    unit's `restart` (`never` watches, `on-failure` ignores clean exits); a task that survives
//!    SIGKILL escalates at once (restarting cannot help); one batch of actions at a time per
//!    unit; an isolated unit is left alone.
//! 2. A new problem opens an *incident*, unless the storm breaker holds it (too many units under
//!    remediation at once; it is acted on once the host is calm).
//! 3. The unit's ladder for the problem kind is walked: the first rung that can act answers; the
//!    rungs passed say why in the reason. When every rung is spent and the unit failed more than
//!    `escalate_after` recoveries in a row, it escalates even if the ladder does not say so.
//! 4. Every action that should heal (restart, scale) is verified. Crash and exit have no
//!    "cleared" signal: the unit must not fail again within the cooldown. Other kinds must be
//!    cleared by their detector within `recovery_timeout`, and then stay away for the rest of
//!    the cooldown. Otherwise the recovery failed and the incident continues up the ladder.
//!
//! # Readings of the seeds where they conflict
//! - Backoff (1 s × 2 up to 300 s, ± jitter) spaces the restart attempts of an incident; its
//!   exponent counts every attempt since the unit was last stable, so a unit that fails again
//!   right after a "successful" restart waits longer, and one that crashes once a month never
//!   meets the maximum delay. At most `max_attempts` (3) restarts per incident.
//! - The 60 s cooldown is the window after an action in which a new problem of the unit means
//!   the recovery failed: it continues the incident (and its backoff) instead of opening one.
//! - The budget (3 restarts per hour) is a sliding window over our restarts.
//! - "More than 2 consecutive failures → escalate": failed recoveries in a row; past that, the
//!   restart and scale rungs stand aside and the ladder moves on (to the fallback, say), and a
//!   spent ladder escalates.
//! - The circuit breaker opens after 5 failed recoveries in a row, or when the ladder reaches
//!   `fallback` (restarting is not working: stop trying and serve from the fallback). It is
//!   never terminal: after 60 s it is half-open and a trial restart runs (waiting for the
//!   budget if spent); a verified trial and then each further cooldown of health count as
//!   successes; 3 close it, and the fallback stops. A failure in half-open opens it again.
//! - The stable period (1 h without a problem) forgets failures, backoff and the budget.
//! - systemd's start limit: a restart that `StartLimitBurst=` / `StartLimitIntervalSec=` would
//!   refuse is delayed until allowed, or the restart rung stands aside when that is longer than
//!   the longest backoff. Only our own restarts are counted.
//! - Dry run: the engine reports [`ActionOutcome::NotExecuted`]; that counts as nothing (no
//!   budget, no success, no failure) and the attempt is not used up.
//! - Escalation stops all actions on the unit except ending an isolation already in place; a
//!   running fallback keeps running.

mod action;
mod backoff;
mod breaker;
mod budget;
mod config;
mod decide;
mod explain;
mod ladder;
mod outcome;
mod remediation;
mod scale;
mod sizes;
mod state;
mod storm;
mod tick;
mod unit;

#[cfg(test)]
pub(crate) mod tests;

use std::{
    collections::{BTreeSet, HashMap},
    time::Instant,
};

pub use action::{
    Action, ActionOutcome, Decision, HELD_BY_FLEET, ScaledLimits, StartLimit, UnitContext,
};
pub use breaker::CircuitState;
pub use config::{
    BackoffConfig, BreakerConfig, BudgetConfig, PolicyConfig, PolicyConfigError, ScaleConfig,
    StormConfig,
};
pub use explain::{LastActionStatus, StormStatus, UnitPolicyStatus};
pub use remediation::{
    IsolationKind, Ladder, Remediation, RemediationConfig, Strategy, default_ladder,
};
pub use sizes::{Bytes, CpuQuota};
pub use state::{PolicyState, StateError};
pub use unit::UnitSpec;

use backoff::Jitter;
use storm::Storm;
use unit::{Phase, UnitState};

/// The remediation engine for every monitored unit. Units are named by the engine's index
/// (their position in the list given to [`Policy::new`], then the index given to
/// [`Policy::add_unit`]); the persisted state is by name.
pub struct Policy {
    config: PolicyConfig,
    /// By index; a removed unit's slot stays, retired, so its index is never reused.
    units: Vec<Unit>,
    /// Saved state of units not monitored (yet): an instance a pattern adopts after the
    /// restore takes its own back.
    pending: HashMap<String, UnitState>,
    storm: Storm,
    jitter: Jitter,
    /// Units whose state may change with the passing of time alone (see [`Policy::settled`]):
    /// the only ones [`Policy::tick`] and [`Policy::next_due`] look at, so 1,000 units at
    /// rest cost nothing a tick. Every entry point that changes a unit wakes it; a tick that
    /// finds it settled lets it rest.
    awake: BTreeSet<u32>,
}

struct Unit {
    spec: UnitSpec,
    state: UnitState,
    /// Removed from the monitored set: no state, no decisions, not saved.
    retired: bool,
}

impl Unit {
    fn new(spec: UnitSpec, state: UnitState) -> Self {
        Self {
            spec,
            state,
            retired: false,
        }
    }
}

impl Policy {
    /// `seed` feeds the backoff jitter: fixed in tests, anything (the time, the pid) in the agent.
    pub fn new(config: PolicyConfig, units: Vec<UnitSpec>, seed: u64) -> Self {
        Self {
            config,
            units: units
                .into_iter()
                .map(|spec| Unit::new(spec, UnitState::default()))
                .collect(),
            pending: HashMap::new(),
            storm: Storm::default(),
            jitter: Jitter::new(seed),
            awake: BTreeSet::new(),
        }
        .woken_all()
    }

    /// Every unit awake (after a restore, a new config): the next tick lets the settled rest.
    fn woken_all(mut self) -> Self {
        self.wake_all();
        self
    }

    fn wake_all(&mut self) {
        self.awake = (0..self.units.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
    }

    /// The unit may have changed: it is looked at every tick until it is settled again.
    fn wake(&mut self, unit: u32) {
        self.awake.insert(unit);
    }

    /// A reloaded `[policy]` and the specs of units that stay (by index): their state is kept,
    /// the new specs apply to the next incident.
    pub fn reconfigure(&mut self, config: PolicyConfig, specs: Vec<(u32, UnitSpec)>) {
        self.config = config;
        self.wake_all();
        for (index, spec) in specs {
            if let Some(unit) = self.unit_mut(index) {
                unit.spec = spec;
            }
        }
    }

    /// A unit monitored from now on at `index` (an index never used before in this run). Its
    /// saved state, when the restored file had one, is taken back.
    pub fn add_unit(&mut self, index: u32, spec: UnitSpec) {
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        let state = self.pending.remove(&spec.name).unwrap_or_default();
        while self.units.len() <= index {
            let mut placeholder = Unit::new(UnitSpec::placeholder(), UnitState::default());
            placeholder.retired = true;
            self.units.push(placeholder);
        }
        self.units[index] = Unit::new(spec, state);
        if let Ok(index) = u32::try_from(index) {
            self.wake(index);
        }
    }

    /// Units not monitored yet whose saved state says they are quarantined: their pinned
    /// quarantine waits for a pattern to adopt them.
    pub fn pending_quarantined(&self) -> Vec<String> {
        self.pending
            .iter()
            .filter(|(_, state)| state.isolation.as_ref().is_some_and(|i| i.quarantined))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The unit is no longer monitored: its state is dropped and its index stays retired.
    pub fn remove_unit(&mut self, index: u32) {
        self.awake.remove(&index);
        if let Some(unit) = self.units.get_mut(index as usize).filter(|u| !u.retired) {
            unit.state = UnitState::default();
            unit.retired = true;
        }
    }

    /// The engine's index of the unit called `name`, for operator commands.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        let index = self
            .units
            .iter()
            .position(|u| !u.retired && u.spec.name == name)?;
        u32::try_from(index).ok()
    }

    fn unit(&self, index: u32) -> Option<&Unit> {
        self.units
            .get(usize::try_from(index).ok()?)
            .filter(|u| !u.retired)
    }

    /// The unit, to change: it is woken (see [`Policy::awake`]).
    fn unit_mut(&mut self, index: u32) -> Option<&mut Unit> {
        self.wake(index);
        self.units
            .get_mut(usize::try_from(index).ok()?)
            .filter(|u| !u.retired)
    }

    /// Whether actions the policy handed out for the unit are still running: what the unit
    /// does now (an exit, a stall) is their doing, not a problem.
    pub fn acting(&self, unit: u32) -> bool {
        self.unit(unit)
            .is_some_and(|u| !u.state.in_flight.is_empty())
    }

    /// Whether the unit is frozen or quarantined now (what it does meanwhile is the isolation's
    /// doing).
    pub fn isolated(&self, unit: u32) -> bool {
        self.unit(unit).is_some_and(|u| {
            u.state
                .isolation
                .as_ref()
                .is_some_and(|i| i.frozen || i.quarantined)
        })
    }

    /// Whether nothing of the unit's status can change with the passing of time alone: no
    /// incident, escalation, isolation or held problem, nothing in flight, no fallback, scale
    /// step, failure count or backoff to forget, a closed circuit without failures, and no
    /// restart in the budget's window. Its status then changes only when an input names it
    /// (its ages, the last action's and problem's, are kept as instants), so the engine need
    /// not rebuild it pass after pass.
    pub fn settled(&self, unit: u32, now: Instant) -> bool {
        let Some(u) = self.unit(unit) else {
            return true;
        };
        let s = &u.state;
        s.incident.is_none()
            && s.escalation.is_none()
            && s.isolation.is_none()
            && s.held.is_none()
            && s.in_flight.is_empty()
            && !s.fallback.running
            && s.scale.step == 0
            && s.consecutive_failures == 0
            && s.backoff_level == 0
            && matches!(s.breaker.circuit, breaker::Circuit::Closed { failures: 0 })
            && s.restarts.used(now, self.config.budget.window) == 0
    }

    /// Units under remediation now, for the storm breaker.
    fn active_units(&self, now: Instant) -> usize {
        let horizon = self.config.backoff.max;
        // An active unit is never settled, so it is awake.
        self.awake
            .iter()
            .filter_map(|&i| self.units.get(i as usize))
            .filter(|u| u.state.is_active(now, horizon))
            .count()
    }

    /// Operator: forget the unit's escalation, failures, backoff and restart budget, and close
    /// its circuit. A running fallback stops after the unit's next verified recovery.
    pub fn reset(&mut self, unit: u32) -> Decision {
        let Some(u) = self.unit_mut(unit) else {
            return Decision::nothing(unit, "operator", "not a configured unit");
        };
        let state = &mut u.state;
        let was_escalated = state.escalation.take().is_some();
        state.consecutive_failures = 0;
        state.backoff_level = 0;
        state.restarts.clear();
        state.breaker = breaker::Breaker::default();
        state.fallback.failed = None;
        state.incident = None;
        state.held = None;
        let mut reason = String::from("reset by an operator: ");
        if was_escalated {
            reason.push_str("escalation cleared, ");
        }
        reason.push_str("failures and backoff forgotten, restart budget full, circuit closed");
        if state.fallback.running {
            let name = u
                .spec
                .remediation
                .fallback
                .as_deref()
                .unwrap_or("the fallback");
            reason.push_str(&format!(
                "; {name} keeps running until the unit's next verified recovery"
            ));
        }
        Decision::nothing(unit, "operator", reason)
    }

    /// Operator: end the unit's freeze and network quarantine now.
    pub fn release(&mut self, unit: u32, now: Instant) -> Decision {
        let Some(u) = self.unit_mut(unit) else {
            return Decision::nothing(unit, "operator", "not a configured unit");
        };
        match tick::end_isolation(&mut u.state, now) {
            Some(actions) => Decision {
                unit,
                cause: "operator".to_owned(),
                actions,
                reason: "released by an operator before the quarantine ended".to_owned(),
            },
            None => Decision::nothing(unit, "operator", "the unit is not isolated"),
        }
    }

    /// The earliest time [`Policy::tick`] has something to do, so the engine can wake up for
    /// it instead of waiting for its next regular tick.
    pub fn next_due(&self) -> Option<Instant> {
        let config = &self.config;
        let awake = self
            .awake
            .iter()
            .filter_map(|&i| self.units.get(i as usize));
        let per_unit = awake.flat_map(|u| {
            let state = &u.state;
            let phase = state.incident.as_ref().and_then(|i| match i.phase {
                Phase::Scheduled { due, .. } => Some(due),
                Phase::Verifying { deadline, .. } => Some(deadline),
                Phase::Settling { until } => Some(until),
                Phase::Idle | Phase::Acting => None,
            });
            let isolation = state.isolation.as_ref().map(|i| i.until);
            let breaker = state.breaker.half_open_at(&config.breaker);
            [phase, isolation, breaker]
        });
        per_unit
            .chain([self.storm.calm_at(&config.storm)])
            .flatten()
            .min()
    }
}
