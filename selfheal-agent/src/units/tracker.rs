//! Keeps the unit table and the kernel's cgroup filter current from systemd's D-Bus signals:
//! a unit restarting, appearing (created and daemon-reloaded) or disappearing. No polling.
//! Units a `[[unit]]` pattern covers are adopted from systemd's list at start (and after a
//! reload) and as systemd announces them (see `adopt.rs`).

use std::{collections::HashSet, path::PathBuf, time::SystemTime};

use futures_util::StreamExt as _;
use log::{info, warn};
use tokio::sync::{mpsc, watch};
use zbus::{MatchRule, MessageStream, message::Type};

use super::cgroup_path;
use crate::{
    daemon::Shared,
    report::history::Event,
    sensors::ebpf::CgroupFilter,
    systemd::{ManagerProxy, SystemdError, read_snapshot},
};

pub struct Tracker {
    pub conn: zbus::Connection,
    pub state: Shared,
    pub filter: Option<CgroupFilter>,
    pub v2_root: PathBuf,
    /// What the engine asks of the tracker (after a reload, when it lets a unit go); the
    /// signal pump takes it when the tracker runs.
    requests: Option<mpsc::UnboundedReceiver<Request>>,
    /// Units adopted or gone, for the engine.
    pub(super) changes: mpsc::UnboundedSender<UnitChange>,
    /// Patterns at their cap that were warned about (once each).
    pub(super) warned_full: HashSet<String>,
    /// Instances reported gone, not asked about again.
    pub(super) reported_gone: HashSet<u32>,
}

/// The engine's requests.
#[derive(Debug)]
pub enum Request {
    /// The tables changed: adopt what new patterns cover, load the units newly named.
    Rescan,
    /// The unit was let go: take it out of the kernel filter.
    Unwatch(u32),
}

/// What the tracker tells the engine about the unit table.
#[derive(Debug, PartialEq, Eq)]
pub enum UnitChange {
    /// A pattern adopted the unit at this index.
    Adopted(u32),
    /// The adopted unit's unit file is gone: it may be let go.
    Gone(u32),
}

