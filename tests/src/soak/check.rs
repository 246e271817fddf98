//! What must hold after a soak, read from the agent's audit log, its status, systemd and
//! cgroupfs, and what the run measured.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::fleet::{Fleet, MAX_RESTARTS};
use crate::{
    Sandbox,
    agent::{Agent, agent_pid, audit_lines},
};

/// How much the agent's RSS may grow over the calm tail (allocator noise, history rings
/// filling up); anything steadily leaking grows past it in minutes.
const RSS_SLACK_KIB: u64 = 8 * 1024;
/// Open fds may come and go (probe connections, D-Bus calls in flight) but not pile up.
const FD_SLACK: u64 = 16;
/// The audit log's `at_ms` is wall-clock and `duration_ms` is measured on another clock.
const CLOCK_SLACK_MS: u64 = 50;

/// What a soak did and saw.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub agent_kills: u64,
    pub agent_stops: u64,
    pub unit_events: u64,
    /// Restarts the audit log records as done, over all units.
    pub restarts_done: usize,
    /// Starts systemd made beyond each unit's first (new InvocationIDs seen).
    pub restarts_seen: usize,
    /// (RSS KiB, open fds) of the agent at the start and the end of the calm tail.
    pub footprint: ((u64, u64), (u64, u64)),
    /// Status samples in which a unit had an action in flight (the one-action check ran).
    pub in_flight_seen: u64,
    /// Freezes and quarantines the audit log records as done.
    pub isolations: usize,
    /// With no isolation, the suspect's audit lines (what the agent did instead).
    pub suspect_trail: Vec<String>,
}

