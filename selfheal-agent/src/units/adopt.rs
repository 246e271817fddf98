//! The tracker's adoption of the units a `[[unit]]` pattern covers: from systemd's list at
//! start and after a reload, and one by one as systemd announces them. Each adopted instance
//! is a monitored unit of its own (its own budgets, backoff, circuit, state) with the
//! pattern's settings, up to [`MAX_INSTANCES`] per pattern. An instance is never let go for
//! stopping (a dead instance must still be restarted); only when its unit file is gone.

use log::{info, warn};

use super::{
    tables::{Adoption, MAX_INSTANCES},
    tracker::{Load, Tracker, UnitChange},
};
use crate::systemd::{ManagerProxy, read_snapshot};

impl Tracker {
    /// Adopts every loaded service systemd lists that a pattern covers.
    pub(super) async fn adopt_listed(&mut self, manager: &ManagerProxy<'_>, manager_root: &str) {
        if !self.tables.has_patterns() {
            return;
        }
        let listed = match manager.list_units().await {
            Ok(listed) => listed,
            Err(e) => {
                warn!("cannot list systemd's units to adopt those a pattern covers: {e}");
                return;
            }
        };
        for (name, _, load_state, ..) in listed {
            if load_state == "loaded" {
                self.consider(manager, manager_root, &name).await;
            }
        }
    }

    /// Adopts the unit `name` when a pattern covers it and it is not monitored yet.
    pub(super) async fn consider(
        &mut self,
        manager: &ManagerProxy<'_>,
        manager_root: &str,
        name: &str,
    ) {
        if !self.tables.may_adopt(name) || self.units.index_of(name).is_some() {
            return;
        }
        // GetUnit, not LoadUnit: loading a name systemd does not have creates a stub.
        let Ok(path) = manager.get_unit(name).await else {
            return;
        };
        let snapshot = match read_snapshot(&self.conn, name, &path).await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                warn!("{name}: {e}");
                return;
            }
        };
        if snapshot.load_state != "loaded" {
            return;
        }
        let slice = Some(snapshot.slice.as_str()).filter(|s| !s.is_empty());
        if self.units.index_of(name).is_some() {
            return;
        }
        let adoption = self
            .tables
            .adoption(name, slice, |pattern| self.units.instances_of(pattern));
        let (pattern, policy) = match adoption {
            Adoption::None => return,
            Adoption::Full { pattern } => {
                if self.warned_full.insert(pattern.clone()) {
                    warn!(
                        "pattern {pattern:?} covers more than {MAX_INSTANCES} units; {name} and \
                         any further ones are not monitored"
                    );
                }
                return;
            }
            Adoption::Adopt { pattern, policy } => (pattern, policy),
        };
        let index = self.units.add(name, Some(pattern.clone()));
        info!("{name}: adopted by the pattern {pattern:?}");
        // Before the kernel filter knows the unit: the engine learns of it before any record.
        let _ = self.changes.send(UnitChange::Joined {
            index,
            policy,
            pattern: Some(pattern),
        });
        self.refresh(manager, manager_root, index, Load::IfKnown)
            .await;
    }

    /// systemd unloaded `name`: an adopted instance whose unit file is gone may be let go
    /// (one merely stopped and garbage-collected still has its file, and stays).
    pub(super) async fn check_gone(&mut self, manager: &ManagerProxy<'_>, name: &str) {
        let index = self
            .units
            .index_of(name)
            .filter(|&i| self.units.get(i).is_some_and(|u| u.pattern.is_some()));
        let Some(index) = index.filter(|i| !self.reported_gone.contains(i)) else {
            return;
        };
        // GetUnitFileState reads the unit files without loading (no stub, no signal).
        if manager.get_unit_file_state(name).await.is_err() {
            self.reported_gone.insert(index);
            let _ = self.changes.send(UnitChange::Gone(index));
        }
    }

    /// The engine let the unit go.
    pub(super) fn unwatch(&mut self, index: u32) {
        if let Some(unit) = self.units.get_mut(index) {
            unit.retired = true;
        }
        let Some(filter) = self.filter.as_mut() else {
            return;
        };
        if let Err(e) = filter.unwatch(index) {
            warn!("unit #{index}: cannot take it out of the kernel filter: {e}");
        }
    }
}
