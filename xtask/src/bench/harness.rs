//! The bench's use of the test harness: units installed in bulk, one-shot measurements run as
//! units, systemd's own timestamps, and the agent's pid and history.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use selfheal_tests::{Sandbox, agent::Agent};
use serde_json::Value;

/// The release binaries the bench runs.
#[derive(Clone, Debug)]
pub struct Bins {
    pub agent: PathBuf,
    pub workload: PathBuf,
}

impl Bins {
    /// `selfheal-workload <args>` as an ExecStart= line.
    pub fn workload(&self, args: &str) -> String {
        format!("{} {args}", self.workload.display())
    }
}

/// Writes every unit file, then reloads the manager once (1,000 reloads would take minutes).
pub fn install_units(sandbox: &Sandbox, units: &[(String, String)]) -> anyhow::Result<()> {
    let dir = sandbox.unit_dir();
    for (name, contents) in units {
        std::fs::write(dir.join(name), contents).with_context(|| format!("writing {name}"))?;
    }
    sandbox.systemctl(&["daemon-reload"])?;
    Ok(())
}

/// Several properties of a unit in one `systemctl show`.
pub fn props(
    sandbox: &Sandbox,
    unit: &str,
    names: &[&str],
) -> anyhow::Result<HashMap<String, String>> {
    let mut args = vec!["show", unit];
    for name in names {
        args.extend(["-p", name]);
    }
    Ok(sandbox
        .systemctl(&args)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The unit's running main process and when systemd started it (CLOCK_MONOTONIC ns).
pub fn main_process(sandbox: &Sandbox, unit: &str) -> anyhow::Result<Option<(u32, u64)>> {
    let p = props(
        sandbox,
        unit,
        &["MainPID", "ExecMainStartTimestampMonotonic", "ActiveState"],
    )?;
    let pid: u32 = p.get("MainPID").and_then(|v| v.parse().ok()).unwrap_or(0);
    let start_us: u64 = p
        .get("ExecMainStartTimestampMonotonic")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let active = p.get("ActiveState").is_some_and(|s| s == "active");
    Ok((pid != 0 && active).then_some((pid, start_us * 1000)))
}

/// Waits until `unit` runs a main process other than `old`; its pid and start time, or None
/// when `timeout` passed first.
pub fn wait_replaced(
    sandbox: &Sandbox,
    unit: &str,
    old: u32,
    timeout: Duration,
    poll: Duration,
) -> anyhow::Result<Option<(u32, u64)>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((pid, start)) = main_process(sandbox, unit)?
            && pid != old
        {
            return Ok(Some((pid, start)));
        }
        thread::sleep(poll);
    }
    Ok(None)
}

/// Starts a unit whose workload writes its result to `out`, and returns that result.
pub fn run_for_result(
    sandbox: &Sandbox,
    unit: &str,
    out: &Path,
    timeout: Duration,
) -> anyhow::Result<String> {
    let _ = std::fs::remove_file(out);
    sandbox.systemctl(&["start", unit])?;
    let result = read_when_written(out, timeout);
    // The unit exits by itself; stopping it covers a workload that failed or hung.
    let _ = sandbox.systemctl(&["stop", unit]);
    let _ = sandbox.systemctl(&["reset-failed", unit]);
    result.with_context(|| format!("{unit} gave no result"))
}

/// The contents of `out` once it exists (workloads rename it into place whole).
pub fn read_when_written(out: &Path, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(out) {
            return Ok(text.trim().to_owned());
        }
        if Instant::now() >= deadline {
            bail!("{} was not written within {timeout:?}", out.display());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn agent_pid(agent: &Agent) -> anyhow::Result<u32> {
    let status = agent.status()?;
    status["agent"]["pid"]
        .as_u64()
        .map(|p| p as u32)
        .context("status has no agent pid")
}

/// Every history record of every unit, with the unit's name.
pub fn all_records(status: &Value) -> Vec<(String, Value)> {
    status["units"]
        .as_array()
        .map(|units| {
            units
                .iter()
                .flat_map(|u| {
                    let name = u["name"].as_str().unwrap_or_default().to_owned();
                    u["history"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |r| (name.clone(), r))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn signal(pid: u32, sig: i32) -> anyhow::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid as i32, sig) } != 0 {
        bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
