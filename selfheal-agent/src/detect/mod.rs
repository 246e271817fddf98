//! Pure detectors: observations in, problems out. No I/O; time comes in as a parameter.

pub mod exit;
pub mod leak;
pub mod probe;
pub mod stall;

use std::time::Instant;

use serde::Serialize;

/// What kind of trouble a unit is in. The names (see [`ProblemKind::name`]) are the ones used
/// in config ladders, logs, metrics labels and the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The main process died uncleanly: a non-zero status, a fatal signal, an OOM kill.
    Crash,
    /// The main process exited cleanly (status 0, or SIGHUP/SIGINT/SIGTERM/SIGPIPE).
    Exit,
    /// Scheduler-level stalls (issue 3).
    Stall(StallKind),
    /// A resource growing towards its limit (issue 4).
    Leak(LeakKind),
    /// N failed health probes in a row.
    ConsecutiveFailures,
    /// Probe latency or error rate well above the learned baseline.
    PerformanceDegradation,
    /// A dependency's probe fails.
    IntegrationFailure,
    /// Raised by an operator-written detector or an Alertmanager alert; the name comes from there.
    Custom(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StallKind {
    Stopped,
    Hung,
    Spinning,
    Wedged,
    Starved,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakKind {
    Fd,
    Socket,
    Connection,
    Thread,
    Memory,
}

impl StallKind {
    pub fn name(self) -> &'static str {
        match self {
            StallKind::Stopped => "stopped",
            StallKind::Hung => "hung",
            StallKind::Spinning => "spinning",
            StallKind::Wedged => "wedged",
            StallKind::Starved => "starved",
        }
    }
}

impl ProblemKind {
    pub fn name(&self) -> &str {
        match self {
            ProblemKind::Crash => "crash",
            ProblemKind::Exit => "exit",
            ProblemKind::Stall(kind) => kind.name(),
            ProblemKind::Leak(kind) => match kind {
                LeakKind::Fd => "fd_leak",
                LeakKind::Socket => "socket_leak",
                LeakKind::Connection => "connection_leak",
                LeakKind::Thread => "thread_leak",
                LeakKind::Memory => "memory_leak",
            },
            ProblemKind::ConsecutiveFailures => "consecutive_failures",
            ProblemKind::PerformanceDegradation => "performance_degradation",
            ProblemKind::IntegrationFailure => "integration_failure",
            ProblemKind::Custom(name) => name,
        }
    }

    /// Every kind with a fixed name.
    pub const BUILTIN: [ProblemKind; 15] = [
        ProblemKind::Crash,
        ProblemKind::Exit,
        ProblemKind::Stall(StallKind::Stopped),
        ProblemKind::Stall(StallKind::Hung),
        ProblemKind::Stall(StallKind::Spinning),
        ProblemKind::Stall(StallKind::Wedged),
        ProblemKind::Stall(StallKind::Starved),
        ProblemKind::Leak(LeakKind::Fd),
        ProblemKind::Leak(LeakKind::Socket),
        ProblemKind::Leak(LeakKind::Connection),
        ProblemKind::Leak(LeakKind::Thread),
        ProblemKind::Leak(LeakKind::Memory),
        ProblemKind::ConsecutiveFailures,
        ProblemKind::PerformanceDegradation,
        ProblemKind::IntegrationFailure,
    ];

    /// The kind for a name used in config or an alert; unknown names are custom kinds.
    pub fn from_name(name: &str) -> ProblemKind {
        Self::BUILTIN
            .iter()
            .find(|k| k.name() == name)
            .cloned()
            .unwrap_or_else(|| ProblemKind::Custom(name.to_owned()))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Index of the unit in the agent's unit table.
    pub unit: u32,
    pub kind: ProblemKind,
    /// When the condition was first seen (for a stall: when it started, not when it crossed
    /// the threshold).
    pub detected_at: Instant,
    /// Human-readable evidence, e.g. "main process 123 (web) was killed by SIGKILL".
    pub evidence: String,
    /// The process whose fate raised the problem, when there is one.
    pub pid: Option<u32>,
    /// A task of the unit may survive SIGKILL (uninterruptible sleep): restarting cannot help,
    /// the policy must escalate rather than loop.
    pub unkillable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_kind_round_trips_through_its_name() {
        for kind in [
            ProblemKind::Crash,
            ProblemKind::Stall(StallKind::Wedged),
            ProblemKind::Leak(LeakKind::Connection),
            ProblemKind::PerformanceDegradation,
        ] {
            assert_eq!(ProblemKind::from_name(kind.name()), kind);
        }
        assert_eq!(
            ProblemKind::from_name("disk_full"),
            ProblemKind::Custom("disk_full".into())
        );
    }
}
