//! The per-unit circuit breaker: closed → open after N failed recoveries in a row → half-open
//! after a while → closed after M successes. It never stays open for good: time alone moves it
//! to half-open, where a trial decides.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::BreakerConfig;

/// The one circuit state: the policy's, status's, /health's and `selfheal_circuit_state`'s
/// (0 closed, 1 half-open, 2 open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    #[default]
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl CircuitState {
    pub fn name(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Circuit {
    /// Restarts allowed; `failures` failed recoveries in a row so far.
    Closed { failures: u32 },
    /// No restarts of the unit; its fallback (if any) serves.
    Open { since: Instant, reason: String },
    /// A trial is allowed; `successes` so far. Health since `credit_from` earns the next one.
    HalfOpen {
        since: Instant,
        successes: u32,
        credit_from: Instant,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub circuit: Circuit,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            circuit: Circuit::Closed { failures: 0 },
        }
    }
}

impl Breaker {
    pub fn state(&self) -> CircuitState {
        match self.circuit {
            Circuit::Closed { .. } => CircuitState::Closed,
            Circuit::Open { .. } => CircuitState::Open,
            Circuit::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state() == CircuitState::Closed
    }

    /// A recovery failed. Returns true when that opened the circuit.
    pub fn on_failure(&mut self, now: Instant, config: &BreakerConfig) -> bool {
        match &mut self.circuit {
            Circuit::Closed { failures } => {
                *failures += 1;
                if *failures < config.failure_threshold {
                    return false;
                }
                let reason = format!("{failures} failed recoveries in a row");
                self.open(now, reason);
                true
            }
            Circuit::HalfOpen { .. } => {
                self.open(now, "the half-open trial failed".to_owned());
                true
            }
            Circuit::Open { .. } => false,
        }
    }

    /// The ladder gives up on restarting and falls back: open now, whatever the count.
    pub fn trip(&mut self, now: Instant, reason: String) {
        if self.state() != CircuitState::Open {
            self.open(now, reason);
        }
    }

    fn open(&mut self, now: Instant, reason: String) {
        self.circuit = Circuit::Open { since: now, reason };
    }

    /// A recovery succeeded. Returns true when that closed the circuit.
    pub fn on_success(&mut self, now: Instant, config: &BreakerConfig) -> bool {
        match &mut self.circuit {
            Circuit::Closed { failures } => {
                *failures = 0;
                false
            }
            Circuit::HalfOpen {
                successes,
                credit_from,
                ..
            } => {
                *successes += 1;
                *credit_from = now;
                self.close_if_done(config)
            }
            Circuit::Open { .. } => false,
        }
    }

    /// Open long enough: half-open. Returns true on that transition.
    pub fn poll(&mut self, now: Instant, config: &BreakerConfig) -> bool {
        let Circuit::Open { since, .. } = self.circuit else {
            return false;
        };
        let due = since + config.open_for;
        if now < due {
            return false;
        }
        self.circuit = Circuit::HalfOpen {
            since: due,
            successes: 0,
            credit_from: due,
        };
        true
    }

    /// When the open circuit turns half-open.
    pub fn half_open_at(&self, config: &BreakerConfig) -> Option<Instant> {
        match self.circuit {
            Circuit::Open { since, .. } => Some(since + config.open_for),
            _ => None,
        }
    }

    /// The unit was healthy (no problem, nothing in progress) since the last credit: each full
    /// `interval` of it counts as one success. Returns true when that closed the circuit.
    pub fn credit_health(
        &mut self,
        now: Instant,
        interval: Duration,
        config: &BreakerConfig,
    ) -> bool {
        let Circuit::HalfOpen {
            successes,
            credit_from,
            ..
        } = &mut self.circuit
        else {
            return false;
        };
        while now >= *credit_from + interval && *successes < config.success_threshold {
            *successes += 1;
            *credit_from += interval;
        }
        self.close_if_done(config)
    }

    /// A problem showed up: health since now, not before, earns the next success.
    pub fn restart_credit(&mut self, now: Instant) {
        if let Circuit::HalfOpen { credit_from, .. } = &mut self.circuit {
            *credit_from = now;
        }
    }

    fn close_if_done(&mut self, config: &BreakerConfig) -> bool {
        match self.circuit {
            Circuit::HalfOpen { successes, .. } if successes >= config.success_threshold => {
                self.circuit = Circuit::Closed { failures: 0 };
                true
            }
            _ => false,
        }
    }

    /// The stable period passed: old failures no longer count towards opening.
    pub fn forget_failures(&mut self) {
        if let Circuit::Closed { failures } = &mut self.circuit {
            *failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig::default()
    }

    #[test]
    fn opens_after_five_failures_in_a_row_not_four() {
        let now = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..4 {
            assert!(!b.on_failure(now, &config()));
        }
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.on_failure(now, &config()));
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn a_success_resets_the_count_towards_opening() {
        let now = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..4 {
            b.on_failure(now, &config());
        }
        b.on_success(now, &config());
        for _ in 0..4 {
            assert!(!b.on_failure(now, &config()));
        }
    }

    #[test]
    fn half_opens_after_sixty_seconds_by_itself() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.trip(t0, "test".into());
        assert!(!b.poll(t0 + Duration::from_secs(59), &config()));
        assert!(b.poll(t0 + Duration::from_secs(60), &config()));
        assert_eq!(b.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn three_successes_in_half_open_close_it_and_a_failure_reopens_it() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.trip(t0, "test".into());
        b.poll(t0 + Duration::from_secs(60), &config());
        assert!(!b.on_success(t0, &config()));
        assert!(!b.on_success(t0, &config()));
        assert!(b.on_success(t0, &config()));
        assert_eq!(b.state(), CircuitState::Closed);

        b.trip(t0, "test".into());
        b.poll(t0 + Duration::from_secs(60), &config());
        assert!(b.on_failure(t0 + Duration::from_secs(61), &config()));
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn health_over_time_earns_successes_in_half_open() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut b = Breaker::default();
        b.trip(t0, "test".into());
        b.poll(t0 + minute, &config());
        assert!(!b.credit_health(t0 + minute * 3, minute, &config()));
        assert!(b.credit_health(t0 + minute * 4, minute, &config()));
        assert!(b.is_closed());
    }
}
