//! `[defaults.stall]` and `[unit.stall]`: when a unit counts as stalled.

use std::time::Duration;

use serde::de::{self, Unexpected};
use serde::{Deserialize, Deserializer};

use super::StallKind;

use crate::config::duration;

/// Seeds: a service that makes no progress for 5 minutes is stalled.
const THRESHOLD: Duration = Duration::from_secs(300);
/// A loop that gives the CPU back less than 5 % of the time is not doing I/O or waiting.
const SPINNING_CPU_PERCENT: u8 = 95;
/// Runnable tasks waiting 50 ms for a CPU miss most latency budgets.
const STARVED_RUNQ_P99: Duration = Duration::from_millis(50);
/// Some of its tasks wait for a CPU a fifth of the time: it would run faster with more CPU.
const STARVED_PSI_SOME_AVG10: u8 = 20;
/// Starvation is a capacity problem, to be fixed by scaling up: answer it in seconds, not
/// minutes, yet not on the first noisy second (PSI avg10 itself averages 10 s).
const STARVED_FOR: Duration = Duration::from_secs(10);

/// How a unit's stalls are judged; `[defaults.stall]` with every key, resolved per unit.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StallConfig {
    /// How long `stopped`, `hung`, `spinning` and `wedged` must hold before they are reported.
    #[serde(deserialize_with = "duration::deserialize")]
    pub threshold: Duration,
    /// Whether `spinning` is detected; off for units that compute for long stretches.
    pub spinning: bool,
    /// On a CPU for at least this share of each window (percent) with no voluntary switch.
    #[serde(deserialize_with = "percent")]
    pub spinning_cpu_percent: u8,
    /// `starved` when the run-queue latency p99 of the window is above this...
    #[serde(deserialize_with = "duration::deserialize")]
    pub starved_runq_p99: Duration,
    /// ...or the cgroup's `cpu.pressure` "some avg10" is above this (percent)...
    #[serde(deserialize_with = "percent")]
    pub starved_psi_some_avg10: u8,
    /// ...for this long (instead of `threshold`).
    #[serde(deserialize_with = "duration::deserialize")]
    pub starved_for: Duration,
}

impl Default for StallConfig {
    fn default() -> Self {
        Self {
            threshold: THRESHOLD,
            spinning: true,
            spinning_cpu_percent: SPINNING_CPU_PERCENT,
            starved_runq_p99: STARVED_RUNQ_P99,
            starved_psi_some_avg10: STARVED_PSI_SOME_AVG10,
            starved_for: STARVED_FOR,
        }
    }
}

impl StallConfig {
    /// How long `kind` must hold in every sample before it is reported.
    pub fn threshold_for(&self, kind: StallKind) -> Duration {
        match kind {
            StallKind::Starved => self.starved_for,
            _ => self.threshold,
        }
    }
}

/// `[unit.stall]`: the keys of [`StallConfig`], each `None` unless the unit sets it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StallOverrides {
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub threshold: Option<Duration>,
    #[serde(default)]
    pub spinning: Option<bool>,
    #[serde(default, deserialize_with = "percent_option")]
    pub spinning_cpu_percent: Option<u8>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub starved_runq_p99: Option<Duration>,
    #[serde(default, deserialize_with = "percent_option")]
    pub starved_psi_some_avg10: Option<u8>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub starved_for: Option<Duration>,
}

impl StallOverrides {
    /// The unit's config: its own keys, the rest from `defaults`.
    pub fn resolve(&self, defaults: &StallConfig) -> StallConfig {
        StallConfig {
            threshold: self.threshold.unwrap_or(defaults.threshold),
            spinning: self.spinning.unwrap_or(defaults.spinning),
            spinning_cpu_percent: self
                .spinning_cpu_percent
                .unwrap_or(defaults.spinning_cpu_percent),
            starved_runq_p99: self.starved_runq_p99.unwrap_or(defaults.starved_runq_p99),
            starved_psi_some_avg10: self
                .starved_psi_some_avg10
                .unwrap_or(defaults.starved_psi_some_avg10),
            starved_for: self.starved_for.unwrap_or(defaults.starved_for),
        }
    }
}

/// A whole percentage from 1 to 100: 0 would call every sleeping task spinning and every unit
/// starved.
fn percent<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    let value = u64::deserialize(deserializer)?;
    match u8::try_from(value) {
        Ok(percent @ 1..=100) => Ok(percent),
        _ => Err(de::Error::invalid_value(
            Unexpected::Unsigned(value),
            &"a whole percentage from 1 to 100",
        )),
    }
}

fn percent_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u8>, D::Error> {
    percent(deserializer).map(Some)
}
