//! Where a unit's processes sit in the v1 hierarchies of a hybrid host (v1 controllers beside
//! a v2 tree without them): its memory, pids and cpu cgroups, whose files say what the v2 tree
//! cannot. Found from `/proc/PID/cgroup` once per process and controller, not at every read:
//! systemd creates a unit's cgroups before it starts the unit's processes and never moves them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// The v1 controllers the sensors read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Controller {
    Cpu,
    Memory,
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Pids => "pids",
        }
    }

    /// Where its hierarchy may be mounted, under /sys/fs/cgroup (cpu is often mounted with
    /// cpuacct, with or without a `cpu` link to it).
    fn mounts(self) -> &'static [&'static str] {
        match self {
            Self::Cpu => &["cpu", "cpu,cpuacct"],
            Self::Memory => &["memory"],
            Self::Pids => &["pids"],
        }
    }

    /// A file every cgroup of the controller has: its absence means no such hierarchy here.
    fn probe(self) -> &'static str {
        match self {
            Self::Cpu => "cpu.stat",
            Self::Memory => "memory.usage_in_bytes",
            Self::Pids => "pids.current",
        }
    }
}

/// The v1 directories found so far, by process and controller.
#[derive(Default)]
pub struct V1Dirs {
    found: HashMap<(u32, Controller), Option<PathBuf>>,
}

impl V1Dirs {
    /// The `controller` cgroup of `pid` when it is specific to the unit (see [`unit_dir`]).
    pub fn dir(&mut self, pid: u32, controller: Controller) -> Option<&Path> {
        self.found
            .entry((pid, controller))
            .or_insert_with(|| unit_dir(pid, controller))
            .as_deref()
    }

    /// Forgets the processes `keep` says no to (gone, or no longer a unit's main process), so
    /// that a reused pid is looked up again.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.found.retain(|(pid, _), _| keep(*pid));
    }
}

/// The v1 `controller` cgroup of `pid` (mounted under /sys/fs/cgroup) when it is
/// specific to the unit. On hybrid hosts a unit that systemd gave no v1 cgroup of that
/// controller shares one with everything around it, the agent included (the root, a
/// session's): its usage is the whole host's, its limit nobody's, so it says nothing about the
/// unit.
pub fn unit_dir(pid: u32, controller: Controller) -> Option<PathBuf> {
    let name = controller.name();
    let path = cgroup_path(&format!("/proc/{pid}/cgroup"), name)?;
    if cgroup_path("/proc/self/cgroup", name).as_deref() == Some(path.as_str()) {
        return None;
    }
    controller.mounts().iter().find_map(|mount| {
        let dir = Path::new("/sys/fs/cgroup")
            .join(mount)
            .join(path.trim_start_matches('/'));
        dir.join(controller.probe()).exists().then_some(dir)
    })
}

/// The path of the v1 hierarchy holding `controller` in a /proc/PID/cgroup file.
fn cgroup_path(file: &str, controller: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_cgroup_shared_with_the_agent_is_not_the_units() {
        // Whatever the host, our own process shares every cgroup with us.
        let me = std::process::id();
        let mut dirs = V1Dirs::default();
        for controller in [Controller::Cpu, Controller::Memory, Controller::Pids] {
            assert_eq!(unit_dir(me, controller), None);
            assert_eq!(dirs.dir(me, controller), None);
        }
        assert_eq!(dirs.found.len(), 3, "each looked up once and kept");
        dirs.retain(|pid| pid != me);
        assert!(dirs.found.is_empty());
    }
}
