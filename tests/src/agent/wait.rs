//! The waits and reads every integration test shares: the agent's records, its policy view,
//! its audit log and its CLI. One copy here, so a fix to how a test waits reaches every test.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::Agent;
use crate::{Sandbox, workload_bin};

/// Generous: the integration tests run in parallel on a 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// The command line of a `selfheal-workload` mode.
pub fn workload(args: &str) -> String {
    format!("{} {args}", workload_bin().display())
}

/// A file in the sandbox's runtime dir, as a string for unit files and configs.
pub fn sandbox_file(sandbox: &Sandbox, name: &str) -> String {
    sandbox.runtime_dir().join(name).display().to_string()
}

/// Whether a record is a restart that systemd carried out.
pub fn restart_done(record: &Value) -> bool {
    record["action"] == "restart" && record["outcome"] == "done"
}

/// A string field of a record, empty when missing.
pub fn text<'a>(record: &'a Value, field: &str) -> &'a str {
    record[field].as_str().unwrap_or_default()
}

/// Waits until systemd has loaded the unit for the agent, so a unit started next is adopted by
/// the kernel filter as its cgroup appears.
pub fn wait_loaded(agent: &Agent, unit: &str) -> anyhow::Result<()> {
    Sandbox::wait_until(&format!("the agent to know {unit}"), WAIT, || {
        Ok(agent.unit(unit)?["load_state"] == "loaded")
    })
}

/// Waits until the agent has resolved the running unit and pushed its cgroup into the kernel
/// filter.
pub fn wait_watching(agent: &Agent, unit: &str) -> anyhow::Result<()> {
    Sandbox::wait_until(&format!("the agent to watch {unit}"), WAIT, || {
        Ok(agent.unit(unit)?["cgroup_id"].is_u64())
    })
}

/// The unit's history records of `kind` that satisfy `matches`, oldest first.
pub fn records_where(
    agent: &Agent,
    unit: &str,
    kind: &str,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<Value>> {
    Ok(agent
        .records(unit, kind)?
        .into_iter()
        .filter(|r| matches(r))
        .collect())
}

/// Waits (up to [`WAIT`]) for the first record of `kind` that satisfies `matches`.
pub fn wait_for_record(
    agent: &Agent,
    unit: &str,
    kind: &str,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    wait_for_record_within(agent, unit, kind, what, WAIT, matches)
}

/// [`wait_for_record`] with its own timeout, for what takes longer than [`WAIT`] by design
/// (an alert going through Prometheus and Alertmanager, a leak's detection window).
pub fn wait_for_record_within(
    agent: &Agent,
    unit: &str,
    kind: &str,
    what: &str,
    timeout: Duration,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    wait_for_records_within(agent, unit, kind, what, 1, timeout, matches)
        .map(|mut found| found.remove(0))
}

/// Waits until `count` records of `kind` satisfy `matches`; returns them, oldest first.
pub fn wait_for_records(
    agent: &Agent,
    unit: &str,
    kind: &str,
    what: &str,
    count: usize,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<Value>> {
    wait_for_records_within(agent, unit, kind, what, count, WAIT, matches)
}

fn wait_for_records_within(
    agent: &Agent,
    unit: &str,
    kind: &str,
    what: &str,
    count: usize,
    timeout: Duration,
    matches: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<Value>> {
    let mut found = Vec::new();
    Sandbox::wait_until(what, timeout, || {
        found = records_where(agent, unit, kind, &matches)?;
        Ok(found.len() >= count)
    })
    .with_context(|| history_and_log(agent, unit))?;
    Ok(found)
}

/// The unit's status entry (with its history) and the agent's log, for failure messages.
pub fn history_and_log(agent: &Agent, unit: &str) -> String {
    let status = agent
        .unit(unit)
        .map(|u| format!("{u:#}"))
        .unwrap_or_else(|e| format!("(no status: {e:#})"));
    format!("{unit}:\n{status}\nagent log:\n{}", agent.log_text())
}

/// The policy's picture of the unit (`view.policy` of the status document).
pub fn policy(agent: &Agent, unit: &str) -> anyhow::Result<Value> {
    let policy = agent.unit(unit)?["view"]["policy"].clone();
    if policy.is_null() {
        bail!("no policy view for {unit} yet");
    }
    Ok(policy)
}

/// Waits until the unit's policy view satisfies `holds`; returns that view.
pub fn wait_for_policy(
    agent: &Agent,
    unit: &str,
    what: &str,
    holds: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let mut seen = Value::Null;
    Sandbox::wait_until(what, WAIT, || {
        seen = policy(agent, unit)?;
        Ok(holds(&seen))
    })
    .with_context(|| {
        format!(
            "last policy view: {seen:#}\n{}",
            history_and_log(agent, unit)
        )
    })?;
    Ok(seen)
}

/// Runs `selfheal-agent <args> --socket <the agent's socket>`; fails unless it succeeds.
/// Returns its stdout.
pub fn cli(agent: &Agent, args: &[&str]) -> anyhow::Result<String> {
    let socket = agent.socket().to_string_lossy().into_owned();
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--socket", &socket]);
    let out = agent.cli(&full)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "`selfheal-agent {}` failed ({}): {}{stdout}",
            full.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The agent's audit log (one JSON object per line), parsed; empty before the first action.
pub fn audit_lines(sandbox: &Sandbox) -> anyhow::Result<Vec<Value>> {
    let path = sandbox.runtime_dir().join("actions.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        other => other.with_context(|| format!("reading the audit log {}", path.display()))?,
    };
    text.lines()
        .map(|line| {
            serde_json::from_str(line).with_context(|| format!("audit line {line:?} is not JSON"))
        })
        .collect()
}

/// The agent's pid, from its own status.
pub fn agent_pid(agent: &Agent) -> anyhow::Result<i32> {
    let status = agent.status()?;
    status["agent"]["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .with_context(|| format!("no agent pid in {status:#}"))
}

/// Sends `signal` to the unit's main process; returns its pid.
pub fn kill_main(sandbox: &Sandbox, unit: &str, signal: i32) -> anyhow::Result<u32> {
    let pid = sandbox.main_pid(unit)?;
    // SAFETY: kill(2) on a process of a unit this test started.
    if unsafe { libc::kill(pid as i32, signal) } != 0 {
        bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(pid)
}
