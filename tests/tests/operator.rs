//! Issue 6 end to end: what an operator and their tools see of a running agent. Its live
//! `/metrics` pass `promtool`, a real Prometheus and Alertmanager drive it through its webhook,
//! the webhook refuses what it must, `status` and `/health` tell healthy, recovering and
//! escalated units apart, and systemd's notify socket hears READY=1 and watchdog pings.
//!
//! Needs root (like every agent test), Debian's `prometheus` and `prometheus-alertmanager`
//! (`cargo xtask setup` installs them), and the agent and workload binaries.

#[path = "operator/alerting.rs"]
mod alerting;
#[path = "operator/dashboard.rs"]
mod dashboard;
#[path = "operator/health.rs"]
mod health;
#[path = "operator/http.rs"]
mod http;
#[path = "operator/live.rs"]
mod live;
#[path = "operator/metrics.rs"]
mod metrics;
#[path = "operator/servers.rs"]
mod servers;
#[path = "operator/watchdog.rs"]
mod watchdog;
#[path = "operator/webhook.rs"]
mod webhook;

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use selfheal_tests::{
    Sandbox,
    agent::{
        Agent, WAIT, kill_main, restart_done, wait_for_record, wait_for_record_within,
        wait_watching, workload,
    },
};
use serde_json::{Value, json};

/// The token the agent's webhook expects in these tests.
const TOKEN: &str = "e2e-operator-token";

/// Writes [`TOKEN`] into the sandbox with mode 0600 (the agent refuses a token others may
/// read) and returns its path.
fn token_file(sandbox: &Sandbox) -> anyhow::Result<PathBuf> {
    let path = sandbox.runtime_dir().join("webhook.token");
    std::fs::write(&path, format!("{TOKEN}\n")).context("writing the webhook token")?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

/// Where the agent serves /metrics, /health and the webhook (status `agent.http`).
fn http_address(agent: &Agent) -> anyhow::Result<String> {
    let status = agent.status()?;
    status["agent"]["http"]
        .as_str()
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("no agent.http in the status: {status:#}"))
}

/// `selfheal-agent status --json` from the agent at `socket`, once it answers.
fn wait_until_status(sandbox: &Sandbox, socket: &str, timeout: Duration) -> anyhow::Result<Value> {
    let mut status = None;
    Sandbox::wait_until(&format!("the agent to answer on {socket}"), timeout, || {
        let out = std::process::Command::new(selfheal_tests::agent::agent_bin())
            .args(["status", "--json", "--socket", socket])
            .envs(sandbox.env())
            .output()?;
        if out.status.success() {
            status = Some(serde_json::from_slice(&out.stdout)?);
        }
        Ok(status.is_some())
    })?;
    Ok(status.expect("a status"))
}

/// One alert as Alertmanager's webhook (payload version "4") carries it.
fn alert(status: &str, name: &str, unit: &str, kind: &str, fingerprint: &str) -> Value {
    json!({
        "status": status,
        "labels": { "alertname": name, "unit": unit, "kind": kind, "severity": "critical" },
        "annotations": { "summary": format!("{name} on {unit}") },
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": fingerprint,
    })
}

/// A whole webhook body around `alerts`, as Alertmanager posts it.
fn payload(alerts: Vec<Value>) -> String {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"test\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "selfheal",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": alerts,
    })
    .to_string()
}
