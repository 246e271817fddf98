//! Probes: the checks the kernel cannot make on its own. HTTP (plain HTTP/1.1, no TLS), TCP
//! connect and exec health probes, and operator-written detectors, each on its own tokio task
//! at its own interval so a hung one delays nobody.
//!
//! Results and findings go to one channel as [`ProbeReport`]s; judging them (failures in a
//! row, degradation, integration failures) is [`crate::detect::probe`]'s job.

mod address;
mod config;
mod custom;
mod exec;
mod http;
mod runner;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use address::{HostPort, HttpUrl};
pub use config::{
    Command, Count, DEFAULT_DETECTOR_INTERVAL, DEFAULT_DETECTOR_TIMEOUT, DEFAULT_PROBE_INTERVAL,
    DEFAULT_PROBE_TIMEOUT, DetectorConfig, Factor, Fraction, ProbeConfig, ProbeConfigError,
    ProbeKind, is_kind_name, specs,
};
pub use runner::{ProbeSet, run_probes, spawn_probes};

/// One probe, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Index of the unit in the agent's unit table.
    pub unit: u32,
    /// Given to exec probes as `SELFHEAL_UNIT`.
    pub unit_name: String,
    pub name: String,
    pub check: Check,
    pub interval: Duration,
    /// Bounds one attempt, connecting included.
    pub timeout: Duration,
    pub dependency: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Http {
        url: HttpUrl,
        /// `None`: any 2xx.
        expect_status: Option<u16>,
        body_contains: Option<String>,
    },
    Tcp {
        address: HostPort,
    },
    /// Healthy when the command exits with status 0.
    Exec {
        command: Vec<String>,
    },
}

/// One operator-written detector, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectorSpec {
    pub unit: u32,
    pub unit_name: String,
    pub name: String,
    pub command: Vec<String>,
    /// The problem kind raised on a non-zero exit (JSON output may name another).
    pub kind: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// What one probe attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub unit: u32,
    pub probe: String,
    pub ok: bool,
    /// From the start of the attempt to its verdict (the timeout, when it timed out).
    pub latency: Duration,
    /// "HTTP 200", "HTTP 500, expected 2xx", "timed out after 2s", "exit status 3: ...".
    pub detail: String,
    /// When the attempt ended.
    pub at: Instant,
    pub dependency: bool,
}

/// What one run of an operator-written detector found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomFinding {
    pub unit: u32,
    pub detector: String,
    /// The problem kind when `!ok`; the configured kind when `ok`.
    pub kind: String,
    pub evidence: String,
    pub at: Instant,
    pub ok: bool,
}

/// Everything the probe tasks send the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeReport {
    Result(ProbeResult),
    Finding(CustomFinding),
}
