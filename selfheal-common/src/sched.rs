//! Scheduler state the kernel keeps for tasks of monitored units (maps `TASKS` and
//! `UNIT_SCHED`). The kernel only updates counters and timestamps; userspace reads the maps
//! once per tick and turns differences into observations. No record per scheduler event.

/// Map names.
pub const TASKS: &str = "TASKS";
/// Task-local storage (`BPF_MAP_TYPE_TASK_STORAGE`): a task of a monitored unit carries a
/// [`TaskTag`], every other task has none, so the scheduler hook's unmonitored path is a
/// NULL `task->bpf_storage` and a return.
pub const TASK_TAGS: &str = "TASK_TAGS";
/// The `iter/task` program that tags the tasks already in a unit's cgroups when the unit
/// starts being watched (the only moment the kernel cannot see them join).
pub const TAG_WALK: &str = "tag_walk";
pub const UNIT_SCHED: &str = "UNIT_SCHED";

/// Capacity of `TASKS`: threads of all monitored units together. Entries are allocated as
/// tasks appear; the bucket table (16 bytes per slot) is what the capacity costs up front.
pub const MAX_TASKS: u32 = 16384;
/// Capacity of `UNIT_SCHED` (indexed by unit): the most units one agent monitors.
pub const MAX_UNITS: u32 = 1024;
/// Run-queue latency histogram buckets: bucket `i` counts waits in [2^i, 2^(i+1)) µs
/// (bucket 0 also holds waits under 1 µs; the last bucket everything longer).
pub const RUNQ_BUCKETS: usize = 24;

/// `TaskStat::state` values (the kernel's `__state` bits as passed by sched_switch).
pub const TASK_RUNNING: u32 = 0x0;
pub const TASK_INTERRUPTIBLE: u32 = 0x1;
pub const TASK_UNINTERRUPTIBLE: u32 = 0x2;
pub const TASK_STOPPED: u32 = 0x4;
pub const TASK_TRACED: u32 = 0x8;
/// Set with UNINTERRUPTIBLE for idle kernel waits (TASK_IDLE): not a hung task.
pub const TASK_NOLOAD: u32 = 0x400;

/// The tag a task of a monitored unit carries in `TASK_TAGS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskTag {
    /// Index of the monitored unit.
    pub unit: u32,
    pub _pad: u32,
}

/// One task (thread) of a monitored unit, keyed by its pid in `TASKS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskStat {
    pub tgid: u32,
    /// Index of the monitored unit.
    pub unit: u32,
    /// State when the task last left the CPU (`TASK_*`); `TASK_RUNNING` while on a CPU or
    /// runnable.
    pub state: u32,
    /// 1 while the task is on a CPU.
    pub on_cpu: u32,
    /// `bpf_ktime_get_ns()` of the last switch in or out.
    pub since_ns: u64,
    /// Total time on a CPU up to the last switch out: the kernel's own
    /// `se.sum_exec_runtime`, read at switch-out.
    pub oncpu_ns: u64,
    /// Switches out in a sleeping state (the task blocked or yielded).
    pub voluntary: u64,
    /// Switches out while still runnable (preempted).
    pub involuntary: u64,
    /// Total time spent runnable waiting for a CPU up to the last switch out: the kernel's
    /// `sched_info.run_delay`, read at switch-out.
    pub run_delay_ns: u64,
}

/// Per-unit, per-CPU scheduler aggregate (`UNIT_SCHED`, a per-CPU array indexed by unit).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitSched {
    /// Last time any task of the unit left or entered a CPU on this CPU.
    pub last_ran_ns: u64,
    /// Run-queue waits by log2(µs) bucket, cumulative.
    pub runq_hist: [u64; RUNQ_BUCKETS],
}

impl Default for UnitSched {
    fn default() -> Self {
        Self {
            last_ran_ns: 0,
            runq_hist: [0; RUNQ_BUCKETS],
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), u32 fields only.
unsafe impl aya::Pod for TaskTag {}

/// Histogram bucket for a run-queue wait of `ns` nanoseconds.
#[inline(always)]
pub fn runq_bucket(ns: u64) -> usize {
    let us = ns / 1000;
    if us == 0 {
        return 0;
    }
    let bucket = (63 - us.leading_zeros()) as usize;
    if bucket >= RUNQ_BUCKETS {
        RUNQ_BUCKETS - 1
    } else {
        bucket
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integer fields only, no implicit padding (u32 fields pair up before u64s).
unsafe impl aya::Pod for TaskStat {}
#[cfg(feature = "user")]
// SAFETY: repr(C), u64 fields only.
unsafe impl aya::Pod for UnitSched {}