impl Tracker {
    pub fn new(
        conn: zbus::Connection,
        state: Shared,
        filter: Option<CgroupFilter>,
        requests: mpsc::UnboundedReceiver<Request>,
        changes: mpsc::UnboundedSender<UnitChange>,
    ) -> Self {
        Self {
            conn,
            state,
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
        let (tx, mut targets) = mpsc::unbounded_channel();
        let mut pump_shutdown = shutdown.clone();
        let mut requests = self
            .requests
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        tokio::spawn(async move {
            loop {
                let target = tokio::select! {
                    _ = pump_shutdown.changed() => return,
                    Some(msg) = changes.next() => {
                        let Ok(msg) = msg else { continue };
                        let header = msg.header();
                        let Some(path) = header.path() else { continue };
                        Target::Path(path.to_string())
                    }
                    Some(signal) = unit_new.next() => match signal.args() {
                        Ok(args) => Target::Name(args.id().to_string()),
                        Err(_) => continue,
                    },
                    Some(signal) = job_new.next() => match signal.args() {
                        Ok(args) => Target::Name(args.unit().to_string()),
                        Err(_) => continue,
                    },
                    Some(signal) = reloading.next() => match signal.args() {
                        // A daemon-reload finished: units that were missing may exist now.
                        Ok(args) if !args.active() => Target::Missing,
                        _ => continue,
                    },
                    Some(signal) = unit_removed.next() => match signal.args() {
                        Ok(args) => Target::Removed(args.id().to_string()),
                        Err(_) => continue,
                    },
                    Some(request) = requests.recv() => match request {
                        Request::Rescan => Target::Rescan,
                        Request::Unwatch(index) => Target::Unwatch(index),
                    },
                    else => return,
                };
                if tx.send(target).is_err() {
                    return;
                }
            }
        });

        let count = self.state.lock().units.len();
        for index in 0..count {
            self.refresh(&manager, &manager_root, index, Load::Yes)
                .await;
        }
        self.adopt_listed(&manager, &manager_root).await;
        self.tag_new_watches().await;
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                target = targets.recv() => match target {
                    Some(target) => target,
                    None => return Ok(()),
                },
            };
            // Coalesce a burst of signals into one refresh per unit.
            let mut pending = vec![first];
            while let Ok(more) = targets.try_recv() {
                pending.push(more);
            }
            let mut indices: Vec<(usize, Load)> = Vec::new();
            let mut candidates: Vec<String> = Vec::new();
            let mut removed: Vec<String> = Vec::new();
            let mut rescan = false;
            for target in pending {
                let load = match &target {
                    Target::Missing => Load::Yes,
                    Target::Rescan => {
                        rescan = true;
                        Load::Yes
                    }
                    Target::Unwatch(index) => {
                        self.unwatch(*index);
                        continue;
                    }
                    Target::Removed(name) => {
                        removed.push(name.clone());
                        continue;
                    }
                    Target::Path(_) | Target::Name(_) => Load::IfKnown,
                };
                let found = self.indices(&target);
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

    /// Tags the tasks already in the cgroups this batch watched: one walk of the host's tasks
    /// for the whole batch (1,000 units adopted at start walk once, not 1,000 times).
    async fn tag_new_watches(&mut self) {
        if let Some(walk) = self.filter.as_mut().and_then(CgroupFilter::pending_walk) {
            let _ = tokio::task::spawn_blocking(move || walk.run_or_warn("new watches")).await;
        }
    }

    fn indices(&self, target: &Target) -> Vec<usize> {
        let state = self.state.lock();
        state
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.retired)
            .filter(|(_, u)| match target {
                Target::Path(p) => u.object_path.as_ref().is_some_and(|o| o.as_str() == p),
                Target::Name(n) => u.name == *n,
                Target::Missing | Target::Rescan => !u.exists(),
                Target::Removed(_) | Target::Unwatch(_) => false,
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Re-reads one unit from systemd and brings the kernel filter in line with it.
    pub(super) async fn refresh(
        &mut self,
        manager: &ManagerProxy<'_>,
        manager_root: &str,
        index: usize,
        load: Load,
    ) {
        let name = self.state.lock().units[index].name.clone();
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

        let mut state = self.state.lock();
        let unit = &mut state.units[index];
        if unit.retired {
            return;
        }
        let was_known = unit.object_path.is_some();
        let existed = unit.exists();
        unit.object_path = Some(path);
        unit.update(snapshot);
        let exists = unit.exists();
        if exists != existed || !was_known {
            let message = if exists {
                format!("unit found ({}), watching it", unit.systemd.active_state)
            } else {
                "unit does not exist (yet): it will be watched once systemd loads it".to_owned()
            };
            if exists {
                info!("{name}: {message}")
            } else {
                warn!("{name}: {message}")
            }
            unit.record(SystemTime::now(), Event::Unit { message });
        }
        let (Some(cgroup), true, true) = (cgroup, exists, self.filter.is_some()) else {
            return;
        };
        let dir = self.v2_root.join(cgroup.trim_start_matches('/'));
        let current_id = crate::sensors::ebpf::cgroup_id(&dir).ok();
        if unit.watched_cgroup.as_deref() == Some(&cgroup) && unit.cgroup_id == current_id {
            return;
        }
        // Map writes, a walk of the cgroup tree and maybe a program attach: not under the
        // table's lock, and not on an async thread others are waiting for.
        drop(state);
        let Some(filter) = self.filter.as_mut() else {
            return;
        };
        let v2_root = &self.v2_root;
        let watched = tokio::task::block_in_place(|| filter.watch(index as u32, v2_root, &cgroup));
        let mut state = self.state.lock();
        let Some(unit) = state.unit_mut(index as u32) else {
            return;
        };
        match watched {
            Ok(id) => {
                unit.watched_cgroup = Some(cgroup);
                unit.cgroup_id = id;
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

#[derive(Debug)]
enum Target {
    Path(String),
    Name(String),
    Missing,
    /// systemd unloaded the unit (UnitRemoved).
    Removed(String),
    Rescan,
    Unwatch(u32),
}
