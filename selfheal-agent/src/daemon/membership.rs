//! Units joining and leaving the running agent: instances a pattern adopts (the tracker finds
//! them), units a reload adds or removes, and instances whose unit file is gone. A unit joins
//! the supervisor (policy, its saved state), the metrics, the quarantine pins and the probe
//! runner; one that leaves is taken out of all of them and of the kernel filter, after the
//! action in progress on it ends if there is one. Its index is never given to another unit. A
//! unit whose probes a reload changed has them replaced.

use std::{
    collections::HashMap,
    time::{Instant, SystemTime},
};

use log::{info, warn};

use super::{engine::Engine, reload::Reload, reload::spec, supervisor::Input};
use crate::{
    config::UnitPolicy,
    report::history::Event,
    sensors::probes::ProbeSet,
    units::{
        self,
        tables::Tables,
        tracker::{Request, UnitChange},
    },
};

/// Units to let go once the action in progress on them ends, with why.
pub(super) type Leaving = HashMap<u32, String>;

impl Engine {
    /// What the tracker says changed. The engine alone writes the units' records.
    pub(super) fn on_unit_change(&mut self, change: UnitChange) {
        match change {
            UnitChange::Joined {
                index,
                policy,
                pattern,
            } => {
                {
                    let mut state = self.p.state.lock();
                    let added = units::add(&mut state.units, (*policy).clone(), pattern.clone());
                    debug_assert_eq!(added, index, "the tracker hands out the indices in order");
                    if let Some(pattern) = &pattern {
                        let message = format!("adopted by the pattern {pattern:?}");
                        state.units[index as usize]
                            .record(SystemTime::now(), Event::Unit { message });
                    }
                }
                if pattern.is_some() {
                    self.set_fleet_pattern(&policy.name, pattern.as_deref());
                }
                self.join(index, &policy);
            }
            UnitChange::Refreshed(refresh) => {
                let mut state = self.p.state.lock();
                let Some(unit) = state.unit_mut(refresh.index) else {
                    return;
                };
                unit.object_path = Some(refresh.object_path);
                unit.update(refresh.snapshot);
                if let Some(message) = refresh.found {
                    unit.record(SystemTime::now(), Event::Unit { message });
                }
            }
            UnitChange::Watched { index, cgroup, id } => {
                if let Some(unit) = self.p.state.lock().unit_mut(index) {
                    unit.watched_cgroup = Some(cgroup);
                    unit.cgroup_id = id;
                }
            }
            UnitChange::Gone(index) => {
                let _ = self.let_go(index, "its unit file is gone");
            }
        }
    }

    /// A unit monitored from now on at `index` (already in the unit table).
    fn join(&mut self, index: u32, policy: &crate::config::UnitPolicy) {
        let (name, now) = (&policy.name, Instant::now());
        self.p.supervisor.add_unit(index, spec(policy));
        self.p.metrics.watch_unit(name);
        // Its saved state may say quarantined: the quarantine parked at the start is its own.
        let saved_quarantine = self
            .p
            .supervisor
            .policy()
            .unit_status(index, now)
            .is_some_and(|s| s.quarantined);
        if let Some(quarantine) = self.p.quarantine.as_mut() {
            if quarantine.name_unit(index, name) {
                info!(
                    "{name}: network quarantine still in force, taken over from the previous agent"
                );
                self.p.metrics.set_quarantined(name, true);
            } else if saved_quarantine {
                warn!(
                    "{name}: the saved state says quarantined but no pinned quarantine was found; \
                     the unit is NOT cut off until an operator isolates it again"
                );
            }
        }
        if policy.probed() {
            self.set_probes(index, policy);
        }
        self.publish_policy(&[index], now);
        self.dirty = true;
    }

    /// Starts (or replaces) the unit's probes and detectors as `policy` has them, and how the
    /// supervisor judges them. The config was checked when it was loaded; a set that still
    /// fails to build is said in the log and not run.
    pub(super) fn set_probes(&mut self, index: u32, policy: &UnitPolicy) {
        let set = ProbeSet::of(index, &policy.name, &policy.probes, &policy.detectors)
            .unwrap_or_else(|e| {
                warn!("{}: probes not started: {e}", policy.name);
                ProbeSet {
                    unit: index,
                    ..ProbeSet::default()
                }
            });
        self.feed(Input::Probes {
            unit: index,
            probes: policy
                .probes
                .iter()
                .map(|p| (p.name.clone(), p.rules()))
                .collect(),
            detectors: policy.detectors.iter().map(|d| d.name.clone()).collect(),
        });
        self.p.metrics.forget_probes(&policy.name);
        let _ = self.p.probe_sets.send(set);
    }

