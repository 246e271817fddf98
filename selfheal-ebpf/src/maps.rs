//! Maps shared by the programs, plus the counter helper.

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use selfheal_common::{
    counters::Counter,
    exit::UnitExits,
    filter::{MAX_MONITORED_CGROUPS, MAX_PATH_LEN, MAX_WATCHED_PATHS, UnitRef},
    sched::{MAX_TASKS, MAX_UNITS, TaskStat, UnitSched},
};

/// v2 cgroup id → monitored unit, for the probes that filter by the current cgroup (exit,
/// socket creation) and for tagging tasks. Not preallocated, like `TASKS`.
#[map]
pub static MONITORED_CGROUPS: HashMap<u64, UnitRef> =
    HashMap::with_max_entries(MAX_MONITORED_CGROUPS, BPF_F_NO_PREALLOC);

/// FNV-1a hash of a unit's cgroup path → unit, for adopting cgroups as they are created.
#[map]
pub static WATCHED_PATHS: HashMap<u64, UnitRef> = HashMap::with_max_entries(MAX_WATCHED_PATHS, 0);

/// tgid → 1 for processes the OOM killer chose; read (and removed) when they exit.
#[map]
pub static OOM_VICTIMS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(1024, 0);

/// Exit records for userspace. 1 MiB holds ~13,000 records (80 bytes with the header): seconds
/// of a burst of exits that need a record, which the kernel has already thinned (see
/// process_exit.rs).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// unit → per-CPU exit counts: exits that got no record (clean child exits), records lost.
#[map]
pub static UNIT_EXITS: PerCpuArray<UnitExits> = PerCpuArray::with_max_entries(MAX_UNITS, 0);

/// pid → scheduler state, for tasks of monitored units only. Not preallocated: entries cost
/// memory only for the tasks that exist (`BPF_F_NO_PREALLOC`).
#[map]
pub static TASKS: HashMap<u32, TaskStat> = HashMap::with_max_entries(MAX_TASKS, BPF_F_NO_PREALLOC);

/// unit → per-CPU scheduler aggregate.
#[map]
pub static UNIT_SCHED: PerCpuArray<UnitSched> = PerCpuArray::with_max_entries(MAX_UNITS, 0);

/// unit → live inet sockets (per CPU; the sum over CPUs is the count).
#[map]
pub static UNIT_SOCKETS: PerCpuArray<i64> = PerCpuArray::with_max_entries(MAX_UNITS, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Per-CPU scratch space for a cgroup path (too large for the 512-byte BPF stack).
#[map]
pub static PATH_SCRATCH: PerCpuArray<[u8; MAX_PATH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Map flag: allocate hash entries when they are inserted, not all at load time.
const BPF_F_NO_PREALLOC: u32 = 1;

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, programs do not nest on one CPU for these tracepoints.
        unsafe { *slot += 1 };
    }
}

/// The monitored unit the current task belongs to, if any.
#[inline(always)]
pub fn current_unit() -> Option<(u64, UnitRef)> {
    // SAFETY: helper without preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out before any other map operation can change it.
    let unit = unsafe { MONITORED_CGROUPS.get(&cgroup_id) }.copied()?;
    Some((cgroup_id, unit))
}
