//! Leak detector (issue 4): resource series per unit → leak problems with time to exhaustion.
//!
//! TYPES BELOW ARE THE CONTRACT with the sensor (kernel socket counts, procfs, cgroupfs, PSI)
//! that fills them. The detection logic is to be written here: pure, no I/O, time passed in.

use std::time::Instant;

use super::LeakKind;

/// One reading of one resource of a unit.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceSample {
    pub at: Instant,
    pub kind: LeakKind,
    /// Current usage: open fds, live sockets, TCP connections, tasks, bytes of memory.
    pub value: f64,
    /// The limit usage runs into (RLIMIT_NOFILE, TasksMax/pids.max, MemoryMax/memory.max...),
    /// when there is one.
    pub limit: Option<f64>,
    /// The process responsible for most of the usage (pid, comm), when known.
    pub top_process: Option<(u32, String)>,
}
