//! Hosts of a fleet on one machine (the fleet tests and `cargo xtask run -- --fleet-demo`): each
//! a sandboxed `systemd --user` running the same group (`web.service`), with its own agent in
//! fleet mode, and a fault switch per host.

use std::{path::PathBuf, time::Duration};

use crate::{Sandbox, agent::Agent, service_unit, workload_bin};
use anyhow::Context as _;
use serde_json::Value;

pub const UNIT: &str = "web.service";
/// Generous: several agents and an etcd cluster share a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Host {
    pub name: String,
    pub agent: Agent,
    pub sandbox: Sandbox,
    /// While this file exists the unit's health probe fails; the unit's start removes it, so a
    /// restart heals it.
    pub fault: PathBuf,
}

/// `[fleet]` keys every test host has unless `extra` sets them itself.
const FLEET_DEFAULTS: [(&str, &str); 3] = [
    ("lease_ttl", "\"3s\""),
    ("settle", "\"2s\""),
    ("breaker_cooldown", "\"3s\""),
];

/// The `[fleet]` table plus the group's unit, for host `name`; `extra` adds `[fleet]` keys.
fn config(
    name: &str,
    fleet: &str,
    endpoints: &[String],
    fault: &std::path::Path,
    extra: &str,
) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    let defaults: String = FLEET_DEFAULTS
        .iter()
        .filter(|(key, _)| {
            !extra
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key} ")))
        })
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect();
    format!(
        r#"[fleet]
endpoints = [{}]
name = "{fleet}"
host = "{name}"
zone = "z-{name}"
{defaults}{extra}

[[unit]]
name = "{UNIT}"
group = "web"
max_disrupted = 1

[[unit.probe]]
name = "healthy"
kind = "exec"
command = ["/bin/sh", "-c", "! test -e {}"]
interval = "300ms"
timeout = "2s"
grace = "0s"
consecutive_failures = 2
"#,
        endpoints.join(", "),
        fault.display()
    )
}

impl Host {
    pub fn start(
        name: &str,
        fleet: &str,
        endpoints: &[String],
        extra: &str,
    ) -> anyhow::Result<Host> {
        let sandbox = Sandbox::start(&format!("fleet-{name}"))?;
        let fault = sandbox.runtime_dir().join("fault");
        let pre = format!("ExecStartPre=/bin/rm -f {}", fault.display());
        let exec = format!("{} sleep", workload_bin().display());
        sandbox.install_unit(UNIT, &service_unit("fleet test service", &exec, &[&pre]))?;
        sandbox.systemctl(&["start", UNIT])?;
        let agent = Agent::start(
            &sandbox,
            &config(name, fleet, endpoints, &fault, extra),
            &[],
        )?;
        Ok(Host {
            name: name.to_owned(),
            agent,
            sandbox,
            fault,
        })
    }

    /// Makes the unit's probe fail until the unit is restarted.
    pub fn break_unit(&self) -> anyhow::Result<()> {
        std::fs::write(&self.fault, "").context("creating the fault file")
    }

    pub fn config_path(&self) -> PathBuf {
        self.sandbox.runtime_dir().join("selfheal.toml")
    }

    /// The agent's audit log, one JSON value per line.
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.sandbox.runtime_dir().join("actions.jsonl"))
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Audit records of restarts that ran (outcome "done").
    pub fn restarts_done(&self) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|r| {
                r["event"] == "action" && r["action"] == "restart" && r["outcome"] == "done"
            })
            .collect()
    }

    /// The agent's `/metrics`.
    pub fn metrics(&self) -> anyhow::Result<String> {
        self.agent.metrics()
    }

    /// The agent's fleet-related log lines, for failure messages.
    pub fn fleet_log(&self) -> String {
        let log = self.agent.log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("fleet") || l.contains("slot"))
            .collect();
        format!("--- {} ---\n{}", self.name, lines.join("\n"))
    }

    pub fn wait_healed(&self, timeout: Duration) -> anyhow::Result<Value> {
        Sandbox::wait_until(&format!("{} to restart {UNIT}", self.name), timeout, || {
            Ok(!self.restarts_done().is_empty() && !self.fault.exists())
        })
        .with_context(|| format!("{} log:\n{}", self.name, self.agent.log_text()))?;
        Ok(self.restarts_done().remove(0))
    }

    /// Runs `selfheal-agent fleet <args>` against this host's config.
    pub fn fleet_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let config = self.config_path();
        let mut all = vec!["fleet", "--config", config.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        let out = self.agent.cli(&all)?;
        anyhow::ensure!(
            out.status.success(),
            "fleet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Starts `n` hosts h0..h{n-1} on one fleet.
pub fn start_fleet(
    n: usize,
    fleet: &str,
    endpoints: &[String],
    extra: &str,
) -> anyhow::Result<Vec<Host>> {
    (0..n)
        .map(|i| Host::start(&format!("h{i}"), fleet, endpoints, extra))
        .collect()
}
