//! Reads the kernel programs' per-CPU counters.

use std::{cell::Cell, os::fd::AsFd as _};

use aya::maps::{IterableMap as _, MapData, PerCpuArray};
use selfheal_common::{counters::Counter, exit::UnitExits};

use super::PerCpuRead;

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
    /// The kernel answered batch reads of the map (else it is read entry by entry).
    batch: Cell<bool>,
    /// The last batch read, its pages reused by the next.
    read: PerCpuRead<UnitExits>,
}

impl UnitExitCounts {
    pub fn new(map: PerCpuArray<MapData, UnitExits>) -> Self {
        Self {
            map,
            batch: Cell::new(true),
            read: PerCpuRead::default(),
        }
    }

    /// The units among `0..count` that lost exit records, with how many since load: one batch
    /// read of the map, entry by entry when the kernel cannot batch.
    pub fn lost_below(&mut self, count: u32) -> Vec<(u32, u64)> {
        let batched = super::per_cpu_array_batch(
            "UNIT_EXITS",
            self.map.map().fd().as_fd(),
            count,
            &self.batch,
            &mut self.read,
        );
        let lost = |unit: u32| {
            if batched {
                self.read.of(unit).map_or(0, |per_cpu| sum(per_cpu).lost)
            } else {
                self.of(unit).lost
            }
        };
        (0..count)
            .map(|unit| (unit, lost(unit)))
            .filter(|(_, lost)| *lost > 0)
            .collect()
    }

    /// The unit's counts summed over CPUs (zero when unreadable). A `lost` that grew since the
    /// last look means exits of the unit went unseen: its state must be read again from
    /// systemd (`ExecMainPID`, `ExecMainStatus`).
    pub fn of(&self, unit: u32) -> UnitExits {
        self.map
            .get(&unit, 0)
            .map(|per_cpu| sum(per_cpu.iter().copied()))
            .unwrap_or_default()
    }
}

fn sum(per_cpu: impl Iterator<Item = UnitExits>) -> UnitExits {
    let mut total = UnitExits::default();
    for cpu in per_cpu {
        total.quiet += cpu.quiet;
        total.lost += cpu.lost;
    }
    total
}
