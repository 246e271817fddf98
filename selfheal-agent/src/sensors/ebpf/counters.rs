//! Reads the kernel programs' per-CPU counters.

use aya::maps::{MapData, PerCpuArray};
use selfheal_common::counters::Counter;

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
