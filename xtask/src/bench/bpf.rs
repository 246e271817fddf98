//! The agent's kernel programs and maps as bpftool sees them: per-program run counts and run
//! time (while a `BPF_ENABLE_STATS` fd is open), map memory. Programs are told apart by the fds the
//! agent's pid holds, since other agents (tests running beside the bench) load the same names.

use std::{collections::HashSet, process::Command};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::cmd;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One program's counters; run_cnt and run_time_ns only move while stats are enabled.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgStat {
    pub id: u64,
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

fn bpftool(what: &str) -> anyhow::Result<Vec<Value>> {
    let out = cmd::output(Command::new("bpftool").args([what, "show", "--json"]))
        .with_context(|| format!("`bpftool {what} show --json` failed (package bpftool)"))?;
    let value: Value = serde_json::from_str(&out).context("bpftool printed malformed JSON")?;
    match value {
        Value::Array(items) => Ok(items),
        other => bail!("bpftool printed {other}, not a list"),
    }
}

/// Ids of the programs and maps whose fds `pid` holds, from /proc/PID/fdinfo (this bpftool
/// is built without the skeleton that would list pids itself).
fn held_ids(pid: u32) -> (HashSet<u64>, HashSet<u64>) {
    let mut progs = HashSet::new();
    let mut maps = HashSet::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in info.lines() {
            let id = |key: &str| line.strip_prefix(key).and_then(|v| v.trim().parse().ok());
            if let Some(id) = id("prog_id:") {
                progs.insert(id);
            } else if let Some(id) = id("map_id:") {
                maps.insert(id);
            }
        }
    }
    (progs, maps)
}

fn id_of(item: &Value) -> u64 {
    item["id"].as_u64().unwrap_or(0)
}

/// Programs loaded by `pid`.
pub fn programs_of(pid: u32) -> anyhow::Result<Vec<ProgStat>> {
    let (ids, _) = held_ids(pid);
    Ok(bpftool("prog")?
        .iter()
        .filter(|p| ids.contains(&id_of(p)))
        .map(|p| ProgStat {
            id: p["id"].as_u64().unwrap_or(0),
            name: p["name"].as_str().unwrap_or("?").to_owned(),
            run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
            run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
        })
        .collect())
}

/// Scheduler programs (`sched_switch`) loaded by processes other than `pid`: other agents whose
/// probes every workload pays for too.
pub fn foreign_sched_programs(pid: Option<u32>) -> usize {
    let ours = pid.map(|pid| held_ids(pid).0).unwrap_or_default();
    bpftool("prog").map_or(0, |progs| {
        progs
            .iter()
            .filter(|p| p["name"] == "sched_switch")
            .filter(|p| !ours.contains(&id_of(p)))
            .count()
    })
}

/// `(name, bytes)` of every map `pid` holds, largest first.
pub fn maps_of(pid: u32) -> anyhow::Result<Vec<(String, u64)>> {
    let (_, ids) = held_ids(pid);
    let mut maps: Vec<(String, u64)> = bpftool("map")?
        .iter()
        .filter(|m| ids.contains(&id_of(m)))
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("?").to_owned(),
                m["bytes_memlock"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    maps.sort_by_key(|m| std::cmp::Reverse(m.1));
    Ok(maps)
}

/// Per program, what happened between two snapshots: (name, runs, ns per run).
pub fn delta(before: &[ProgStat], after: &[ProgStat]) -> Vec<(String, u64, f64)> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.id == a.id)?;
            let runs = a.run_cnt.saturating_sub(b.run_cnt);
            let ns = a.run_time_ns.saturating_sub(b.run_time_ns);
            (runs > 0).then(|| (a.name.clone(), runs, ns as f64 / runs as f64))
        })
        .collect()
}

/// Per-program run-time stats, on while this lives: the fd of `bpf(BPF_ENABLE_STATS)`. The
/// kernel counts such fds and turns stats off when the last one closes, also when the bench
/// dies, so nothing is left on and the global sysctl is never written. Stats cost two clock
/// reads per program run, so they stay off while ratios are measured ([`stats_enabled`]).
pub struct StatsOn {
    _fd: std::os::fd::OwnedFd,
}

/// `BPF_ENABLE_STATS` (bpf(2) command 32) with `BPF_STATS_RUN_TIME` (0).
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

impl StatsOn {
    pub fn new() -> anyhow::Result<StatsOn> {
        // union bpf_attr for this command: { __u32 type; }, zero-padded.
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
        // SAFETY: bpf(2) reads `attr.len()` bytes from a buffer we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                attr.len() as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("bpf(BPF_ENABLE_STATS) failed (needs CAP_SYS_ADMIN, kernel 5.8+)");
        }
        // SAFETY: a new fd the kernel just returned, owned by nobody else.
        let fd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        Ok(StatsOn { _fd: fd })
    }
}

/// Whether per-program stats are on right now, by anyone: the sysctl reads the kernel's
/// switch, which a `BPF_ENABLE_STATS` fd also turns.
pub fn stats_enabled() -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(STATS_SYSCTL).with_context(|| format!("reading {STATS_SYSCTL}"))?;
    Ok(text.trim() != "0")
}
