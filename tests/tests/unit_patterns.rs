//! Issue 14 item 6 end to end: a `[[unit]]` pattern adopts the services systemd has and the
//! ones it starts later, each watched and healed as a unit of its own, listed under its
//! pattern, with its own saved state across an agent restart. A real `systemd --user`, the
//! real agent and real workloads.

use anyhow::Context as _;
use selfheal_tests::agent::{
    WAIT, audit_lines, cli, history_and_log, kill_main, policy, restart_done, text,
    wait_for_policy, wait_for_record, wait_watching, workload,
};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};
use serde_json::Value;

const WORK: &str = "[[unit]]\nname = \"work@*.service\"\nrestart = \"on-failure\"\n";

/// A template whose instances sleep until killed.
fn install_template(sandbox: &Sandbox) -> anyhow::Result<()> {
    sandbox.install_unit(
        "work@.service",
        &service_unit("work %i", &workload("sleep"), &[]),
    )
}

/// The status entries of the units the agent monitors, by name.
fn monitored(agent: &Agent) -> anyhow::Result<Vec<(String, Value)>> {
    let status = agent.status()?;
    let units = status["units"]
        .as_array()
        .with_context(|| format!("no units in {status:#}"))?;
    Ok(units
        .iter()
        .map(|u| (text(u, "name").to_owned(), u.clone()))
        .collect())
}

fn names(agent: &Agent) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = monitored(agent)?.into_iter().map(|(n, _)| n).collect();
    names.sort();
    Ok(names)
}

#[test]
fn a_template_pattern_adopts_instances_before_and_after_the_agent_and_heals_only_the_killed_one()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("pattern-template")?;
    install_template(&sandbox)?;
    sandbox.systemctl(&["start", "work@a.service", "work@b.service"])?;
    let agent = Agent::start(&sandbox, WORK, &[])?;
    wait_watching(&agent, "work@a.service")?;
    wait_watching(&agent, "work@b.service")?;

    // Started after the agent: adopted as systemd announces it.
    sandbox.systemctl(&["start", "work@c.service"])?;
    wait_watching(&agent, "work@c.service")?;
    assert_eq!(
        names(&agent)?,
        ["work@a.service", "work@b.service", "work@c.service"]
    );
    for (name, unit) in monitored(&agent)? {
        assert_eq!(unit["pattern"], "work@*.service", "{name}: {unit:#}");
        assert_eq!(unit["restart"], "on-failure", "{name}: {unit:#}");
    }
    let tree = cli(&agent, &["status"])?;
    assert!(
        tree.contains("└── pattern work@*.service: 3 instances"),
        "{tree}"
    );
    for instance in ["├── work@a.service: active", "├── work@b.service: active"] {
        assert!(tree.contains(&format!("    {instance}")), "{tree}");
    }
    assert!(tree.contains("    └── work@c.service: active"), "{tree}");

    let killed = kill_main(&sandbox, "work@b.service", libc::SIGKILL)?;
    wait_for_record(
        &agent,
        "work@b.service",
        "action",
        "the restart of work@b",
        restart_done,
    )
    .with_context(|| history_and_log(&agent, "work@b.service"))?;
    let new_pid = sandbox.main_pid("work@b.service")?;
    assert!(new_pid != killed, "main pid {new_pid} after the restart");
    assert_eq!(policy(&agent, "work@b.service")?["restarts_left"], 2);

    // Only the killed instance was acted on: in status and in the audit log.
    for other in ["work@a.service", "work@c.service"] {
        assert!(
            agent.records(other, "action")?.is_empty(),
            "{other} acted on"
        );
        assert_eq!(policy(&agent, other)?["restarts_left"], 3, "{other}");
    }
    let restarts: Vec<String> = audit_lines(&sandbox)?
        .iter()
        .filter(|l| l["event"] == "action" && text(l, "action").starts_with("restart"))
        .map(|l| text(l, "unit").to_owned())
        .collect();
    assert_eq!(restarts, ["work@b.service"]);
    Ok(())
}

