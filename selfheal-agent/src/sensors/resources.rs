//! Resource usage of a unit against its limits: fds, sockets, TCP connections, threads and
//! memory, read each tick from procfs and cgroupfs (plus the kernel's live socket count).

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::Arc,
    time::Instant,
};

use serde::Serialize;

use super::{
    cgroup_v1::{Controller, V1Dirs},
    sockets,
    tcp_tables::TcpTables,
};
use crate::detect::{LeakKind, leak::ResourceSample};

/// Limits systemd knows for the unit (`u64::MAX` or 0 = none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemdLimits {
    pub memory_max: u64,
    pub memory_high: u64,
    pub tasks_max: u64,
}

/// What to read for one unit.
#[derive(Clone, Debug)]
pub struct UnitResourcesInput {
    pub unit: u32,
    pub dir: Arc<Path>,
    pub limits: SystemdLimits,
    /// Live inet sockets from the kernel's cgroup_sock programs, when attached.
    pub live_sockets: Option<u64>,
    /// The socket inodes its processes hold, when the scheduler sensor read them this pass.
    pub socket_inodes: Option<Arc<HashSet<u64>>>,
}

/// One process's share, for status.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProcessResources {
    pub pid: u32,
    pub comm: String,
    pub fds: u64,
    pub fd_limit: Option<u64>,
    pub threads: u64,
}

/// Everything read about one unit in one tick.
#[derive(Clone, Debug, Serialize)]
pub struct UnitResources {
    pub processes: Vec<ProcessResources>,
    pub threads: u64,
    pub memory_bytes: Option<u64>,
    pub memory_limit: Option<u64>,
    pub memory_psi_some_avg10: Option<f64>,
    pub sockets: Option<u64>,
    pub connections: Vec<(&'static str, u64)>,
    /// The tightest task limit (see [`tasks_limit`]).
    pub tasks_max: Option<u64>,
}

impl UnitResources {
    /// The samples the leak detector takes, one per resource kind.
    pub fn samples(&self, at: Instant) -> Vec<ResourceSample> {
        let tasks_max = self.tasks_max;
        let as_f = |v: u64| v as f64;
        // fds run into a per-process limit: follow the process closest to its own.
        let top = self
            .processes
            .iter()
            .max_by(|a, b| ratio(a).total_cmp(&ratio(b)));
        let top_process = top.map(|p| (p.pid, p.comm.clone()));
        let fd_limit = top.and_then(|p| p.fd_limit).map(as_f);
        let mut samples = Vec::new();
        if let Some(top) = top {
            samples.push(sample(
                at,
                LeakKind::Fd,
                as_f(top.fds),
                fd_limit,
                &top_process,
            ));
        }
        if let Some(sockets) = self.sockets {
            samples.push(sample(
                at,
                LeakKind::Socket,
                as_f(sockets),
                fd_limit,
                &top_process,
            ));
        }
        let connections: u64 = self.connections.iter().map(|(_, n)| n).sum();
        samples.push(sample(
            at,
            LeakKind::Connection,
            as_f(connections),
            fd_limit,
            &top_process,
        ));
        samples.push(sample(
            at,
            LeakKind::Thread,
            as_f(self.threads),
            tasks_max.map(as_f),
            &top_process,
        ));
        if let Some(memory) = self.memory_bytes {
            samples.push(sample(
                at,
                LeakKind::Memory,
                as_f(memory),
                self.memory_limit.map(as_f),
                &top_process,
            ));
        }
        samples
    }
}

fn ratio(p: &ProcessResources) -> f64 {
    p.fds as f64 / p.fd_limit.unwrap_or(u64::MAX) as f64
}

fn sample(
    at: Instant,
    kind: LeakKind,
    value: f64,
    limit: Option<f64>,
    top: &Option<(u32, String)>,
) -> ResourceSample {
    ResourceSample {
        at,
        kind,
        value,
        limit,
        top_process: top.clone(),
    }
}

/// A real limit: systemd and cgroupfs say "infinity" with huge numbers or 0.
fn finite(v: u64) -> Option<u64> {
    (v != 0 && v < (1 << 62)).then_some(v)
}

/// Each unit's last reading, reused while the unit is quiet: none of its tasks ran or could run
/// since (see [`super::sched::SchedSensor::quiet`]), so it opened no fd, started no thread and
/// grew no heap. 1,000 sleeping units cost their scheduler map entries, not 30 procfs and
/// cgroupfs reads each per tick.
#[derive(Default)]
pub struct ReadingCache {
    units: HashMap<u32, Kept>,
    v1: V1Dirs,
}

struct Kept {
    /// What the reading was taken with: another cgroup or other limits read again.
    dir: Arc<Path>,
    limits: SystemdLimits,
    reading: UnitResources,
}

impl ReadingCache {
    /// The unit's resources: the kept reading when the unit is `quiet` and was read with the
    /// same cgroup and limits, a fresh one otherwise.
    pub fn read(
        &mut self,
        input: &UnitResourcesInput,
        quiet: bool,
        tables: &mut TcpTables,
    ) -> UnitResources {
        if let Some(kept) = self.units.get(&input.unit)
            && quiet
            && kept.dir == input.dir
            && kept.limits == input.limits
        {
            return kept.reading.clone();
        }
        let reading = read(input, &mut self.v1, tables);
        self.units.insert(
            input.unit,
            Kept {
                dir: input.dir.clone(),
                limits: input.limits,
                reading: reading.clone(),
            },
        );
        reading
    }

