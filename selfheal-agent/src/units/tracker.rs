//! Follows systemd's D-Bus signals — a unit restarting, appearing (created and daemon-reloaded)
//! or disappearing — keeps the kernel's cgroup filter current, and tells the engine what
//! changed (the engine alone writes the units' records). No polling.
//! Units a `[[unit]]` pattern covers are adopted from systemd's list at start (and after a
//! reload) and as systemd announces them (see `adopt.rs`).

use std::{collections::HashSet, path::PathBuf};

use futures_util::StreamExt as _;
use log::{info, warn};
use tokio::sync::{mpsc, watch};
use zbus::{MatchRule, MessageStream, message::Type, zvariant::OwnedObjectPath};

use super::{
    cgroup_path,
    tables::Tables,
    tracked::{Target, TrackedUnits},
};
use crate::{
    config::UnitPolicy,
    sensors::ebpf::CgroupFilter,
    systemd::{ManagerProxy, SystemdError, UnitSnapshot, read_snapshot},
};

/// The tracker: a sensor of its own. It keeps its own table of units ([`TrackedUnits`]) and
/// tells the engine, which owns the units' records, what changed ([`UnitChange`]); the engine
/// tells it what the config changed ([`Request`]). Nothing is shared between them.
pub struct Tracker {
    pub conn: zbus::Connection,
    pub(super) units: TrackedUnits,
    /// The config's `[[unit]]` tables: what a unit systemd announces is adopted under.
    pub(super) tables: Tables,
    pub filter: Option<CgroupFilter>,
    pub v2_root: PathBuf,
    /// What the engine asks of the tracker (after a reload, when it lets a unit go); the
    /// signal pump takes it when the tracker runs.
    requests: Option<mpsc::UnboundedReceiver<Request>>,
    /// What changed, for the engine.
    pub(super) changes: mpsc::UnboundedSender<UnitChange>,
    /// Patterns at their cap that were warned about (once each).
    pub(super) warned_full: HashSet<String>,
    /// Instances reported gone, not asked about again.
    pub(super) reported_gone: HashSet<u32>,
}

/// The engine's requests.
#[derive(Debug)]
pub enum Request {
    /// The config was reloaded: its tables from now on, the units it added (they take the next
    /// indices, in this order) and the pattern each unit it kept is under now. The tracker
    /// loads the units added and adopts what new patterns cover.
    Reload {
        tables: Tables,
        add: Vec<UnitPolicy>,
        kept: Vec<(u32, Option<String>)>,
    },
    /// The unit was let go: take it out of the kernel filter, ignore its signals.
    Unwatch(u32),
}

/// What the tracker tells the engine about the units.
#[derive(Debug)]
pub enum UnitChange {
    /// A unit joins at `index`, the next one: adopted by `pattern`, or added by a reload.
    Joined {
        index: u32,
        policy: Box<UnitPolicy>,
        pattern: Option<String>,
    },
    /// What systemd says of the unit now.
    Refreshed(Box<Refresh>),
    /// The kernel filter watches the unit's cgroup (and the cgroup's id) from now on.
    Watched {
        index: u32,
        cgroup: String,
        id: Option<u64>,
    },
    /// The adopted unit's unit file is gone: it may be let go.
    Gone(u32),
}

/// One unit re-read from systemd.
#[derive(Debug)]
pub struct Refresh {
    pub index: u32,
    pub object_path: OwnedObjectPath,
    pub snapshot: UnitSnapshot,
    /// For its history when it appeared or disappeared ("unit found (active), watching it").
    pub found: Option<String>,
}

impl Tracker {
    /// `names`: the config's exact names, at indices `0..n` (as the engine's table has them).
    pub fn new(
        conn: zbus::Connection,
        tables: Tables,
        filter: Option<CgroupFilter>,
        requests: mpsc::UnboundedReceiver<Request>,
        changes: mpsc::UnboundedSender<UnitChange>,
    ) -> Self {
        Self {
            conn,
            units: TrackedUnits::new(tables.exact().map(|u| u.name.clone())),
            tables,
            filter,
            v2_root: crate::cgroupfs::v2_root(),
            requests: Some(requests),
            changes,
            warned_full: HashSet::new(),
            reported_gone: HashSet::new(),
        }
    }
}