#[test]
fn a_slice_pattern_adopts_the_services_in_the_slice_and_below_it_and_no_others()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("pattern-slice")?;
    let in_slice = |slice: &str| format!("Slice={slice}");
    for (name, slice) in [
        ("engine.service", Some("trading.slice")),
        ("hft.service", Some("trading-hft.slice")),
        ("late.service", Some("trading.slice")),
        ("outside.service", None),
    ] {
        let lines: Vec<String> = slice.map(in_slice).into_iter().collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        sandbox.install_unit(name, &service_unit(name, &workload("sleep"), &lines))?;
    }
    sandbox.systemctl(&["start", "engine.service", "hft.service", "outside.service"])?;
    let agent = Agent::start(
        &sandbox,
        "[[unit]]\nname = \"trading.slice\"\nrestart = \"always\"\n",
        &[],
    )?;
    wait_watching(&agent, "engine.service")?;
    wait_watching(&agent, "hft.service")?;
    sandbox.systemctl(&["start", "late.service"])?;
    wait_watching(&agent, "late.service")?;

    assert_eq!(
        names(&agent)?,
        ["engine.service", "hft.service", "late.service"],
        "outside.service is in no slice of the pattern"
    );
    for (name, unit) in monitored(&agent)? {
        assert_eq!(unit["pattern"], "trading.slice", "{name}: {unit:#}");
    }
    // The slice itself is not adopted: only services are.
    assert_eq!(
        sandbox.property("outside.service", "ActiveState")?,
        "active"
    );
    Ok(())
}

#[test]
fn an_agent_restart_gives_each_instance_its_own_saved_budget_back() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("pattern-state")?;
    install_template(&sandbox)?;
    sandbox.systemctl(&["start", "work@a.service", "work@b.service"])?;
    let first = Agent::start(&sandbox, WORK, &[])?;
    wait_watching(&first, "work@a.service")?;
    wait_watching(&first, "work@b.service")?;
    kill_main(&sandbox, "work@a.service", libc::SIGKILL)?;
    wait_for_record(
        &first,
        "work@a.service",
        "action",
        "the restart of work@a",
        restart_done,
    )?;
    wait_for_policy(&first, "work@a.service", "work@a's budget used", |p| {
        p["restarts_left"] == 2
    })?;
    // SIGTERM: the agent saves its state as it stops.
    drop(first);

    let second = Agent::start(&sandbox, WORK, &[])?;
    wait_watching(&second, "work@a.service")?;
    wait_watching(&second, "work@b.service")?;
    wait_for_policy(&second, "work@a.service", "work@a's restored budget", |p| {
        p["restarts_left"] == 2
    })?;
    assert_eq!(policy(&second, "work@b.service")?["restarts_left"], 3);
    assert!(
        second.log_text().contains("adopted by the pattern"),
        "{}",
        second.log_text()
    );
    // The restored budget is the one the next kill spends.
    kill_main(&sandbox, "work@a.service", libc::SIGKILL)?;
    wait_for_policy(&second, "work@a.service", "work@a's second restart", |p| {
        p["restarts_left"] == 1
    })?;
    Ok(())
}

#[test]
fn a_stopped_instance_stays_monitored_and_one_whose_unit_file_is_gone_is_let_go()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("pattern-gone")?;
    install_template(&sandbox)?;
    sandbox.systemctl(&["start", "work@a.service", "work@b.service"])?;
    let agent = Agent::start(&sandbox, WORK, &[])?;
    wait_watching(&agent, "work@a.service")?;
    wait_watching(&agent, "work@b.service")?;

    // Stopped by an operator: systemd unloads the instance, the agent keeps it.
    sandbox.systemctl(&["stop", "work@a.service"])?;
    Sandbox::wait_until("work@a to stop", WAIT, || {
        Ok(sandbox.property("work@a.service", "ActiveState")? == "inactive")
    })?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(names(&agent)?, ["work@a.service", "work@b.service"]);

    // The template's file removed: once systemd unloads an instance, it is let go.
    std::fs::remove_file(sandbox.unit_dir().join("work@.service"))?;
    sandbox.systemctl(&["daemon-reload"])?;
    sandbox.systemctl(&["stop", "work@b.service"])?;
    Sandbox::wait_until("work@b to be let go", WAIT, || {
        Ok(!names(&agent)?.contains(&"work@b.service".to_owned()))
    })
    .with_context(|| history_and_log(&agent, "work@b.service"))?;
    assert!(
        agent
            .log_text()
            .contains("work@b.service: no longer monitored: its unit file is gone"),
        "{}",
        agent.log_text()
    );
    Ok(())
}