    /// Forgets the units `keep` says no to (not sampled any more), and the v1 directories of
    /// processes no kept reading has.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.units.retain(|unit, _| keep(*unit));
        let pids: HashSet<u32> = self
            .units
            .values()
            .flat_map(|kept| kept.reading.processes.iter().map(|p| p.pid))
            .collect();
        self.v1.retain(|pid| pids.contains(&pid));
    }
}

/// `v1`: the v1 directories found so far (hybrid hosts); `tables`: the pass's TCP tables.
pub fn read(input: &UnitResourcesInput, v1: &mut V1Dirs, tables: &mut TcpTables) -> UnitResources {
    let tgids = super::procfs::procs_in_tree(&input.dir);
    let processes: Vec<ProcessResources> = tgids.iter().filter_map(|&pid| process(pid)).collect();
    let threads = processes.iter().map(|p| p.threads).sum();
    let (memory_bytes, cgroup_limit) = memory(&input.dir, tgids.first().copied(), v1);
    let memory_limit = finite(input.limits.memory_max)
        .or(finite(input.limits.memory_high))
        .or(cgroup_limit);
    let tcp = match &input.socket_inodes {
        Some(inodes) => sockets::TcpView::of(inodes, &tgids, tables),
        None => sockets::TcpView::read(&tgids, tables),
    };
    UnitResources {
        processes,
        threads,
        memory_bytes,
        memory_limit,
        memory_psi_some_avg10: super::cgroup_stats::psi_some_avg10(&input.dir, "memory"),
        // The kernel counts the sockets the unit creates; the ones accept() returns are not
        // created by it and are counted from its fds.
        sockets: input.live_sockets.map(|live| live + tcp.accepted()),
        connections: tcp.by_state(),
        tasks_max: tasks_limit(&input.dir, &input.limits, tgids.first().copied(), v1),
    }
}

/// The tightest of the unit's TasksMax, the v2 `pids.max` of its cgroup and, on hybrid hosts,
/// the v1 `pids.max` of its processes' (`pid`'s) pids cgroup when that cgroup is the unit's
/// own (see [`cgroup_v1::unit_dir`]).
fn tasks_limit(
    dir: &Path,
    limits: &SystemdLimits,
    pid: Option<u32>,
    v1: &mut V1Dirs,
) -> Option<u64> {
    let v2 = read_number(&dir.join("pids.max")).and_then(finite);
    let v1 = pid
        .and_then(|pid| v1.dir(pid, Controller::Pids))
        .and_then(|dir| read_number(&dir.join("pids.max")))
        .and_then(finite);
    [finite(limits.tasks_max), v2, v1]
        .into_iter()
        .flatten()
        .min()
}

fn process(pid: u32) -> Option<ProcessResources> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    Some(ProcessResources {
        pid,
        comm: field("Name:").unwrap_or_default().to_owned(),
        fds: fd_count(pid)?,
        fd_limit: fd_limit(pid),
        threads: field("Threads:").and_then(|v| v.parse().ok()).unwrap_or(1),
    })
}

