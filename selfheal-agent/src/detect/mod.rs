//! Pure detectors: observations in, problems out. No I/O; time comes in as a parameter.

pub mod exit;

use std::time::Instant;

use serde::Serialize;

/// What kind of trouble a unit is in. The names are the ones used in config, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The main process died uncleanly: a non-zero status, a fatal signal, an OOM kill.
    Crash,
    /// The main process exited cleanly (status 0, or SIGHUP/SIGINT/SIGTERM/SIGPIPE).
    Exit,
}

impl ProblemKind {
    pub const fn name(self) -> &'static str {
        match self {
            ProblemKind::Crash => "crash",
            ProblemKind::Exit => "exit",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Index of the unit in the agent's unit table.
    pub unit: u32,
    pub kind: ProblemKind,
    pub detected_at: Instant,
    /// Human-readable evidence, e.g. "main process 123 (web) was killed by SIGKILL".
    pub evidence: String,
    /// The process whose fate raised the problem, when there is one.
    pub pid: Option<u32>,
}
