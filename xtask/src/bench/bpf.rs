//! The agent's kernel programs and maps as bpftool sees them: per-program run counts and run
//! time (with `kernel.bpf_stats_enabled`), map memory. Programs are told apart by the pid
//! holding them, since other agents (tests running beside the bench) load the same names.

use std::process::Command;

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

fn held_by(item: &Value, pid: u32) -> bool {
    item["pids"].as_array().is_some_and(|pids| {
        pids.iter()
            .any(|p| p["pid"].as_u64() == Some(u64::from(pid)))
    })
}

/// Programs loaded by `pid`.
pub fn programs_of(pid: u32) -> anyhow::Result<Vec<ProgStat>> {
    Ok(bpftool("prog")?
        .iter()
        .filter(|p| held_by(p, pid))
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
    bpftool("prog").map_or(0, |progs| {
        progs
            .iter()
            .filter(|p| p["name"] == "sched_switch")
            .filter(|p| pid.is_none_or(|pid| !held_by(p, pid)))
            .count()
    })
}

/// `(name, bytes)` of every map `pid` holds, largest first.
pub fn maps_of(pid: u32) -> anyhow::Result<Vec<(String, u64)>> {
    let mut maps: Vec<(String, u64)> = bpftool("map")?
        .iter()
        .filter(|m| held_by(m, pid))
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

/// Turns `kernel.bpf_stats_enabled` on for its lifetime (it costs two clock reads per program
/// run, so it stays off while ratios are measured) and puts the old value back.
pub struct StatsOn {
    previous: String,
}

impl StatsOn {
    pub fn new() -> anyhow::Result<StatsOn> {
        let previous = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?;
        std::fs::write(STATS_SYSCTL, "1").with_context(|| format!("writing {STATS_SYSCTL}"))?;
        Ok(StatsOn { previous })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, self.previous.trim());
    }
}
