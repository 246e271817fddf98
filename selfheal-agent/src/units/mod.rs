//! The set of monitored units: names → systemd state, cgroup and main process, kept current by
//! the [`tracker`] from systemd's D-Bus signals.

mod adopt;
pub mod cgroup_path;
pub mod pattern;
pub mod tables;
pub mod tracked;
pub mod tracker;
pub mod view;

use std::sync::Arc;

use zbus::zvariant::OwnedObjectPath;

use crate::{config::UnitPolicy, report::history::History, systemd::UnitSnapshot};

/// What an exiting process was to its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessRole {
    /// The unit's main process (systemd's MainPID): its death ends the service.
    Main,
    /// Any other process of the unit: a worker, a helper, a child.
    Child,
}

pub struct MonitoredUnit {
    pub name: String,
    pub policy: UnitPolicy,
    /// The `[[unit]]` pattern that adopted the unit (`None`: named exactly).
    pub pattern: Option<String>,
    /// Let go (removed from the config, or its unit file gone): its index stays taken.
    pub retired: bool,
    /// systemd's object for the unit, once loaded.
    pub object_path: Option<OwnedObjectPath>,
    /// systemd's view at the last refresh.
    pub systemd: UnitSnapshot,
    /// Cgroup path (relative to the v2 root) pushed into the kernel filter.
    pub watched_cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    /// The last non-zero MainPID seen: still known when the kernel reports that process's exit.
    pub last_main_pid: u32,
    /// A stop job was seen: exits now are systemd's or an operator's doing, not failures.
    pub stopping: bool,
    /// Shared with the published snapshot: a write copies it only while a reader holds it.
    pub history: Arc<History>,
    /// What the engine last published about the unit (shared like `history`).
    pub view: Arc<view::UnitView>,
}

impl MonitoredUnit {
    pub fn new(policy: UnitPolicy) -> Self {
        Self {
            name: policy.name.clone(),
            policy,
            pattern: None,
            retired: false,
            object_path: None,
            systemd: UnitSnapshot::default(),
            watched_cgroup: None,
            cgroup_id: None,
            last_main_pid: 0,
            stopping: false,
            history: Arc::default(),
            view: Arc::default(),
        }
    }

    /// Adds `event` to the unit's history (copied first while a published snapshot holds it).
    pub fn record(&mut self, at: std::time::SystemTime, event: crate::report::history::Event) {
        Arc::make_mut(&mut self.history).push(at, event);
    }

    /// The unit's view, to change in place (copied first while a snapshot holds it).
    pub fn view_mut(&mut self) -> &mut view::UnitView {
        Arc::make_mut(&mut self.view)
    }

    /// Folds a fresh snapshot into what we know.
    pub fn update(&mut self, snapshot: UnitSnapshot) {
        if snapshot.main_pid != 0 {
            self.last_main_pid = snapshot.main_pid;
        }
        match (snapshot.job_type.as_str(), snapshot.active_state.as_str()) {
            ("stop", _) => self.stopping = true,
            ("start" | "restart", _) | (_, "active" | "activating") => self.stopping = false,
            _ => {}
        }
        self.systemd = snapshot;
    }

    /// Whether the exited process `tgid` (child of `ppid`) was the unit's main process, from
    /// what we know now; `None` when only a fresh look at systemd can tell.
    pub fn role_of(&self, tgid: u32, ppid: u32, manager_pid: Option<u32>) -> Option<ProcessRole> {
        let known = [
            self.last_main_pid,
            self.systemd.main_pid,
            self.systemd.exec_main_pid,
        ];
        if known.contains(&tgid) {
            Some(ProcessRole::Main)
        } else if manager_pid.is_some_and(|manager| manager != ppid) {
            // Main processes are forked by the service manager (or reparented to it).
            Some(ProcessRole::Child)
        } else {
            None
        }
    }

    pub fn exists(&self) -> bool {
        self.object_path.is_some() && self.systemd.load_state != "not-found"
    }
}

/// Adds a unit at the next index and returns it. Indices are the kernel's unit numbers and
/// the policy's: a retired unit keeps its slot for the rest of the run, so a late kernel
/// record or outcome for it can never reach another unit.
pub fn add(units: &mut Vec<MonitoredUnit>, policy: UnitPolicy, pattern: Option<String>) -> u32 {
    let mut unit = MonitoredUnit::new(policy);
    unit.pattern = pattern;
    units.push(unit);
    (units.len() - 1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str) -> UnitPolicy {
        let text = format!("[[unit]]\nname = \"{name}\"\n");
        let config = crate::config::Config::parse(&text, "t").expect("config");
        config.unit_policies().remove(0)
    }

    #[test]
    fn a_retired_index_is_never_given_to_another_unit() {
        let mut units = Vec::new();
        assert_eq!(add(&mut units, policy("a.service"), None), 0);
        let b = add(
            &mut units,
            policy("work@1.service"),
            Some("work@*.service".into()),
        );
        assert_eq!(b, 1);
        units[0].retired = true;
        // The same name again: a new index, the old one stays retired.
        assert_eq!(add(&mut units, policy("a.service"), None), 2);
        assert!(units[0].retired);
        assert_eq!(units[1].pattern.as_deref(), Some("work@*.service"));
    }

    fn unit(main_pid: u32, exec_main_pid: u32, last_main_pid: u32) -> MonitoredUnit {
        let config = crate::config::Config::parse("[[unit]]\nname = \"web.service\"\n", "t")
            .expect("config");
        let mut unit = MonitoredUnit::new(config.unit_policies().remove(0));
        unit.systemd.main_pid = main_pid;
        unit.systemd.exec_main_pid = exec_main_pid;
        unit.last_main_pid = last_main_pid;
        unit
    }

    #[test]
    fn the_role_of_an_exit_is_decided_without_systemd_when_the_tracker_can_tell() {
        const MANAGER: Option<u32> = Some(1);
        let u = unit(100, 90, 80);
        // Any pid the tracker knew as main (now, last exec, last seen) is the main process.
        for pid in [100, 90, 80] {
            assert_eq!(u.role_of(pid, 1, MANAGER), Some(ProcessRole::Main));
        }
        // Forked by something else than the manager: a child, whatever its pid.
        assert_eq!(u.role_of(555, 100, MANAGER), Some(ProcessRole::Child));
        // Forked by the manager but unknown (a main that died before its MainPID reached the
        // tracker, or a control process): only systemd can tell.
        assert_eq!(u.role_of(555, 1, MANAGER), None);
        // The manager unknown: only known pids decide.
        assert_eq!(u.role_of(555, 100, None), None);
    }
}
