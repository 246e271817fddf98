//! Stall detector (issue 3): scheduler observations per unit per tick → stall problems.
//!
//! TYPES BELOW ARE THE CONTRACT with the sensor (kernel maps + procfs + PSI) that fills them.
//! The detection logic is to be written here: pure, no I/O, time passed in.

use std::time::{Duration, Instant};

/// Scheduler state of one task at the end of the sampling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// On a CPU right now.
    Running,
    /// Runnable, waiting for a CPU.
    Runnable,
    /// Interruptible sleep (S): waiting for an event.
    Sleeping,
    /// Uninterruptible sleep (D): may not die on SIGKILL.
    DiskSleep,
    /// Stopped by a signal (T).
    Stopped,
    /// Stopped by a tracer (t).
    Traced,
}

/// One task (thread) of the unit.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSample {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub state: TaskState,
    /// How long the task has been in `state` (since its last context switch).
    pub state_for: Duration,
    /// CPU time the task used during the window.
    pub on_cpu: Duration,
    /// Voluntary context switches during the window (it blocked / yielded).
    pub voluntary_switches: u64,
    /// Involuntary switches during the window (it was preempted).
    pub involuntary_switches: u64,
    /// Kernel wait channel (/proc/PID/wchan) — filled for D-state tasks where readable.
    pub wchan: Option<String>,
    /// Kernel stack (/proc/PID/stack) — filled for D-state tasks where readable.
    pub kernel_stack: Option<String>,
}

/// Work waiting for the unit in the kernel: sockets it owns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingWork {
    /// Connections waiting in listen queues (sum of accept queues).
    pub accept_queue: u64,
    /// Bytes waiting in connected sockets' receive queues.
    pub recv_queue: u64,
    /// True when the queues shrank during the window (the unit is consuming them).
    pub draining: bool,
}

/// CPU contention evidence for the unit's cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuContention {
    /// p99 of the time its tasks waited runnable before getting a CPU, over the window.
    pub runq_p99: Option<Duration>,
    /// cgroup `cpu.pressure` "some avg10" (percent), where PSI exists.
    pub psi_some_avg10: Option<f64>,
    /// Periods throttled by its own CPU quota during the window (`nr_throttled` delta).
    pub nr_throttled: u64,
    pub throttled_time: Duration,
}

/// Everything the stall detector sees about one unit for one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedSample {
    pub at: Instant,
    /// Length of the window the deltas cover (normally one tick).
    pub window: Duration,
    pub tasks: Vec<TaskSample>,
    /// Time since any task of the unit was last on a CPU (None: ran during the window).
    pub idle_for: Option<Duration>,
    pub pending: PendingWork,
    pub contention: CpuContention,
}
