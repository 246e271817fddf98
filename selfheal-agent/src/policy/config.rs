//! `[policy]`: the host-wide knobs of the remediation engine. Each default is written once, in
//! the `Default` impls below (they come from the project's seeds).

use std::time::Duration;

use serde::Deserialize;

use crate::config::duration;

/// A config value the types cannot reject by themselves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyConfigError {
    /// Dotted path relative to the table that was checked: `backoff.multiplier` for
    /// [`PolicyConfig::validate`], `max_instances` for a remediation table.
    pub key: String,
    pub message: String,
}

impl PolicyConfigError {
    pub(super) fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// `[policy]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// After an action, a new problem of the unit within this long means the recovery failed:
    /// it continues the incident instead of opening a new one. It is also the probation an
    /// exit-type problem (crash, exit) must pass after a restart to count as recovered.
    #[serde(deserialize_with = "duration::deserialize")]
    pub cooldown: Duration,
    /// A condition-type problem (stall, leak, probe) must clear this soon after an action,
    /// otherwise the action failed.
    #[serde(deserialize_with = "duration::deserialize")]
    pub recovery_timeout: Duration,
    /// This long without a problem forgets failures, backoff and the restart budget.
    #[serde(deserialize_with = "duration::deserialize")]
    pub stable_period: Duration,
    /// More than this many failed recoveries in a row: stop restarting/scaling, and escalate
    /// if the ladder has nothing else to offer.
    pub escalate_after: u32,
    /// How long `isolate` keeps a unit frozen / quarantined before releasing it by itself.
    #[serde(deserialize_with = "duration::deserialize")]
    pub quarantine_duration: Duration,
    pub budget: BudgetConfig,
    pub backoff: BackoffConfig,
    pub breaker: BreakerConfig,
    pub storm: StormConfig,
    pub scale: ScaleConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            cooldown: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(300),
            stable_period: Duration::from_secs(3600),
            escalate_after: 2,
            quarantine_duration: Duration::from_secs(300),
            budget: BudgetConfig::default(),
            backoff: BackoffConfig::default(),
            breaker: BreakerConfig::default(),
            storm: StormConfig::default(),
            scale: ScaleConfig::default(),
        }
    }
}

/// `[policy.budget]`: restarts per unit in a sliding window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    pub max_restarts: u32,
    #[serde(deserialize_with = "duration::deserialize")]
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            window: Duration::from_secs(3600),
        }
    }
}

/// `[policy.backoff]`: delays between the restart attempts of one incident.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    #[serde(deserialize_with = "duration::deserialize")]
    pub initial: Duration,
    pub multiplier: f64,
    #[serde(deserialize_with = "duration::deserialize")]
    pub max: Duration,
    /// Restart attempts per incident.
    pub max_attempts: u32,
    /// The first restart of an incident happens at once, so a crashed service is back sooner
    /// than systemd's own `Restart=` would bring it; the delays above apply from the second
    /// attempt. `false` waits `initial` (and more after recent incidents) before the first too.
    pub immediate_first: bool,
    /// Each delay is moved by up to ± this fraction of itself, so units that failed together
    /// do not restart together.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(300),
            max_attempts: 3,
            immediate_first: true,
            jitter: 0.1,
        }
    }
}

/// `[policy.breaker]`: the per-unit circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failed recoveries in a row that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a trial (half-open).
    #[serde(deserialize_with = "duration::deserialize")]
    pub open_for: Duration,
    /// Successes in half-open that close it again.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
            success_threshold: 3,
        }
    }
}

/// `[policy.storm]`: the host-wide storm breaker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StormConfig {
    /// Units being remediated at once; a new incident beyond it trips the storm breaker.
    pub max_units: u32,
    /// Once tripped, no new incident starts until this long has passed without one being held
    /// back and fewer than `max_units` are being remediated.
    #[serde(deserialize_with = "duration::deserialize")]
    pub calm_period: Duration,
}

impl Default for StormConfig {
    fn default() -> Self {
        Self {
            max_units: 5,
            calm_period: Duration::from_secs(120),
        }
    }
}

/// `[policy.scale]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleConfig {
    /// Each step multiplies the limits by this much.
    pub factor: f64,
    /// Limits never exceed this multiple of the base.
    pub max_factor: f64,
    /// One step back down after this long without a problem.
    #[serde(deserialize_with = "duration::deserialize")]
    pub step_down_after: Duration,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        Self {
            factor: 1.5,
            max_factor: 3.0,
            step_down_after: Duration::from_secs(600),
        }
    }
}

impl PolicyConfig {
    /// Checks what serde cannot; the error's key is relative to `[policy]`.
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        let at_least_one = [
            ("budget.max_restarts", self.budget.max_restarts, 1),
            ("backoff.max_attempts", self.backoff.max_attempts, 1),
            (
                "breaker.failure_threshold",
                self.breaker.failure_threshold,
                1,
            ),
            (
                "breaker.success_threshold",
                self.breaker.success_threshold,
                1,
            ),
            ("storm.max_units", self.storm.max_units, 1),
        ];
        for (key, value, min) in at_least_one {
            if value < min {
                return Err(PolicyConfigError::new(
                    key,
                    format!(
                        "expected at least {min}, found {value} (use the ladders to turn a strategy off)"
                    ),
                ));
            }
        }
        let nonzero = [
            ("cooldown", self.cooldown),
            ("recovery_timeout", self.recovery_timeout),
            ("budget.window", self.budget.window),
            ("breaker.open_for", self.breaker.open_for),
        ];
        for (key, value) in nonzero {
            if value.is_zero() {
                return Err(PolicyConfigError::new(
                    key,
                    "expected a duration above zero",
                ));
            }
        }
        if !(self.backoff.multiplier >= 1.0 && self.backoff.multiplier.is_finite()) {
            return Err(PolicyConfigError::new(
                "backoff.multiplier",
                format!(
                    "expected a number of at least 1.0, found {}",
                    self.backoff.multiplier
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.backoff.jitter) {
            return Err(PolicyConfigError::new(
                "backoff.jitter",
                format!(
                    "expected a fraction from 0.0 up to (not including) 1.0, found {}",
                    self.backoff.jitter
                ),
            ));
        }
        if self.backoff.initial > self.backoff.max {
            return Err(PolicyConfigError::new(
                "backoff.initial",
                format!(
                    "{:?} is longer than backoff.max ({:?})",
                    self.backoff.initial, self.backoff.max
                ),
            ));
        }
        if !(self.scale.factor > 1.0 && self.scale.factor.is_finite()) {
            return Err(PolicyConfigError::new(
                "scale.factor",
                format!("expected a number above 1.0, found {}", self.scale.factor),
            ));
        }
        if !(self.scale.max_factor >= 1.0 && self.scale.max_factor.is_finite()) {
            return Err(PolicyConfigError::new(
                "scale.max_factor",
                format!(
                    "expected a number of at least 1.0, found {}",
                    self.scale.max_factor
                ),
            ));
        }
        Ok(())
    }
}