    /// SIGHUP: the new tables decide which units stay (with their new settings), which go
    /// and which are added; new patterns adopt through the tracker.
    pub(super) fn on_reload(&mut self, reload: Reload) {
        // Thresholds, ladders and words may all have changed: every view is rebuilt.
        self.settled_views = Default::default();
        self.sample_specs.clear();
        self.plan = None;
        let tables = Tables::new(reload.units.clone());
        let monitored: Vec<(u32, String, Option<String>)> = {
            let state = self.p.state.lock();
            state
                .live_units()
                .map(|(i, u)| {
                    let slice = Some(u.systemd.slice.clone()).filter(|s| !s.is_empty());
                    (i, u.name.clone(), slice)
                })
                .collect()
        };
        let plan = tables.reconcile(&monitored);
        let mut specs = Vec::new();
        let new_patterns: Vec<String> = {
            let old = &self.p.state.lock().tables;
            tables
                .patterns()
                .filter(|p| !old.patterns().any(|o| o == *p))
                .map(str::to_owned)
                .collect()
        };
        // Units kept whose probes or detectors changed: theirs are replaced now.
        let mut reprobed = Vec::new();
        let mut kept = Vec::new();
        {
            let mut state = self.p.state.lock();
            state.tables = tables;
            for (index, policy, pattern) in plan.keep {
                kept.push((index, pattern.clone()));
                specs.push((index, spec(&policy)));
                self.leaving.remove(&index);
                if let Some(gate) = &self.p.fleet {
                    gate.set_pattern(&policy.name, pattern.as_deref());
                }
                if let Some(unit) = state.unit_mut(index) {
                    if unit.policy.probes != policy.probes
                        || unit.policy.detectors != policy.detectors
                    {
                        reprobed.push((index, policy.clone()));
                    }
                    unit.policy = policy;
                    unit.pattern = pattern;
                }
            }
        }
        self.p.supervisor.reload(reload.policy(), specs);
        for (index, policy) in &reprobed {
            self.set_probes(*index, policy);
        }
        let added: Vec<String> = plan.add.iter().map(|p| p.name.clone()).collect();
        let mut removed = Vec::new();
        for index in plan.remove {
            if let Some(line) = self.let_go(index, "removed from the config") {
                removed.push(line);
            }
        }
        // The tracker gives the units added their indices (they join when it says so), loads
        // them, and adopts what new patterns cover.
        let _ = self.p.tracker.send(Request::Reload {
            tables: self.p.state.lock().tables.clone(),
            add: plan.add,
            kept,
        });
        self.dirty = true;
        let count = self.p.state.lock().live_units().count() + added.len();
        let mut line = format!("config reloaded: {count} unit(s) monitored");
        if !added.is_empty() {
            line.push_str(&format!("; added {added:?}"));
        }
        if !new_patterns.is_empty() {
            line.push_str(&format!(
                "; new patterns {new_patterns:?} adopt what they cover"
            ));
        }
        if !removed.is_empty() {
            line.push_str(&format!("; removed: {}", removed.join(", ")));
        }
        if !reprobed.is_empty() {
            let names: Vec<&str> = reprobed.iter().map(|(_, p)| p.name.as_str()).collect();
            line.push_str(&format!("; probes and detectors replaced for {names:?}"));
        }
        info!("{line}");
    }

    /// Fleet mode: an instance shares its pattern's group (see `fleet::Gate::set_pattern`).
    fn set_fleet_pattern(&self, name: &str, pattern: Option<&str>) {
        if let Some(gate) = &self.p.fleet {
            gate.set_pattern(name, pattern);
        }
    }

    /// Lets the unit go now, or after the action in progress on it ends. Returns what was
    /// done, for the log ("name" or "name (once its action in progress ends)").
    fn let_go(&mut self, index: u32, why: &str) -> Option<String> {
        let name = self.unit_name(index)?;
        if self.p.supervisor.acting(index) {
            info!("{name}: {why}; let go once the action in progress on it ends");
            self.leaving.insert(index, why.to_owned());
            return Some(format!("{name} (let go once its action in progress ends)"));
        }
        self.retire(index, why);
        Some(name)
    }

    /// Lets go the units waiting for their action to end, once it has.
    pub(super) fn finish_leaving(&mut self) {
        let done: Vec<(u32, String)> = self
            .leaving
            .iter()
            .filter(|(index, _)| !self.p.supervisor.acting(**index))
            .map(|(index, why)| (*index, why.clone()))
            .collect();
        for (index, why) in done {
            self.leaving.remove(&index);
            self.retire(index, &format!("{why}; its action ended"));
        }
    }

    /// Takes the unit out of everything; its index stays retired.
    fn retire(&mut self, index: u32, why: &str) {
        let name = {
            let mut state = self.p.state.lock();
            let Some(unit) = state.unit_mut(index) else {
                return;
            };
            unit.record(
                SystemTime::now(),
                Event::Unit {
                    message: format!("no longer monitored: {why}"),
                },
            );
            unit.retired = true;
            unit.name.clone()
        };
        self.p.supervisor.remove_unit(index);
        let _ = self.p.probe_sets.send(ProbeSet {
            unit: index,
            ..ProbeSet::default()
        });
        self.stall.forget(index);
        self.leak.forget(index);
        self.main_pids.remove(&index);
        self.scale_bases.remove(&index);
        self.incidents.remove(&index);
        self.gauges.remove(&index);
        self.lost_seen.remove(&index);
        self.p.metrics.forget_unit(&name);
        self.set_fleet_pattern(&name, None);
        let _ = self.p.tracker.send(Request::Unwatch(index));
        self.dirty = true;
        info!("{name}: no longer monitored: {why}");
    }
}
