//! The record the kernel emits when a process of a monitored unit exits.

/// `ExitEvent::flags`: the process was chosen by the OOM killer (oom:mark_victim).
pub const EXIT_FLAG_OOM_KILLED: u32 = 1 << 0;
/// `ExitEvent::flags`: the exiting thread was the thread-group leader.
pub const EXIT_FLAG_GROUP_LEADER: u32 = 1 << 1;

/// Map name of the per-unit exit counts.
pub const UNIT_EXITS: &str = "UNIT_EXITS";

/// Per unit and CPU (`UNIT_EXITS`, indexed by unit): what the exit hook did not send.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnitExits {
    /// Clean exits of processes whose parent is in the unit: counted, no record.
    pub quiet: u64,
    /// Records lost because the ring buffer was full: the unit must be resynced from systemd.
    pub lost: u64,
}

/// One process (thread group) of a monitored unit exited. Written to the `EVENTS` ring buffer
/// by the `sched_process_exit` program when the last thread of the group exits, for the exits
/// userspace acts on or reports (see selfheal-ebpf/src/process_exit.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    /// `bpf_ktime_get_ns()` at exit: CLOCK_MONOTONIC, comparable with the agent's clock.
    pub ktime_ns: u64,
    /// v2 id of the cgroup the process exited in (the unit's or one below it).
    pub cgroup_id: u64,
    /// The thread that exited last (the kernel's pid).
    pub pid: u32,
    /// The process (thread group) id, what userspace calls the pid.
    pub tgid: u32,
    /// `task_struct::exit_code` in wait-status form: `(code & 0xff) << 8` for a normal exit,
    /// the signal number (| 0x80 if it dumped core) for a death by signal.
    pub exit_code: u32,
    /// Index of the monitored unit (see [`crate::filter::UnitRef`]).
    pub unit: u32,
    /// `EXIT_FLAG_*` bits.
    pub flags: u32,
    /// Process id of the parent (`real_parent->tgid`): the service manager for a main process.
    pub ppid: u32,
    /// `comm` of the exiting thread, NUL-padded.
    pub comm: [u8; 16],
}

impl ExitEvent {
    /// The signal that killed the process, if it died by one.
    pub const fn signal(&self) -> Option<u32> {
        match self.exit_code & 0x7f {
            0 => None,
            sig => Some(sig),
        }
    }

    /// The exit status passed to exit(), if the process exited normally.
    pub const fn status(&self) -> Option<u32> {
        match self.exit_code & 0x7f {
            0 => Some((self.exit_code >> 8) & 0xff),
            _ => None,
        }
    }

    pub const fn core_dumped(&self) -> bool {
        self.exit_code & 0x80 != 0
    }

    pub const fn oom_killed(&self) -> bool {
        self.flags & EXIT_FLAG_OOM_KILLED != 0
    }

    /// `comm` up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let len = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        &self.comm[..len]
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integer fields only, no padding (the u32 fields pair up).
unsafe impl aya::Pod for ExitEvent {}
#[cfg(feature = "user")]
// SAFETY: repr(C), u64 fields only.
unsafe impl aya::Pod for UnitExits {}
