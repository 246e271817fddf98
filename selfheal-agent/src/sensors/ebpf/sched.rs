//! Reads the kernel's scheduler maps (`TASKS`, `UNIT_SCHED`) and seeds `TASKS` with tasks that
//! were already in a unit's cgroup before the probes saw them run.

use std::{cell::Cell, os::fd::AsFd as _};

use aya::maps::{HashMap, IterableMap as _, MapData, MapError, PerCpuArray};
use log::warn;
use selfheal_common::sched::{RUNQ_BUCKETS, TaskStat, UnitSched};

use super::{PerCpuRead, TaskWalk};

pub struct SchedMaps {
    tasks: HashMap<MapData, u32, TaskStat>,
    units: PerCpuArray<MapData, UnitSched>,
    walk: TaskWalk,
    /// Whether `TASKS` and `UNIT_SCHED` are read in batches (until the kernel says it cannot).
    batch: Cell<bool>,
}

/// Tasks read from `TASKS` per batch call.
const TASKS_PER_CALL: usize = 1024;

/// One unit's scheduler aggregate, summed over CPUs.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnitAggregate {
    pub last_ran_ns: u64,
    pub runq_hist: [u64; RUNQ_BUCKETS],
}

impl SchedMaps {
    pub fn new(
        tasks: HashMap<MapData, u32, TaskStat>,
        units: PerCpuArray<MapData, UnitSched>,
        walk: TaskWalk,
    ) -> Self {
        Self {
            tasks,
            units,
            walk,
            batch: Cell::new(true),
        }
    }

    /// Has the kernel tag the tasks of monitored cgroups it has not seen join (the threads of
    /// a process moved as a whole; tasks that were there before the unit was watched).
    pub fn tag_untracked(&self) {
        self.walk.run_or_warn("untracked tasks");
    }

    /// Every task the kernel tracks, by pid (tasks of monitored units only).
    pub fn tasks(&self) -> Vec<(u32, TaskStat)> {
        if self.batch.get() {
            match super::lookup_all(self.tasks.map().fd().as_fd(), TASKS_PER_CALL) {
                Ok(tasks) => return tasks,
                Err(e) => {
                    warn!("reading TASKS in batches: {e}; reading it entry by entry from now on");
                    self.batch.set(false);
                }
            }
        }
        self.tasks.iter().filter_map(Result::ok).collect()
    }

    /// Starts tracking a task the probes have not seen yet (it has not left a CPU since the
    /// agent started watching its cgroup). Never overwrites what the kernel recorded.
    pub fn seed(&mut self, pid: u32, stat: &TaskStat) -> Result<(), MapError> {
        // BPF_NOEXIST: the kernel's own entry, if it raced us, wins.
        match self.tasks.insert(pid, *stat, 1) {
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            other => other,
        }
    }

    pub fn forget(&mut self, pid: u32) {
        let _ = self.tasks.remove(&pid);
    }

    pub fn unit(&self, unit: u32) -> UnitAggregate {
        self.units
            .get(&unit, 0)
            .map(|per_cpu| UnitAggregate::of(per_cpu.iter().copied()))
            .unwrap_or_default()
    }

    /// Reads the aggregates of units `0..count` in one call into `read` (see [`UnitTable`]);
    /// false when the kernel cannot batch.
    pub fn read_units(&self, count: u32, read: &mut PerCpuRead<UnitSched>) -> bool {
        super::per_cpu_array_batch(
            "UNIT_SCHED",
            self.units.map().fd().as_fd(),
            count.min(self.units.len()),
            &self.batch,
            read,
        )
    }
}

/// The units' aggregates as a pass found them: one batch read, each unit's per-CPU values
/// folded only when asked for (a still unit's last run, not its histogram); or, when the
/// kernel cannot batch, a lookup per unit.
pub struct UnitTable<'a> {
    pub maps: &'a SchedMaps,
    /// The batch read, when there is one.
    pub read: Option<&'a PerCpuRead<UnitSched>>,
}

impl UnitTable<'_> {
    /// When a task of the unit last entered or left a CPU.
    pub fn last_ran_ns(&self, unit: u32) -> u64 {
        match self.read {
            Some(read) => read.of(unit).map_or(0, |per_cpu| {
                per_cpu.map(|cpu| cpu.last_ran_ns).max().unwrap_or(0)
            }),
            None => self.maps.unit(unit).last_ran_ns,
        }
    }

    pub fn aggregate(&self, unit: u32) -> UnitAggregate {
        match self.read {
            Some(read) => read.of(unit).map(UnitAggregate::of).unwrap_or_default(),
            None => self.maps.unit(unit),
        }
    }
}

impl UnitAggregate {
    /// The sum of a unit's per-CPU records: the latest run, the run-queue waits added up.
    fn of(per_cpu: impl Iterator<Item = UnitSched>) -> Self {
        let mut total = Self::default();
        for cpu in per_cpu {
            total.last_ran_ns = total.last_ran_ns.max(cpu.last_ran_ns);
            for (sum, n) in total.runq_hist.iter_mut().zip(cpu.runq_hist.iter()) {
                *sum += n;
            }
        }
        total
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
