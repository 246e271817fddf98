//! The live `/metrics` of a running agent: valid for Prometheus's own checker, with the seed's
//! names, and counting what the agent really did.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::Context as _;
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};

use super::{
    WAIT, http, http_address, kill_main, restart_done, wait_for_record, wait_watching, workload,
};

/// `promtool check metrics` on `text`: its findings (lint problems), or an error when it fails.
fn promtool_findings(text: &str) -> anyhow::Result<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool: install Debian's `prometheus` (or `cargo xtask setup`)")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success(),
        "promtool check metrics failed: {findings}"
    );
    Ok(findings.trim().to_owned())
}

fn scrape(address: &str) -> anyhow::Result<String> {
    let response = http::get(address, "/metrics")?;
    anyhow::ensure!(response.status == 200, "GET /metrics: {response:?}");
    Ok(response.body)
}

#[test]
fn live_metrics_pass_promtool_and_count_a_crash_and_its_verified_restart() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("op-metrics")?;
    sandbox.install_unit(
        "victim.service",
        &service_unit("victim", &workload("sleep"), &[]),
    )?;
    sandbox.systemctl(&["start", "victim.service"])?;
    // A short cooldown: the restart is verified (and its recovery timed) within the test.
    let config = "[policy]\ncooldown = \"2s\"\n\n\
                  [[unit]]\nname = \"victim.service\"\nrestart = \"on-failure\"\n";
    let agent = Agent::start(&sandbox, config, &[])?;
    wait_watching(&agent, "victim.service")?;
    let address = http_address(&agent)?;
    let unit = [("unit", "victim.service")];

    let response = http::get(&address, "/metrics")?;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4"),
        "{response:?}"
    );
    let text = response.body;
    assert_eq!(promtool_findings(&text)?, "", "in:\n{text}");
    // The seed's names, there from the start so rates and alerts see the unit at once.
    assert_eq!(
        http::sample(&text, "selfhealing_restarts_total", &unit),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        http::sample(&text, "selfhealing_consecutive_failures", &unit),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        http::sample(
            &text,
            "selfheal_kernel_hook_attached",
            &[("hook", "sched_process_exit")]
        ),
        Some(1.0),
        "{text}"
    );
    Sandbox::wait_until("victim.service to be reported healthy", WAIT, || {
        Ok(http::sample(&scrape(&address)?, "selfheal_unit_healthy", &unit) == Some(1.0))
    })?;

    let before_kill = std::time::Instant::now();
    let pid = kill_main(&sandbox, "victim.service", libc::SIGKILL)?;
    wait_for_record(
        &agent,
        "victim.service",
        "action",
        "the restart",
        restart_done,
    )?;
    // Verified once the unit stayed up for the cooldown: the incident is over.
    wait_for_record(
        &agent,
        "victim.service",
        "decision",
        "the verification",
        |r| r["problem"] == "verified",
    )?;
    let mut text = String::new();
    Sandbox::wait_until("the recovery to be timed in /metrics", WAIT, || {
        text = scrape(&address)?;
        Ok(http::sample(&text, "selfheal_recovery_duration_seconds_count", &unit) == Some(1.0))
    })
    .with_context(|| format!("last /metrics:\n{text}"))?;

    assert_eq!(
        http::sample(&text, "selfhealing_restarts_total", &unit),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        http::sample(&text, "selfhealing_consecutive_failures", &unit),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        http::sample(
            &text,
            "selfheal_problems_total",
            &[unit[0], ("kind", "crash")]
        ),
        Some(1.0),
        "{text}"
    );
    let restarts_done = [unit[0], ("action", "restart"), ("outcome", "done")];
    assert_eq!(
        http::sample(&text, "selfheal_actions_total", &restarts_done),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        http::sample(&text, "selfheal_unit_healthy", &unit),
        Some(1.0),
        "{text}"
    );
    // From the kill to the verdict: at least the cooldown (the verdict waits for it), and no
    // longer than the test has seen pass since the kill. How long it takes on this machine is
    // the bench's figure (crash → restart), not asserted here.
    let took = http::sample(&text, "selfheal_recovery_duration_seconds_sum", &unit)
        .context("no recovery duration sum")?;
    let since_kill = before_kill.elapsed().as_secs_f64();
    assert!(
        (2.0..=since_kill).contains(&took),
        "recovery took {took} s, {since_kill} s after the kill:\n{text}"
    );
    let exits = http::sample(
        &text,
        "selfheal_kernel_events_total",
        &[("event", "process_exits")],
    )
    .context("no process_exits counter")?;
    assert!(
        exits >= 1.0,
        "the kernel's exit of {pid} is not counted:\n{text}"
    );
    // With every family now holding samples, the exposition is still clean.
    assert_eq!(promtool_findings(&text)?, "", "in:\n{text}");

    // The operator's text view agrees with the counters.
    let status = agent.cli(&["status", "--socket", &agent.socket().to_string_lossy()])?;
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("victim.service: active (running)"),
        "{status}"
    );
    assert!(status.contains("restarts 1"), "{status}");
    Ok(())
}
