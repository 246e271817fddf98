//! The state the agent's tasks share: the unit table, kernel hook status and counters.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use super::Options;
use crate::{
    config::UnitPolicy,
    sensors::ebpf::{HookStatus, KernelCounters},
    systemd::Bus,
    units::MonitoredUnit,
};

pub struct AgentState {
    pub started: Instant,
    pub bus: Bus,
    pub dry_run: bool,
    /// Indexed by the unit number the kernel reports (`UnitRef::unit`).
    pub units: Vec<MonitoredUnit>,
    pub hooks: Vec<HookStatus>,
    pub kernel_counters: Option<KernelCounters>,
    /// Where /metrics, /health and the webhook listen (the bound address).
    pub http_address: String,
    /// Thread ids the kernel tracks in its scheduler map (monitored units' tasks only).
    pub tracked_tasks: Vec<u32>,
    /// The agent's supervised tasks, for the parts that stopped.
    pub parts: Option<super::supervise::Parts>,
}

impl AgentState {
    pub fn new(opts: &Options, units: &[UnitPolicy], hooks: Vec<HookStatus>) -> Self {
        Self {
            started: Instant::now(),
            bus: opts.bus,
            dry_run: opts.dry_run,
            units: units.iter().cloned().map(MonitoredUnit::new).collect(),
            hooks,
            kernel_counters: None,
            http_address: String::new(),
            tracked_tasks: Vec::new(),
            parts: None,
        }
    }
}

/// Shared, briefly locked state. Never held across an await.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<AgentState>>);

impl Shared {
    pub fn new(state: AgentState) -> Self {
        Self(Arc::new(Mutex::new(state)))
    }

    pub fn lock(&self) -> MutexGuard<'_, AgentState> {
        // A panic while holding the lock leaves plain data behind: keep going with it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
