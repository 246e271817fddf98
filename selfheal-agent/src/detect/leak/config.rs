//! `[defaults.leak]` and `[unit.leak]`: which resources are watched and when growth is a leak.

use std::time::Duration;

use serde::de::{self, Unexpected};
use serde::{Deserialize, Deserializer};

use crate::config::duration;
use crate::detect::{LeakKind, ProblemKind};

/// Every resource the detector knows, in the order status lists them.
pub const ALL_KINDS: [LeakKind; 5] = [
    LeakKind::Fd,
    LeakKind::Socket,
    LeakKind::Connection,
    LeakKind::Thread,
    LeakKind::Memory,
];
/// Ten minutes hold several cycles of a connection pool's breathing and a cache's warm-up, so
/// neither looks like steady growth; a leak that exhausts its limit faster than the window is
/// left to `limit_percent`.
const WINDOW: Duration = Duration::from_secs(600);
/// Fewer points than this make a trend of noise.
const MIN_SAMPLES: usize = 10;
/// The issue: an hour is early enough to restart gracefully, at a quiet moment.
const HORIZON: Duration = Duration::from_secs(3600);
/// Seeds: `resource_leak` with `threshold: 0.9`.
const LIMIT_PERCENT: u8 = 90;
/// Mann–Kendall and Theil–Sen need at least three points to say anything.
const FEWEST_SAMPLES: usize = 3;

/// How a unit's resources are judged; `[defaults.leak]` with every key, resolved per unit.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeakConfig {
    /// The resources watched, by problem name (`fd_leak`...); empty turns leak detection off.
    #[serde(deserialize_with = "kinds")]
    pub kinds: Vec<LeakKind>,
    /// The sliding window the trend is computed over; judging starts once half of it is covered.
    #[serde(deserialize_with = "window")]
    pub window: Duration,
    /// Samples the window must hold before its trend is judged.
    #[serde(deserialize_with = "min_samples")]
    pub min_samples: usize,
    /// Steady growth is a problem when it will reach the limit within this time; `0s` leaves
    /// only `limit_percent`.
    #[serde(deserialize_with = "duration::deserialize")]
    pub horizon: Duration,
    /// Usage at or above this percentage of the limit is a problem whatever the trend.
    #[serde(deserialize_with = "percent")]
    pub limit_percent: u8,
}

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            kinds: ALL_KINDS.to_vec(),
            window: WINDOW,
            min_samples: MIN_SAMPLES,
            horizon: HORIZON,
            limit_percent: LIMIT_PERCENT,
        }
    }
}

impl LeakConfig {
    pub fn watches(&self, kind: LeakKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// `limit_percent` as a share of the limit.
    pub(super) fn limit_fraction(&self) -> f64 {
        f64::from(self.limit_percent) / 100.0
    }
}

/// `[unit.leak]`: the keys of [`LeakConfig`], each `None` unless the unit sets it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakOverrides {
    #[serde(default, deserialize_with = "kinds_option")]
    pub kinds: Option<Vec<LeakKind>>,
    #[serde(default, deserialize_with = "window_option")]
    pub window: Option<Duration>,
    #[serde(default, deserialize_with = "min_samples_option")]
    pub min_samples: Option<usize>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub horizon: Option<Duration>,
    #[serde(default, deserialize_with = "percent_option")]
    pub limit_percent: Option<u8>,
}

impl LeakOverrides {
    /// The unit's config: its own keys, the rest from `defaults`.
    pub fn resolve(&self, defaults: &LeakConfig) -> LeakConfig {
        LeakConfig {
            kinds: self.kinds.clone().unwrap_or_else(|| defaults.kinds.clone()),
            window: self.window.unwrap_or(defaults.window),
            min_samples: self.min_samples.unwrap_or(defaults.min_samples),
            horizon: self.horizon.unwrap_or(defaults.horizon),
            limit_percent: self.limit_percent.unwrap_or(defaults.limit_percent),
        }
    }
}

/// Leak problem names (`fd_leak`, `memory_leak`...), each at most once.
fn kinds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<LeakKind>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    let mut kinds = Vec::with_capacity(names.len());
    for name in &names {
        let ProblemKind::Leak(kind) = ProblemKind::from_name(name) else {
            let known = ALL_KINDS.map(|kind| format!("\"{}\"", ProblemKind::Leak(kind).name()));
            return Err(de::Error::invalid_value(
                Unexpected::Str(name),
                &format!("a leak kind: one of {}", known.join(", ")).as_str(),
            ));
        };
        if kinds.contains(&kind) {
            return Err(de::Error::invalid_value(
                Unexpected::Str(name),
                &"each leak kind once",
            ));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// A window of zero holds no trend.
fn window<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let window = duration::deserialize(deserializer)?;
    if window.is_zero() {
        return Err(de::Error::invalid_value(
            Unexpected::Other("a zero duration"),
            &"a window longer than zero, such as \"10m\"",
        ));
    }
    Ok(window)
}

fn min_samples<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let value = u64::deserialize(deserializer)?;
    match usize::try_from(value) {
        Ok(count) if count >= FEWEST_SAMPLES => Ok(count),
        _ => Err(de::Error::invalid_value(
            Unexpected::Unsigned(value),
            &"a number of samples of at least 3, since a trend needs three points",
        )),
    }
}

/// A whole percentage from 1 to 100: 0 would call every unit leaking.
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

fn kinds_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<LeakKind>>, D::Error> {
    kinds(deserializer).map(Some)
}

fn window_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    window(deserializer).map(Some)
}

fn min_samples_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    min_samples(deserializer).map(Some)
}

fn percent_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u8>, D::Error> {
    percent(deserializer).map(Some)
}