/// Open fds of `pid`. Since Linux 6.2 the size of /proc/PID/fd is the count (O(1)); older
/// kernels report 0 there, and we count the entries.
pub fn fd_count(pid: u32) -> Option<u64> {
    let dir = format!("/proc/{pid}/fd");
    let size = std::fs::metadata(&dir).ok()?.size();
    if size > 0 {
        return Some(size);
    }
    Some(std::fs::read_dir(&dir).ok()?.count() as u64)
}

/// The soft RLIMIT_NOFILE of `pid`.
fn fd_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// (usage, limit) of the unit's memory: v2 memory.current/memory.max, or on hybrid hosts the
/// v1 memory controller's cgroup of one of its processes when that cgroup is the unit's own.
fn memory(v2_dir: &Path, pid: Option<u32>, v1: &mut V1Dirs) -> (Option<u64>, Option<u64>) {
    if let Some(current) = read_number(&v2_dir.join("memory.current")) {
        return (
            Some(current),
            read_number(&v2_dir.join("memory.max")).and_then(finite),
        );
    }
    let Some(dir) = pid.and_then(|pid| v1.dir(pid, Controller::Memory)) else {
        return (None, None);
    };
    (
        read_number(&dir.join("memory.usage_in_bytes")),
        read_number(&dir.join("memory.limit_in_bytes")).and_then(finite),
    )
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_fd_count_matches_the_entries_of_proc_self_fd() {
        let me = std::process::id();
        let _extra = std::fs::File::open("/proc/self/status").expect("open");
        let listed = std::fs::read_dir(format!("/proc/{me}/fd"))
            .expect("fd dir")
            .count() as u64;
        // read_dir itself holds one fd while listing.
        let counted = fd_count(me).expect("count");
        assert!(
            counted == listed || counted + 1 == listed,
            "{counted} vs {listed}"
        );
    }

    #[test]
    fn our_process_reads_with_its_fd_limit_and_threads() {
        let p = process(std::process::id()).expect("self");
        assert!(p.fd_limit.is_some_and(|l| l >= p.fds), "{p:?}");
        assert!(p.threads >= 1);
    }

    #[test]
    fn a_v1_cgroup_shared_with_the_agent_says_nothing_about_memory() {
        // Whatever the host, our own process shares every cgroup with us.
        let me = std::process::id();
        let mut v1 = V1Dirs::default();
        assert_eq!(
            memory(Path::new("/nonexistent"), Some(me), &mut v1),
            (None, None)
        );
    }

    #[test]
    fn a_quiet_unit_keeps_its_reading_until_it_runs_or_its_cgroup_or_limits_change() {
        let dir = std::env::temp_dir().join(format!("selfheal-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let current = |bytes: u64| {
            std::fs::write(dir.join("memory.current"), bytes.to_string()).expect("write")
        };
        let mut input = UnitResourcesInput {
            unit: 3,
            dir: dir.as_path().into(),
            limits: SystemdLimits::default(),
            live_sockets: None,
            socket_inodes: None,
        };
        let mut cache = ReadingCache::default();
        current(100);
        assert_eq!(
            cache
                .read(&input, true, &mut TcpTables::default())
                .memory_bytes,
            Some(100),
            "nothing kept yet"
        );
        current(200);
        assert_eq!(
            cache
                .read(&input, true, &mut TcpTables::default())
                .memory_bytes,
            Some(100),
            "quiet: kept"
        );
        assert_eq!(
            cache
                .read(&input, false, &mut TcpTables::default())
                .memory_bytes,
            Some(200),
            "it ran: read"
        );
        current(300);
        input.limits.memory_max = 1 << 30;
        assert_eq!(
            cache
                .read(&input, true, &mut TcpTables::default())
                .memory_bytes,
            Some(300),
            "new limits: read"
        );
        cache.retain(|unit| unit != 3);
        current(400);
        assert_eq!(
            cache
                .read(&input, true, &mut TcpTables::default())
                .memory_bytes,
            Some(400),
            "forgotten: read"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn infinite_limits_are_no_limits() {
        assert_eq!(finite(u64::MAX), None);
        assert_eq!(finite(0), None);
        assert_eq!(finite(1 << 30), Some(1 << 30));
    }
}
