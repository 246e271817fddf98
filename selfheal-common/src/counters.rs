//! Per-CPU counters kept by the kernel programs (map `COUNTERS`, one `u64` slot per counter).
//!
//! They count only what happens inside monitored units, so that a process exiting anywhere
//! else costs a single map lookup and leaves no trace — which the tests check here.

/// Index of each counter in the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Threads that exited inside a monitored unit (each thread of a process counts).
    ThreadExits = 0,
    /// Processes (thread groups) that exited inside a monitored unit.
    ProcessExits = 1,
    /// Exit records written to the `EVENTS` ring buffer.
    EventsSubmitted = 2,
    /// Exit records lost because the ring buffer was full.
    EventsLost = 3,
    /// Cgroups the kernel adopted into the filter when they were created under a watched path.
    CgroupsAdopted = 4,
    /// Monitored cgroups the kernel dropped from the filter when they were removed.
    CgroupsReleased = 5,
    /// OOM victims recorded (any cgroup: the OOM killer runs in the allocating task's context).
    OomVictims = 6,
    /// cgroup paths too long to hash in the kernel (userspace still resolves them over D-Bus).
    PathsTooLong = 7,
    /// Tasks given a monitored unit's tag (fork, cgroup move, or the walk at watch time).
    TasksTagged = 8,
    /// Tasks whose tag was removed because they left every monitored cgroup.
    TasksUntagged = 9,
    /// Clean exits of a unit's own children: counted per unit, no record sent.
    ExitsCounted = 10,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 11] = [
        Counter::ThreadExits,
        Counter::ProcessExits,
        Counter::EventsSubmitted,
        Counter::EventsLost,
        Counter::CgroupsAdopted,
        Counter::CgroupsReleased,
        Counter::OomVictims,
        Counter::PathsTooLong,
        Counter::TasksTagged,
        Counter::TasksUntagged,
        Counter::ExitsCounted,
    ];

    /// Number of slots in the `COUNTERS` map.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The name used in status output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::ThreadExits => "thread_exits",
            Counter::ProcessExits => "process_exits",
            Counter::EventsSubmitted => "events_submitted",
            Counter::EventsLost => "events_lost",
            Counter::CgroupsAdopted => "cgroups_adopted",
            Counter::CgroupsReleased => "cgroups_released",
            Counter::OomVictims => "oom_victims",
            Counter::PathsTooLong => "paths_too_long",
            Counter::TasksTagged => "tasks_tagged",
            Counter::TasksUntagged => "tasks_untagged",
            Counter::ExitsCounted => "exits_counted",
        }
    }
}