impl Tracker {
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), SystemdError> {
        let call = |call| {
            move |source| SystemdError::Call {
                call,
                unit: String::new(),
                source,
            }
        };
        let manager = ManagerProxy::new(&self.conn)
            .await
            .map_err(call("Manager"))?;
        manager.subscribe().await.map_err(call("Subscribe"))?;
        let manager_root = manager.control_group().await.unwrap_or_default();
        let mut unit_new = manager.receive_unit_new().await.map_err(call("UnitNew"))?;
        let mut job_new = manager.receive_job_new().await.map_err(call("JobNew"))?;
        let mut reloading = manager
            .receive_reloading()
            .await
            .map_err(call("Reloading"))?;
        let mut unit_removed = manager
            .receive_unit_removed()
            .await
            .map_err(call("UnitRemoved"))?;
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender("org.freedesktop.systemd1")
            .and_then(|b| b.interface("org.freedesktop.DBus.Properties"))
            .and_then(|b| b.member("PropertiesChanged"))
            .and_then(|b| b.path_namespace("/org/freedesktop/systemd1/unit"))
            .map_err(call("AddMatch"))?
            .build();
        let mut changes = MessageStream::for_match_rule(rule, &self.conn, Some(256))
            .await
            .map_err(call("AddMatch"))?;

        // Signals are pumped by their own task into an unbounded queue: a task that awaited
        // D-Bus replies while also owning signal streams could deadlock the connection (zbus
        // stops reading the socket while a stream's queue is full).
        let (tx, mut signals) = mpsc::unbounded_channel();
        let mut pump_shutdown = shutdown.clone();
        let mut requests = self
            .requests
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    _ = pump_shutdown.changed() => return,
                    Some(msg) = changes.next() => {
                        let Ok(msg) = msg else { continue };
                        let header = msg.header();
                        let Some(path) = header.path() else { continue };
                        Signal::Path(path.to_string())
                    }
                    Some(signal) = unit_new.next() => match signal.args() {
                        Ok(args) => Signal::Name(args.id().to_string()),
                        Err(_) => continue,
                    },
                    Some(signal) = job_new.next() => match signal.args() {
                        Ok(args) => Signal::Name(args.unit().to_string()),
                        Err(_) => continue,
                    },
                    Some(signal) = reloading.next() => match signal.args() {
                        // A daemon-reload finished: units that were missing may exist now.
                        Ok(args) if !args.active() => Signal::Missing,
                        _ => continue,
                    },
                    Some(signal) = unit_removed.next() => match signal.args() {
                        Ok(args) => Signal::Removed(args.id().to_string()),
                        Err(_) => continue,
                    },
                    Some(request) = requests.recv() => Signal::Request(request),
                    else => return,
                };
                if tx.send(signal).is_err() {
                    return;
                }
            }
        });

        for index in 0..self.units.len() as u32 {
            self.refresh(&manager, &manager_root, index, Load::Yes)
                .await;
        }
        self.adopt_listed(&manager, &manager_root).await;
        self.tag_new_watches().await;
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                signal = signals.recv() => match signal {
                    Some(signal) => signal,
                    None => return Ok(()),
                },
            };
            // Coalesce a burst of signals into one refresh per unit.
            let mut pending = vec![first];
            while let Ok(more) = signals.try_recv() {
                pending.push(more);
            }
            let mut indices: Vec<(u32, Load)> = Vec::new();
            let mut candidates: Vec<String> = Vec::new();
            let mut removed: Vec<String> = Vec::new();
            let mut rescan = false;
            for signal in pending {
                let (target, load) = match signal {
                    Signal::Missing => (Target::Missing, Load::Yes),
                    Signal::Request(Request::Reload { tables, add, kept }) => {
                        self.reload(tables, add, kept);
                        rescan = true;
                        (Target::Missing, Load::Yes)
                    }
                    Signal::Request(Request::Unwatch(index)) => {
                        self.unwatch(index);
                        continue;
                    }
                    Signal::Removed(name) => {
                        removed.push(name);
                        continue;
                    }
                    Signal::Path(path) => (Target::Path(path), Load::IfKnown),
                    Signal::Name(name) => (Target::Name(name), Load::IfKnown),
                };
                let found = self.units.find(&target);
                if let (Target::Name(name), true) = (&target, found.is_empty()) {
                    candidates.push(name.clone());
                }
                for index in found {
                    match indices.iter_mut().find(|(i, _)| *i == index) {
                        Some(entry) if load == Load::Yes => entry.1 = Load::Yes,
                        Some(_) => {}
                        None => indices.push((index, load)),
                    }
                }
            }
            for (index, load) in indices {
                self.refresh(&manager, &manager_root, index, load).await;
            }
            candidates.sort();
            candidates.dedup();
            for name in candidates {
                self.consider(&manager, &manager_root, &name).await;
            }
            if rescan {
                self.adopt_listed(&manager, &manager_root).await;
            }
            for name in removed {
                self.check_gone(&manager, &name).await;
            }
            self.tag_new_watches().await;
        }
    }

    /// A reloaded config: the tables adoption follows from now on, the units added (each
    /// joins at the next index), the patterns of the units kept.
    fn reload(&mut self, tables: Tables, add: Vec<UnitPolicy>, kept: Vec<(u32, Option<String>)>) {
        self.tables = tables;
        for (index, pattern) in kept {
            if let Some(unit) = self.units.get_mut(index) {
                unit.pattern = pattern;
            }
        }
        for policy in add {
            // Two reloads in a row may both add a unit before the engine heard of it once.
            if self.units.index_of(&policy.name).is_some() {
                continue;
            }
            let index = self.units.add(&policy.name, None);
            let _ = self.changes.send(UnitChange::Joined {
                index,
                policy: Box::new(policy),
                pattern: None,
            });
        }
    }

    /// Tags the tasks already in the cgroups this batch watched: one walk of the host's tasks
    /// for the whole batch (1,000 units adopted at start walk once, not 1,000 times).
    async fn tag_new_watches(&mut self) {
        if let Some(walk) = self.filter.as_mut().and_then(CgroupFilter::pending_walk) {
            let _ = tokio::task::spawn_blocking(move || walk.run_or_warn("new watches")).await;
        }
    }

    /// Re-reads one unit from systemd, tells the engine, and brings the kernel filter in line
    /// with it.
    pub(super) async fn refresh(
        &mut self,
        manager: &ManagerProxy<'_>,
        manager_root: &str,
        index: u32,
        load: Load,
    ) {
        let Some(name) = self.units.get(index).map(|u| u.name.clone()) else {
            return;
        };
        // LoadUnit on a missing unit makes systemd create (and soon drop) a stub, which emits
        // UnitNew: loading on every signal would feed on itself. Signals only look units up.
        let path = match load {
            Load::Yes => manager.load_unit(&name).await,
            Load::IfKnown => manager.get_unit(&name).await,
        };
        let path = match path {
            Ok(path) => path,
            Err(e) if load == Load::IfKnown => {
                log::debug!("{name}: not loaded by systemd: {e}");
                return;
            }
            Err(e) => {
                warn!("{name}: systemd cannot load the unit: {e}");
                return;
            }
        };
        let snapshot = match read_snapshot(&self.conn, &name, &path).await {
            Ok(s) => s,
            Err(e) => {
                warn!("{name}: {e}");
                return;
            }
        };
        let cgroup = if !snapshot.control_group.is_empty() {
            Some(snapshot.control_group.clone())
        } else if !snapshot.slice.is_empty() {
            Some(cgroup_path::predicted(manager_root, &snapshot.slice, &name))
        } else {
            None
        };

        // Let go while systemd was asked: nothing to tell. (One let go whose request is still
        // queued behind this refresh is told; the engine ignores a retired index.)
        let Some(unit) = self.units.get_mut(index) else {
            return;
        };
        let was_known = unit.object_path.is_some();
        let existed = unit.exists;
        let exists = snapshot.load_state != "not-found";
        unit.object_path = Some(path.clone());
        unit.exists = exists;
        let found = (exists != existed || !was_known).then(|| {
            let message = if exists {
                format!("unit found ({}), watching it", snapshot.active_state)
            } else {
                "unit does not exist (yet): it will be watched once systemd loads it".to_owned()
            };
            if exists {
                info!("{name}: {message}")
            } else {
                warn!("{name}: {message}")
            }
            message
        });
        let _ = self.changes.send(UnitChange::Refreshed(Box::new(Refresh {
            index,
            object_path: path,
            snapshot,
            found,
        })));
        let (Some(cgroup), true, true) = (cgroup, exists, self.filter.is_some()) else {
            return;
        };
        let dir = self.v2_root.join(cgroup.trim_start_matches('/'));
        let current_id = crate::sensors::ebpf::cgroup_id(&dir).ok();
        if unit.watched_cgroup.as_deref() == Some(&cgroup) && unit.cgroup_id == current_id {
            return;
        }
        let Some(filter) = self.filter.as_mut() else {
            return;
        };
        // Map writes, a walk of the cgroup tree and maybe a program attach: not on an async
        // thread others are waiting for.
        let v2_root = &self.v2_root;
        match tokio::task::block_in_place(|| filter.watch(index, v2_root, &cgroup)) {
            Ok(id) => {
                if let Some(unit) = self.units.get_mut(index) {
                    unit.watched_cgroup = Some(cgroup.clone());
                    unit.cgroup_id = id;
                }
                let _ = self.changes.send(UnitChange::Watched { index, cgroup, id });
            }
            Err(e) => warn!("{name}: cannot update the kernel filter: {e}"),
        }
    }
}

/// Whether a refresh may ask systemd to load the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Load {
    Yes,
    IfKnown,
}

/// What the signal pump hands the tracker's loop.
#[derive(Debug)]
enum Signal {
    Path(String),
    Name(String),
    /// A daemon-reload finished.
    Missing,
    /// systemd unloaded the unit (UnitRemoved).
    Removed(String),
    Request(Request),
}
