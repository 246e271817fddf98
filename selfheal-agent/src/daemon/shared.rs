//! The engine's state that the publisher reads: the unit table, kernel hook status and counters.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::Notify;

use super::Options;
use crate::{
    sensors::ebpf::{HookStatus, KernelCounters},
    systemd::Bus,
    units::{MonitoredUnit, tables::Tables},
};

pub struct AgentState {
    pub started: Instant,
    pub bus: Bus,
    pub dry_run: bool,
    /// Indexed by the unit number the kernel reports (`UnitRef::unit`); only grows (see
    /// [`crate::units::add`]). Retired units stay in place: read through [`Self::unit`].
    pub units: Vec<MonitoredUnit>,
    /// The config's `[[unit]]` tables: what a unit systemd announces is adopted under.
    pub tables: Tables,
    pub hooks: Vec<HookStatus>,
    pub kernel_counters: Option<Arc<KernelCounters>>,
    /// Where /metrics, /health and the webhook listen (the bound address).
    pub http_address: String,
    /// Thread ids the kernel tracks in its scheduler map (monitored units' tasks only).
    pub tracked_tasks: Vec<u32>,
    /// The agent's supervised tasks, for the parts that stopped.
    pub parts: Option<super::supervise::Parts>,
}

impl AgentState {
    /// Monitors the tables' exact names from the start, in file order; patterns adopt later.
    pub fn new(opts: &Options, tables: Tables, hooks: Vec<HookStatus>) -> Self {
        Self {
            started: Instant::now(),
            bus: opts.bus,
            dry_run: opts.dry_run,
            units: tables.exact().cloned().map(MonitoredUnit::new).collect(),
            tables,
            hooks,
            kernel_counters: None,
            http_address: String::new(),
            tracked_tasks: Vec::new(),
            parts: None,
        }
    }
}

impl AgentState {
    /// The monitored unit at `index`; `None` once it was let go.
    pub fn unit(&self, index: u32) -> Option<&MonitoredUnit> {
        self.units.get(index as usize).filter(|u| !u.retired)
    }

    pub fn unit_mut(&mut self, index: u32) -> Option<&mut MonitoredUnit> {
        self.units.get_mut(index as usize).filter(|u| !u.retired)
    }

    /// The units monitored now, with their indices.
    pub fn live_units(&self) -> impl Iterator<Item = (u32, &MonitoredUnit)> {
        self.units
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.retired)
            .map(|(i, u)| (i as u32, u))
    }
}

/// The state the engine writes — it alone: the tracker sends it what changed — briefly locked,
/// never across an await. The report layer does not lock it: it reads the
/// [`super::publish::Snapshot`] published after each change; the publisher locks it to build
/// that snapshot.
#[derive(Clone)]
pub struct Shared {
    state: Arc<Mutex<AgentState>>,
    /// Told after every write: the publisher wakes on it.
    changed: Arc<Notify>,
    /// Writes so far (see [`Self::generation`]).
    writes: Arc<AtomicU64>,
    /// Open [`Held`] guards: writes that belong together are under way.
    holds: Arc<AtomicUsize>,
    /// Told when a [`Held`] guard drops: the publisher waits on it, not on every write.
    released: Arc<Notify>,
}

impl Shared {
    pub fn new(state: AgentState) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            changed: Arc::new(Notify::new()),
            writes: Arc::new(AtomicU64::new(0)),
            holds: Arc::new(AtomicUsize::new(0)),
            released: Arc::new(Notify::new()),
        }
    }

    /// Holds publication back until the guard drops: the writes made meanwhile (a sampling
    /// pass's decisions, then its views) are published together, so no reader sees a
    /// decision in a unit's history next to the view of the pass before.
    pub fn hold(&self) -> Held {
        self.holds.fetch_add(1, Ordering::AcqRel);
        Held {
            holds: Arc::clone(&self.holds),
            released: Arc::clone(&self.released),
        }
    }

    /// Whether a [`Held`] guard is open.
    pub fn held(&self) -> bool {
        self.holds.load(Ordering::Acquire) > 0
    }

    /// Resolves after a [`Held`] guard drops (or at once if one dropped since the last call).
    pub async fn released(&self) {
        self.released.notified().await;
    }

    /// The state, to read or write; a write (any `&mut` use) wakes the publisher when the
    /// guard drops.
    pub fn lock(&self) -> StateGuard<'_> {
        StateGuard {
            // A panic while holding the lock leaves plain data behind: keep going with it.
            guard: self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            changed: &self.changed,
            writes: &self.writes,
            wrote: false,
        }
    }

    /// How many writes the state has had: what was derived from it at one generation holds
    /// as long as the generation does (the engine's list of units to sample, say).
    pub fn generation(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Resolves after the next write (or at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

pub struct StateGuard<'a> {
    guard: MutexGuard<'a, AgentState>,
    changed: &'a Notify,
    writes: &'a AtomicU64,
    wrote: bool,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = AgentState;

    fn deref(&self) -> &AgentState {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut AgentState {
        self.wrote = true;
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        if self.wrote {
            // Counted before the lock is released: a reader that sees the old count cannot
            // have read the new state.
            self.writes.fetch_add(1, Ordering::AcqRel);
            // A stored permit: a write while the publisher builds is published next.
            self.changed.notify_one();
        }
    }
}

/// See [`Shared::hold`].
pub struct Held {
    holds: Arc<AtomicUsize>,
    released: Arc<Notify>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.holds.fetch_sub(1, Ordering::AcqRel);
        // A stored permit: a drop between the publisher's check and its wait is not missed.
        self.released.notify_one();
    }
}
