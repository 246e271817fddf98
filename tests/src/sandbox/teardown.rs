//! Tearing sandboxes down: on drop (even after a panic) and, for crashed runs, by [`sweep_stale`].
//!
//! Teardown never panics; it reports what it could not remove on stderr and carries on, so one
//! stuck process does not leave the rest behind.

use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
    process::Child,
    thread,
    time::{Duration, Instant},
};

use super::{CGROUP_PREFIX, RUNTIME_BASE, Sandbox};
use crate::cgroupfs;

/// How long systemd gets to exit after SIGTERM (it stops its units first) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A graceful exit lets systemd stop its units and remove their cgroups itself.
        if let Some(systemd) = self.systemd.take() {
            stop(&self.id, "systemd --user", systemd);
        }
        // This also ends the dbus-daemon: it runs as the sandbox's dbus.service.
        remove_sandbox(&self.id);
        remove_runtime_dir(&self.id);
    }
}

/// Removes what earlier runs left behind when they crashed before dropping their sandboxes:
/// processes, cgroups (`selfheal-sandbox-*` in the v2 root and the v1 hierarchies) and runtime
/// dirs of sandboxes whose creating process is gone. Sandboxes of live processes (other test
/// binaries running now) and anything not named like ours are left alone.
pub fn sweep_stale() {
    let mut ids = BTreeSet::new();
    let mut roots = vec![cgroupfs::v2_root()];
    roots.extend(cgroupfs::v1_hierarchies());
    for root in &roots {
        for name in dir_names(root) {
            if let Some(id) = name.strip_prefix(CGROUP_PREFIX) {
                ids.insert(id.to_owned());
            }
        }
    }
    ids.extend(dir_names(Path::new(RUNTIME_BASE)));

    for id in ids {
        // Names that do not parse as `<label>-<pid>-<counter>` are not ours.
        let Some(pid) = creator_pid(&id) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        eprintln!("selfheal sandbox {id}: removing leftovers of a crashed run (pid {pid} is gone)");
        remove_sandbox(&id);
        remove_runtime_dir(&id);
    }
}

/// Kills whatever is still in the sandbox's cgroup tree, then removes the tree from the v2 root
/// and the v1 hierarchies (systemd mirrors its tree into `name=systemd`, tests may create v1
/// memory cgroups below the sandbox's name).
fn remove_sandbox(id: &str) {
    let name = format!("{CGROUP_PREFIX}{id}");
    let v2 = cgroupfs::v2_root().join(&name);
    if let Err(err) = cgroupfs::kill_tree(&v2) {
        eprintln!(
            "selfheal sandbox {id}: killing the processes in {}: {err}",
            v2.display()
        );
    }
    let mut trees = vec![v2];
    trees.extend(
        cgroupfs::v1_hierarchies()
            .into_iter()
            .map(|root| root.join(&name)),
    );
    for tree in trees {
        // Only v1 trees can still hold processes here: ones a test moved out of the v2 tree.
        let result = cgroupfs::kill_tree(&tree).and_then(|()| cgroupfs::remove_tree(&tree));
        if let Err(err) = result {
            eprintln!(
                "selfheal sandbox {id}: removing cgroup {}: {err}",
                tree.display()
            );
        }
    }
}

fn remove_runtime_dir(id: &str) {
    let dir = runtime_dir(id);
    match fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            eprintln!("selfheal sandbox {id}: removing {}: {err}", dir.display());
        }
        _ => {}
    }
}

/// SIGTERM, then SIGKILL if the process is still there after [`STOP_TIMEOUT`]; always reaps it.
fn stop(id: &str, what: &str, mut child: Child) {
    cgroupfs::kill(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) => {
                eprintln!(
                    "selfheal sandbox {id}: {what} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it"
                );
                break;
            }
            Err(err) => {
                eprintln!("selfheal sandbox {id}: waiting for {what}: {err}");
                break;
            }
        }
    }
    if let Err(err) = child.kill().and_then(|()| child.wait().map(drop)) {
        eprintln!("selfheal sandbox {id}: killing {what}: {err}");
    }
}

fn runtime_dir(id: &str) -> PathBuf {
    Path::new(RUNTIME_BASE).join(id)
}

/// The pid in a sandbox id `<label>-<pid>-<counter>` (labels may contain `-`).
fn creator_pid(id: &str) -> Option<u32> {
    let mut parts = id.rsplitn(3, '-');
    let _counter: u32 = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next().filter(|label| !label.is_empty())?;
    Some(pid)
}

fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::creator_pid;

    #[test]
    fn creator_pid_is_read_from_the_right() {
        assert_eq!(creator_pid("two-sandboxes-4242-7"), Some(4242));
        assert_eq!(creator_pid("x-1-0"), Some(1));
        assert_eq!(creator_pid("4242-7"), None);
        assert_eq!(creator_pid("label-pid-7"), None);
        assert_eq!(creator_pid("label-4242-x"), None);
    }
}
