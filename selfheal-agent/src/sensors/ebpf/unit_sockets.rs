//! Live inet socket counts per unit, kept by the cgroup_sock programs.

use aya::maps::{MapData, PerCpuArray};

pub struct UnitSockets {
    map: PerCpuArray<MapData, i64>,
}

impl UnitSockets {
    pub fn new(map: PerCpuArray<MapData, i64>) -> Self {
        Self { map }
    }

    /// Sockets the unit's processes created and have not released, summed over CPUs (a socket
    /// created on one CPU and released on another moves each CPU's share, never the sum).
    pub fn live(&self, unit: u32) -> Option<u64> {
        let per_cpu = self.map.get(&unit, 0).ok()?;
        Some(per_cpu.iter().sum::<i64>().max(0) as u64)
    }
}
