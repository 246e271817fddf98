//! Just enough cgroupfs for the harness: find the hierarchies, list, kill and remove cgroup trees.
//!
//! Production hosts run the unified (v2) hierarchy at `/sys/fs/cgroup`; hybrid hosts (like the
//! development VM) mount it at `/sys/fs/cgroup/unified` next to v1 controllers, and systemd mirrors
//! its tree into the v1 `name=systemd` hierarchy there.

use std::{
    fs, io,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// How long [`kill_tree`] waits for killed processes to leave their cgroups.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`remove_tree`] retries an `rmdir` that fails with EBUSY (tasks still exiting).
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

/// The root of the unified (v2) hierarchy: `/sys/fs/cgroup` on pure v2 hosts, else the hybrid
/// layout's `/sys/fs/cgroup/unified`.
pub fn v2_root() -> PathBuf {
    let mount = Path::new(CGROUP_MOUNT);
    if mount.join("cgroup.controllers").exists() {
        mount.to_path_buf()
    } else {
        mount.join("unified")
    }
}

/// Mount points of the v1 hierarchies (empty on pure v2 hosts).
pub fn v1_hierarchies() -> Vec<PathBuf> {
    v1_mounts().into_iter().map(|(path, _)| path).collect()
}

/// The v1 memory controller's mount point, if the host has one.
pub fn v1_memory_root() -> Option<PathBuf> {
    v1_root("memory")
}

/// The mount point of the v1 hierarchy `controller` (`cpu`, `memory`, `pids`...) is attached to,
/// if the host has one.
pub fn v1_root(controller: &str) -> Option<PathBuf> {
    v1_mounts()
        .into_iter()
        .find(|(_, options)| options.split(',').any(|option| option == controller))
        .map(|(path, _)| path)
}

/// (mount point, super options) of every v1 cgroup mount, from `/proc/self/mountinfo`.
fn v1_mounts() -> Vec<(PathBuf, String)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|line| {
            // "<id> <parent> <dev> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
            let (before, after) = line.split_once(" - ")?;
            let mut after = after.split_whitespace();
            if after.next()? != "cgroup" {
                return None;
            }
            let options = after.nth(1)?.to_owned();
            Some((PathBuf::from(before.split_whitespace().nth(4)?), options))
        })
        .collect()
}

/// The pids in one cgroup's `cgroup.procs`.
pub fn read_procs(cgroup: &Path) -> io::Result<Vec<u32>> {
    let procs = fs::read_to_string(cgroup.join("cgroup.procs"))?;
    Ok(procs
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect())
}

/// The pids in a cgroup and all its descendants; empty if the cgroup does not exist.
pub fn procs_in_tree(cgroup: &Path) -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for dir in tree(cgroup)? {
        match read_procs(&dir) {
            Ok(found) => pids.extend(found),
            // The cgroup went away while we walked: nothing in it.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(pids)
}

/// Kills every process in a cgroup tree and waits until the tree is empty.
///
/// Uses `cgroup.kill` where the kernel has it (v2, Linux 5.14+), which also catches processes that
/// fork while we kill; otherwise SIGKILLs every listed pid until none is left. A missing cgroup is
/// already empty.
pub fn kill_tree(cgroup: &Path) -> io::Result<()> {
    refuse_hierarchy_root(cgroup)?;
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let pids = procs_in_tree(cgroup)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "processes {pids:?} in {} survived SIGKILL for {KILL_TIMEOUT:?}",
                cgroup.display()
            )));
        }
        let kill_file = cgroup.join("cgroup.kill");
        if kill_file.exists() {
            ignore_not_found(fs::write(&kill_file, "1"))?;
        } else {
            for pid in pids {
                kill(pid, libc::SIGKILL);
            }
        }
        thread::sleep(POLL);
    }
}

/// Removes a cgroup and its descendants, deepest first. The cgroups must be empty (see
/// [`kill_tree`]); a missing cgroup counts as removed.
pub fn remove_tree(cgroup: &Path) -> io::Result<()> {
    refuse_hierarchy_root(cgroup)?;
    // `tree` lists parents before children, so reversing it removes children first.
    for dir in tree(cgroup)?.iter().rev() {
        let deadline = Instant::now() + RMDIR_TIMEOUT;
        loop {
            match ignore_not_found(fs::remove_dir(dir)) {
                Ok(()) => break,
                // A killed task may still be on its way out of the cgroup.
                Err(err)
                    if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                {
                    thread::sleep(POLL);
                }
                Err(err) => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("rmdir {}: {err}", dir.display()),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Kills what is left in the v1 memory cgroup `name` (relative to the memory controller's root,
/// as passed to `selfheal-workload oom`) and removes it. Does nothing on hosts without v1 memory.
pub fn remove_v1_memory_cgroup(name: &str) -> io::Result<()> {
    let Some(root) = v1_memory_root() else {
        return Ok(());
    };
    let cgroup = root.join(relative_name(name)?);
    kill_tree(&cgroup)?;
    remove_tree(&cgroup)
}

/// Checks that a cgroup name given by a caller stays below the hierarchy root it is joined to.
pub fn relative_name(name: &str) -> io::Result<&Path> {
    let path = Path::new(name);
    let below_root = path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if name.is_empty() || !below_root {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cgroup name {name:?} must be a relative path without `..`"),
        ));
    }
    Ok(path)
}

/// A cgroup and all its descendant cgroups, parents before children; empty if it does not exist.
fn tree(cgroup: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs = vec![cgroup.to_path_buf()];
    let mut next = 0;
    while next < dirs.len() {
        let entries = match fs::read_dir(&dirs[next]) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                dirs.remove(next);
                continue;
            }
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        next += 1;
    }
    Ok(dirs)
}

/// Killing or removing a hierarchy root would take the whole machine with it: never do that.
fn refuse_hierarchy_root(cgroup: &Path) -> io::Result<()> {
    let is_root = cgroup == v2_root()
        || !cgroup.starts_with(CGROUP_MOUNT)
        || cgroup.parent() == Some(Path::new(CGROUP_MOUNT))
        || v1_hierarchies().iter().any(|root| root == cgroup);
    if is_root {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a cgroup below a hierarchy root",
                cgroup.display()
            ),
        ));
    }
    Ok(())
}

/// Sends `signal` to `pid`; gone processes are fine. Never signals pid 0 (our own process
/// group), pid 1, or ourselves.
pub(crate) fn kill(pid: u32, signal: libc::c_int) {
    if pid <= 1 || pid == std::process::id() {
        return;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; a failure (ESRCH) is ignored on purpose.
    unsafe { libc::kill(pid, signal) };
}

fn ignore_not_found(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
