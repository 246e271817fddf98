//! Reads the kernel programs' per-CPU counters.

use aya::maps::{MapData, PerCpuArray};
use selfheal_common::{counters::Counter, exit::UnitExits};

pub struct KernelCounters {
    map: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    pub fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self { map }
    }

    /// Every counter summed over CPUs, by name; a counter that cannot be read reads 0.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| {
                let total = self
                    .map
                    .get(&(c as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (c.name(), total)
            })
            .collect()
    }
}

/// Per-unit exit counts kept by the exit hook: clean child exits it sent no record for, and
/// records the ring buffer had no room for.
pub struct UnitExitCounts {
    map: PerCpuArray<MapData, UnitExits>,
}

impl UnitExitCounts {
    pub fn new(map: PerCpuArray<MapData, UnitExits>) -> Self {
        Self { map }
    }

    /// The unit's counts summed over CPUs (zero when unreadable). A `lost` that grew since the
    /// last look means exits of the unit went unseen: its state must be read again from
    /// systemd (`ExecMainPID`, `ExecMainStatus`).
    pub fn of(&self, unit: u32) -> UnitExits {
        let mut total = UnitExits::default();
        if let Ok(per_cpu) = self.map.get(&unit, 0) {
            for cpu in per_cpu.iter() {
                total.quiet += cpu.quiet;
                total.lost += cpu.lost;
            }
        }
        total
    }
}
