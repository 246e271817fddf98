//! What `status` and the metrics show of each probe.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One probe as `status` and the metrics show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    pub dependency: bool,
    /// `None` until the first result.
    pub up: Option<bool>,
    #[serde(rename = "latency_ms", with = "millis")]
    pub last_latency: Option<Duration>,
    pub detail: String,
    /// Failures in a row, as judged (those in the grace period do not count).
    pub consecutive_failures: u32,
    /// `None` while still learning.
    #[serde(rename = "baseline_ms", with = "millis")]
    pub baseline: Option<Duration>,
    pub degraded: bool,
    pub checks: u64,
    pub failures: u64,
}

/// `Option<Duration>` as (fractional) milliseconds in status JSON.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => s.serialize_some(&(duration.as_nanos() as f64 / 1e6)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let millis = Option::<f64>::deserialize(d)?;
        Ok(millis
            .filter(|m| m.is_finite() && *m >= 0.0)
            .map(|m| Duration::from_nanos((m * 1e6).round() as u64)))
    }
}
