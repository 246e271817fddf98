//! Saying where a unit stands: [`Policy::unit_status`] for `status`, metrics and health, and
//! [`Policy::explain`] in plain words for operators.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{
    Policy,
    breaker::{Circuit, CircuitState},
    outcome::describe_last,
    scale,
    unit::{Phase, UnitState},
};

/// "1.5 s", "23 s", "4 min 12 s", "2 h 5 min".
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 10 && d.subsec_millis() != 0 {
        return format!("{:.1} s", d.as_secs_f64());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// The wall-clock time of `at`, as "12:01:05 UTC".
fn clock(at: Instant, now: Instant, wall: SystemTime) -> String {
    let then = wall
        .checked_sub(now.saturating_duration_since(at))
        .unwrap_or(UNIX_EPOCH);
    let secs = then.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn until(at: Instant, now: Instant) -> String {
    human(at.saturating_duration_since(now))
}

/// Where one unit stands, for `status`, metrics and health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitPolicyStatus {
    pub circuit: CircuitState,
    pub consecutive_failures: u32,
    pub restarts_left: u32,
    /// The escalation's reason while escalated.
    pub escalated: Option<String>,
    /// The kind of problem that was escalated, while escalated.
    #[serde(default)]
    pub escalated_problem: Option<String>,
    /// The kind of the open incident.
    pub incident: Option<String>,
    /// A scheduled action and when it is due.
    pub next_action: Option<String>,
    pub next_action_in_seconds: Option<f64>,
    pub held_by_storm: bool,
    pub fallback_running: bool,
    pub scale_step: u32,
    pub scale_factor: f64,
    pub frozen: bool,
    pub quarantined: bool,
    pub isolated_for_seconds: Option<f64>,
    pub last_action: Option<LastActionStatus>,
    /// The actions handed to the engine and not answered yet (one step of the ladder at most:
    /// the soak checks that against its audit log).
    #[serde(default)]
    pub in_flight: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastActionStatus {
    pub action: String,
    pub result: String,
    pub seconds_ago: f64,
    /// When it was done (CLOCK_MONOTONIC ns, to the millisecond), where the status keeps it as
    /// an instant so that it stays the same between passes: `seconds_ago` is then worked out
    /// when the status is read.
    #[serde(skip)]
    pub at_ns: Option<u64>,
}

impl LastActionStatus {
    /// Keeps when it was done instead of how long ago, `now_ns` being the status's `now`.
    pub fn as_instant(&mut self, now_ns: u64) {
        let ago_ms = (self.seconds_ago * 1000.0).round() as u64;
        self.at_ns = Some((now_ns / 1_000_000).saturating_sub(ago_ms) * 1_000_000);
        self.seconds_ago = 0.0;
    }

    /// `seconds_ago` as read at `now_ns`, for a status that keeps the instant.
    pub fn read_at(&mut self, now_ns: u64) {
        if let Some(at) = self.at_ns {
            self.seconds_ago = now_ns.saturating_sub(at) as f64 / 1e9;
        }
    }
}

/// The host-wide storm breaker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StormStatus {
    pub tripped: bool,
    pub units_under_remediation: usize,
    pub max_units: u32,
    /// Units whose problem waits for calm.
    pub held: Vec<String>,
}

impl Policy {
    pub fn unit_status(&self, unit: u32, now: Instant) -> Option<UnitPolicyStatus> {
        let state = &self.unit(unit)?.state;
        let config = &self.config;
        let scheduled = state.incident.as_ref().and_then(|i| match &i.phase {
            Phase::Scheduled { due, actions, .. } => Some((due, actions)),
            _ => None,
        });
        let isolation = state.isolation.as_ref();
        Some(UnitPolicyStatus {
            circuit: state.breaker.state(),
            consecutive_failures: state.consecutive_failures,
            restarts_left: state.restarts.left(
                config.budget.max_restarts,
                now,
                config.budget.window,
            ),
            escalated: state.escalation.as_ref().map(|e| e.reason.clone()),
            escalated_problem: state.escalation.as_ref().and_then(|e| e.problem.clone()),
            incident: state.incident.as_ref().map(|i| i.kind.name().to_owned()),
            next_action: scheduled.map(|(_, actions)| {
                let names: Vec<String> = actions.iter().map(|a| a.describe()).collect();
                names.join(", ")
            }),
            next_action_in_seconds: scheduled
                .map(|(due, _)| due.saturating_duration_since(now).as_secs_f64()),
            held_by_storm: state.held.is_some(),
            fallback_running: state.fallback.running,
            scale_step: state.scale.step,
            scale_factor: scale::factor(&config.scale, state.scale.step),
            frozen: isolation.is_some_and(|i| i.frozen),
            quarantined: isolation.is_some_and(|i| i.quarantined),
            isolated_for_seconds: isolation
                .map(|i| i.until.saturating_duration_since(now).as_secs_f64()),
            last_action: state.last_action.as_ref().map(|l| LastActionStatus {
                action: l.action.clone(),
                result: l.result.clone(),
                seconds_ago: now.saturating_duration_since(l.at).as_secs_f64(),
                at_ns: None,
            }),
            in_flight: state
                .in_flight
                .iter()
                .map(super::Action::describe)
                .collect(),
        })
    }

    pub fn storm_status(&self, now: Instant) -> StormStatus {
        StormStatus {
            tripped: self.storm.tripped.is_some(),
            units_under_remediation: self.active_units(now),
            max_units: self.config.storm.max_units,
            held: self
                .units
                .iter()
                .filter(|u| u.state.held.is_some())
                .map(|u| u.spec.name.clone())
                .collect(),
        }
    }

    /// Why the unit is where it is, in plain words: "web.service: circuit open since 12:01:05
    /// UTC (the ladder falls back); half-open in 23 s; fallback web-fallback.service running;
    /// 1 of 3 restarts left this hour".
    pub fn explain(&self, unit: u32, now: Instant, wall: SystemTime) -> String {
        let Some(u) = self.unit(unit) else {
            return format!("unit {unit} is not configured");
        };
        let (spec, state) = (&u.spec, &u.state);
        let parts = self.explain_parts(spec.remediation.fallback.as_deref(), state, now, wall);
        format!("{}: {}", spec.name, parts.join("; "))
    }

    fn explain_parts(
        &self,
        fallback: Option<&str>,
        state: &UnitState,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<String> {
        let config = &self.config;
        let mut parts = Vec::new();
        if let Some(e) = &state.escalation {
            parts.push(format!(
                "escalated at {} ({} ago): {}; nothing is done until an operator resets it",
                clock(e.at, now, wall),
                human(now.saturating_duration_since(e.at)),
                e.reason
            ));
        }
        if let Some(held) = &state.held {
            parts.push(format!(
                "{} held by the storm breaker since {}; it is handled once the host is calm",
                held.kind.name(),
                clock(held.since, now, wall)
            ));
        }
        if let Some(i) = &state.incident {
            let kind = i.kind.name();
            let since = clock(i.started, now, wall);
            parts.push(match &i.phase {
                Phase::Idle => format!("{kind} since {since}; nothing scheduled"),
                Phase::Scheduled { due, reason, .. } => {
                    format!("{kind} since {since}: {reason}; due in {}", until(*due, now))
                }
                Phase::Acting => format!("{kind} since {since}: an action is in progress"),
                Phase::Verifying { deadline, .. } => format!(
                    "{kind} since {since}: verifying the last action, the problem must clear within {}",
                    until(*deadline, now)
                ),
                Phase::Settling { until: end } => format!(
                    "{kind} since {since}: recovered if no new problem comes within {}",
                    until(*end, now)
                ),
            });
        }
        parts.push(match &state.breaker.circuit {
            Circuit::Closed { failures: 0 } => "circuit closed".to_owned(),
            Circuit::Closed { failures } => format!(
                "circuit closed ({failures} of {} failures that open it)",
                config.breaker.failure_threshold
            ),
            Circuit::Open { since, reason } => format!(
                "circuit open since {} ({reason}); half-open in {}",
                clock(*since, now, wall),
                until(*since + config.breaker.open_for, now)
            ),
            Circuit::HalfOpen { successes, .. } => format!(
                "circuit half-open: {successes} of {} successes close it",
                config.breaker.success_threshold
            ),
        });
        if let Some(name) = fallback {
            if state.fallback.running {
                parts.push(format!("fallback {name} running"));
            } else if let Some(why) = &state.fallback.failed {
                parts.push(format!("fallback {name} failed to start ({why})"));
            }
        }
        parts.push(self.budget_words(state, now));
        if state.consecutive_failures > 0 {
            parts.push(format!(
                "{} failed recoveries in a row (more than {} escalates)",
                state.consecutive_failures, config.escalate_after
            ));
        }
        if state.scale.step > 0 {
            let quiet_since = state
                .scale
                .changed_at
                .max(state.last_problem.as_ref().map(|p| p.0));
            let down_at = quiet_since.map_or(now, |t| t + config.scale.step_down_after);
            parts.push(format!(
                "scaled to ×{} (step {}); steps down in {} if no problem comes",
                scale::factor(&config.scale, state.scale.step),
                state.scale.step,
                until(down_at, now)
            ));
        }
        if let Some(i) = &state.isolation {
            let what = match (i.frozen, i.quarantined) {
                (true, true) => "frozen and quarantined",
                (true, false) => "frozen",
                _ => "quarantined",
            };
            parts.push(format!(
                "{what} until {} (in {})",
                clock(i.until, now, wall),
                until(i.until, now)
            ));
        }
        if let Some(last) = &state.last_action {
            parts.push(describe_last(last, &clock(last.at, now, wall)));
        }
        if let Some((at, kind)) = &state.last_problem {
            if state.incident.is_none() && state.escalation.is_none() {
                parts.push(format!(
                    "last problem: {} at {}",
                    kind.name(),
                    clock(*at, now, wall)
                ));
            }
        } else {
            parts.push("no problem seen".to_owned());
        }
        parts
    }

    fn budget_words(&self, state: &UnitState, now: Instant) -> String {
        let budget = &self.config.budget;
        let left = state.restarts.left(budget.max_restarts, now, budget.window);
        let period = if budget.window == Duration::from_secs(3600) {
            "this hour".to_owned()
        } else {
            format!("in the last {}", human(budget.window))
        };
        let mut words = format!("{left} of {} restarts left {period}", budget.max_restarts);
        if let Some(free) = state
            .restarts
            .next_free(budget.max_restarts, now, budget.window)
        {
            words.push_str(&format!(" (the next in {})", until(free, now)));
        }
        words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human(Duration::from_secs(23)), "23 s");
        assert_eq!(human(Duration::from_secs(300)), "5 min");
        assert_eq!(human(Duration::from_secs(252)), "4 min 12 s");
        assert_eq!(human(Duration::from_secs(3600)), "1 h");
        assert_eq!(human(Duration::from_secs(7500)), "2 h 5 min");
    }

    #[test]
    fn wall_clock_times_are_utc() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 12 * 3600 + 61);
        assert_eq!(clock(now, now, wall), "12:01:01 UTC");
        assert_eq!(
            clock(now - Duration::from_secs(61), now, wall),
            "12:00:00 UTC"
        );
    }
}
