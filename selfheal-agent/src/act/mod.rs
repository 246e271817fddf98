//! Actuators: carry out the policy's decisions against the real system and report outcomes.

pub mod cgroup_events;
pub mod pins;
pub mod prompt_stop;
pub mod quarantine;
pub mod restart;
pub mod unit_ops;
pub mod verify;

use std::time::Duration;

/// How an action ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub unit: u32,
    pub action: &'static str,
    /// "done", "failed" or "skipped".
    pub result: &'static str,
    pub detail: String,
    pub duration: Duration,
    /// CLOCK_MONOTONIC (ns) when the systemd call was sent, for timing the agent's own part.
    pub issued_ns: Option<u64>,
}