/// What the soak saw while it ran, besides the audit log read at the end.
pub struct Seen {
    /// Each unit's InvocationIDs (a new one each time systemd starts it).
    pub invocations: BTreeMap<String, BTreeSet<String>>,
    /// Status samples that showed more than one action in flight for a unit.
    pub in_flight_breaks: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ((rss0, fds0), (rss1, fds1)) = self.footprint;
        write!(
            f,
            "seed {}: agent SIGKILLed {} and SIGSTOPped {} times, {} unit misbehaviours; \
             {} restarts done by the agent, {} new invocations seen in systemd; agent RSS \
             {rss0} -> {rss1} KiB and fds {fds0} -> {fds1} over the calm tail; {} samples \
             with an action in flight, {} isolations",
            self.seed,
            self.agent_kills,
            self.agent_stops,
            self.unit_events,
            self.restarts_done,
            self.restarts_seen,
            self.in_flight_seen,
            self.isolations,
        )?;
        if !self.suspect_trail.is_empty() {
            write!(f, "; the suspect's audit lines:")?;
            for line in &self.suspect_trail {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
    }
}

/// (VmRSS in KiB, open fds) of `pid`.
pub fn footprint(pid: i32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    Ok((rss, fds))
}

/// The agent's state (one `status --json`) never has two actions in flight for a unit: each
/// step of the soak's ladders is one action, and the agent must not start another before the
/// one in flight is answered. A status without the field breaks the check too.
pub fn in_flight(status: &Value, report: &mut Report, broken: &mut Vec<String>) {
    for unit in status["units"].as_array().into_iter().flatten() {
        let name = unit["name"].as_str().unwrap_or("?");
        let Some(in_flight) = unit["view"]["policy"]["in_flight"].as_array() else {
            // Units the agent has no policy view for yet have no `policy` at all.
            if unit["view"]["policy"].is_object() {
                broken.push(format!("{name}: the status has no policy.in_flight"));
            }
            continue;
        };
        report.in_flight_seen += u64::from(!in_flight.is_empty());
        if in_flight.len() > 1 {
            broken.push(format!(
                "{name}: {} actions in flight at once: {in_flight:?}",
                in_flight.len()
            ));
        }
    }
}

/// Every invariant; fails naming each one broken.
pub fn at_the_end(
    sandbox: &Sandbox,
    agent: &Agent,
    fleet: &Fleet,
    seen: &Seen,
    calm_start: (u64, u64),
    report: &mut Report,
) -> anyhow::Result<()> {
    let audit = audit_lines(sandbox)?;
    let mut broken = seen.in_flight_breaks.clone();
    report.isolations = audit
        .iter()
        .filter(|l| {
            l["event"] == "action"
                && (l["action"] == "freeze" || l["action"] == "quarantine")
                && l["outcome"] == "done"
        })
        .count();
    if report.isolations == 0 {
        report.suspect_trail = audit
            .iter()
            .filter(|l| l["unit"] == "suspect.service")
            .map(Value::to_string)
            .collect();
    }
    for unit in fleet.names() {
        let actions: Vec<&Value> = audit
            .iter()
            .filter(|l| l["event"] == "action" && l["unit"] == unit)
            .collect();
        let restarts = |done: bool| {
            actions
                .iter()
                .filter(|a| a["action"] == "restart" && (!done || a["outcome"] == "done"))
                .count()
        };
        // A restart's decision line is written before RestartUnit is called and its action
        // line after the outcome: an agent SIGKILLed in between leaves only the decision.
        let decided = audit
            .iter()
            .filter(|l| {
                l["event"] == "decision"
                    && l["unit"] == unit
                    && l["actions"].as_str().is_some_and(|a| {
                        a.split(", ")
                            .any(|a| a.split_whitespace().next() == Some("restart"))
                    })
            })
            .count();
        let (done, tried) = (restarts(true), restarts(false).max(decided));
        report.restarts_done += done;
        if done > MAX_RESTARTS {
            broken.push(format!(
                "{unit}: {done} restarts done, budget {MAX_RESTARTS}"
            ));
        }
        // Units have Restart=no: only the agent starts them again, and says so.
        let new_runs = seen
            .invocations
            .get(unit)
            .map_or(0, |ids| ids.len().saturating_sub(1));
        report.restarts_seen += new_runs;
        if new_runs > tried {
            broken.push(format!(
                "{unit}: systemd started it {new_runs} more times, the audit log has {tried} restarts"
            ));
        }
        broken.extend(overlapping(unit, &actions));
        broken.extend(left_isolated(sandbox, agent, unit));
    }
    broken.extend(state_files(sandbox));
    let end = footprint(agent_pid(agent)?)?;
    report.footprint = (calm_start, end);
    if end.0 > calm_start.0 + RSS_SLACK_KIB || end.1 > calm_start.1 + FD_SLACK {
        broken.push(format!(
            "the agent grew over the calm tail: {calm_start:?} -> {end:?} (RSS KiB, fds)"
        ));
    }
    if !broken.is_empty() {
        bail!(
            "the soak broke {} invariant(s) ({report}):\n{}\nagent log:\n{}",
            broken.len(),
            broken.join("\n"),
            agent.log_text()
        );
    }
    Ok(())
}

/// Two of the unit's actions ran at once: one started before the previous one ended.
fn overlapping(unit: &str, actions: &[&Value]) -> Option<String> {
    let span = |a: &Value| {
        let end = a["at_ms"].as_u64().unwrap_or(0);
        (
            end.saturating_sub(a["duration_ms"].as_u64().unwrap_or(0)),
            end,
        )
    };
    let mut spans: Vec<(u64, u64)> = actions.iter().map(|a| span(a)).collect();
    spans.sort_unstable();
    spans.windows(2).find_map(|w| {
        (w[1].0 + CLOCK_SLACK_MS < w[0].1).then(|| {
            format!(
                "{unit}: an action started at {} before the one ending at {}",
                w[1].0, w[0].1
            )
        })
    })
}

/// A freeze or quarantine still on: in the agent's view, or in the unit's cgroup.
fn left_isolated(sandbox: &Sandbox, agent: &Agent, unit: &str) -> Option<String> {
    let policy = agent.unit(unit).ok()?["view"]["policy"].clone();
    if policy["frozen"] == true || policy["quarantined"] == true {
        return Some(format!("{unit}: still isolated at the end: {policy}"));
    }
    let freeze = std::fs::read_to_string(sandbox.unit_cgroup(unit).ok()?.join("cgroup.freeze"));
    (freeze.ok()?.trim() == "1").then(|| format!("{unit}: its cgroup is still frozen"))
}

/// Each JSON file of the agent's state dir must parse.
fn state_files(sandbox: &Sandbox) -> Vec<String> {
    let dir = sandbox.runtime_dir().join("state");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![format!("no state dir {}", dir.display())];
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let parsed = serde_json::from_str::<Value>(&text);
            parsed
                .err()
                .map(|e| format!("{} does not load: {e}", path.display()))
        })
        .collect()
}
