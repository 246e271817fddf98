//! Issue 2's loop end to end: a process of a monitored unit exits → the kernel probe reports
//! it → the agent restarts the unit through systemd's D-Bus API → the unit is active again.
//! Every test runs a real `systemd --user` (the sandbox), the real agent and real workloads.

use selfheal_tests::agent::{WAIT, restart_done, wait_for_record, wait_watching, workload};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};
use serde_json::Value;

fn unit_config(name: &str, restart: &str) -> String {
    format!("[[unit]]\nname = \"{name}\"\nrestart = \"{restart}\"\n")
}

#[test]
fn sigkill_of_the_main_process_restarts_the_unit_and_names_the_signal_and_pid() -> anyhow::Result<()>
{
    require_root!();
    let sandbox = Sandbox::start("sigkill")?;
    sandbox.install_unit(
        "victim.service",
        &service_unit("victim", &workload("sleep"), &[]),
    )?;
    sandbox.systemctl(&["start", "victim.service"])?;
    let agent = Agent::start(&sandbox, &unit_config("victim.service", "on-failure"), &[])?;
    wait_watching(&agent, "victim.service")?;

    let pid = sandbox.main_pid("victim.service")?;
    // SAFETY: kill(2) on the unit's main process, which this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);

    let exit = wait_for_record(&agent, "victim.service", "exit", "the exit record", |r| {
        r["pid"] == pid
    })?;
    assert_eq!(exit["role"], "main", "{exit:#}");
    assert_eq!(exit["signal"], libc::SIGKILL, "{exit:#}");
    assert_eq!(exit["signal_name"], "SIGKILL", "{exit:#}");
    assert_eq!(exit["oom_killed"], false, "{exit:#}");
    wait_for_record(
        &agent,
        "victim.service",
        "action",
        "the restart",
        restart_done,
    )?;
    assert_eq!(sandbox.property("victim.service", "ActiveState")?, "active");
    let new_pid = sandbox.main_pid("victim.service")?;
    assert!(
        new_pid != 0 && new_pid != pid,
        "main pid {new_pid} after the restart"
    );

    // The operator's view shows the same story.
    let text = agent.cli(&["status", "--socket", &agent.socket().to_string_lossy()])?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("victim.service: active (running)"), "{text}");
    assert!(
        text.contains(&format!("main process {pid}")) && text.contains("SIGKILL"),
        "{text}"
    );
    assert!(text.contains("restart done"), "{text}");
    assert!(text.contains("restarts 1"), "{text}");
    Ok(())
}

#[test]
fn exit_status_3_is_restarted_under_on_failure_but_status_0_is_not() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("exitcodes")?;
    sandbox.install_unit(
        "fails.service",
        &service_unit("fails", &workload("exit 3 1000"), &[]),
    )?;
    sandbox.install_unit(
        "clean.service",
        &service_unit("clean", &workload("exit 0 300"), &[]),
    )?;
    let config =
        unit_config("fails.service", "on-failure") + &unit_config("clean.service", "on-failure");
    let agent = Agent::start(&sandbox, &config, &[])?;
    // Started after the agent: the kernel adopts the units' cgroups as systemd creates them.
    sandbox.systemctl(&["start", "fails.service", "clean.service"])?;

    let exit = wait_for_record(
        &agent,
        "fails.service",
        "exit",
        "fails.service's exit",
        |r| r["role"] == "main",
    )?;
    assert_eq!(exit["status"], 3, "{exit:#}");
    assert_eq!(exit["signal"], Value::Null, "{exit:#}");
    let decision = wait_for_record(
        &agent,
        "fails.service",
        "decision",
        "a restart decision on fails.service",
        |r| r["action"] == "restart",
    )?;
    assert_eq!(decision["problem"], "crash", "{decision:#}");
    wait_for_record(
        &agent,
        "fails.service",
        "action",
        "fails.service's restart",
        restart_done,
    )?;

    let exit = wait_for_record(
        &agent,
        "clean.service",
        "exit",
        "clean.service's exit",
        |r| r["role"] == "main",
    )?;
    assert_eq!(exit["status"], 0, "{exit:#}");
    let decision = wait_for_record(
        &agent,
        "clean.service",
        "decision",
        "a decision on clean.service",
        |_| true,
    )?;
    assert_eq!(decision["problem"], "exit", "{decision:#}");
    assert_eq!(decision["action"], "none", "{decision:#}");
    assert!(
        decision["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("on-failure"),
        "{decision:#}"
    );
    assert!(agent.records("clean.service", "action")?.is_empty());
    assert_eq!(
        sandbox.property("clean.service", "ActiveState")?,
        "inactive"
    );
    Ok(())
}

#[test]
fn an_exit_in_an_unmonitored_unit_leaves_no_trace_in_the_kernel() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("unmonitored")?;
    sandbox.install_unit(
        "watched.service",
        &service_unit("watched", &workload("sleep"), &[]),
    )?;
    sandbox.install_unit(
        "other.service",
        &service_unit("other", &workload("exit 7 100"), &[]),
    )?;
    sandbox.systemctl(&["start", "watched.service"])?;
    let agent = Agent::start(&sandbox, &unit_config("watched.service", "never"), &[])?;
    wait_watching(&agent, "watched.service")?;
    let counters = ["thread_exits", "process_exits", "events_submitted"];
    let before: Vec<u64> = counters
        .iter()
        .map(|c| agent.counter(c))
        .collect::<anyhow::Result<_>>()?;

    sandbox.systemctl(&["start", "other.service"])?;
    Sandbox::wait_until("other.service to fail", WAIT, || {
        Ok(sandbox.property("other.service", "ActiveState")? == "failed")
    })?;
    let after: Vec<u64> = counters
        .iter()
        .map(|c| agent.counter(c))
        .collect::<anyhow::Result<_>>()?;
    assert_eq!(
        before, after,
        "kernel counters {counters:?} moved for an unmonitored exit"
    );
    assert!(
        agent.records("other.service", "exit").is_err(),
        "other.service is not monitored"
    );

    // The same counters do move for the monitored unit: the check above could fail.
    sandbox.systemctl(&["kill", "--signal=SIGKILL", "watched.service"])?;
    wait_for_record(
        &agent,
        "watched.service",
        "exit",
        "watched.service's exit",
        |_| true,
    )?;
    let moved: Vec<u64> = counters
        .iter()
        .map(|c| agent.counter(c))
        .collect::<anyhow::Result<_>>()?;
    assert!(
        moved.iter().zip(&after).all(|(m, a)| m > a),
        "{counters:?}: {after:?} → {moved:?}"
    );
    Ok(())
}

#[test]
fn a_child_process_exiting_is_reported_as_a_child_and_does_not_restart_the_unit()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("child")?;
    sandbox.install_unit(
        "parent.service",
        &service_unit("parent", &workload("child-exit 5 500"), &[]),
    )?;
    let agent = Agent::start(&sandbox, &unit_config("parent.service", "always"), &[])?;
    sandbox.systemctl(&["start", "parent.service"])?;
    let main_pid = sandbox.main_pid("parent.service")?;

    let exit = wait_for_record(&agent, "parent.service", "exit", "the child's exit", |_| {
        true
    })?;
    assert_eq!(exit["role"], "child", "{exit:#}");
    assert_eq!(exit["status"], 5, "{exit:#}");
    assert_ne!(exit["pid"], main_pid, "{exit:#}");
    assert!(
        agent.records("parent.service", "decision")?.is_empty(),
        "a child exit raised a problem"
    );
    assert_eq!(sandbox.property("parent.service", "ActiveState")?, "active");
    assert_eq!(
        sandbox.main_pid("parent.service")?,
        main_pid,
        "the unit was restarted"
    );
    Ok(())
}

#[test]
fn an_oom_killed_process_is_reported_as_oom_killed() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("oom")?;
    let memcg = format!("selfheal-oom-{}", std::process::id());
    sandbox.install_unit(
        "hog.service",
        &service_unit(
            "hog",
            &workload(&format!("oom {memcg}")),
            &["MemoryMax=64M"],
        ),
    )?;
    let agent = Agent::start(&sandbox, &unit_config("hog.service", "never"), &[])?;
    sandbox.systemctl(&["start", "hog.service"])?;

    let exit = wait_for_record(&agent, "hog.service", "exit", "the OOM kill", |r| {
        r["role"] == "main"
    });
    let _ = selfheal_tests::cgroupfs::remove_v1_memory_cgroup(&memcg);
    let exit = exit?;
    assert_eq!(exit["oom_killed"], true, "{exit:#}");
    assert_eq!(exit["signal_name"], "SIGKILL", "{exit:#}");
    let decision = wait_for_record(&agent, "hog.service", "decision", "a decision", |_| true)?;
    assert_eq!(decision["problem"], "crash", "{decision:#}");
    Ok(())
}

#[test]
fn a_unit_that_does_not_exist_yet_is_watched_and_healed_once_created() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("late")?;
    let agent = Agent::start(&sandbox, &unit_config("late.service", "on-failure"), &[])?;
    let unit = agent.unit("late.service")?;
    assert_eq!(unit["exists"], false, "{unit:#}");
    let warning = wait_for_record(
        &agent,
        "late.service",
        "unit",
        "the missing-unit warning",
        |_| true,
    )?;
    assert!(
        warning["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not exist"),
        "{warning:#}"
    );

    sandbox.install_unit(
        "late.service",
        &service_unit("late", &workload("exit 3 1000"), &[]),
    )?;
    sandbox.systemctl(&["start", "late.service"])?;
    wait_for_record(
        &agent,
        "late.service",
        "action",
        "the restart of the late unit",
        restart_done,
    )?;
    assert_eq!(agent.unit("late.service")?["exists"], true);
    Ok(())
}

#[test]
fn a_failed_restart_is_reported_with_systemds_reason() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("startlimit")?;
    // systemd allows one start per minute: the agent's restart hits the start limit.
    let extra = ["StartLimitIntervalSec=60", "StartLimitBurst=1"];
    sandbox.install_unit(
        "limited.service",
        &service_unit("limited", &workload("exit 3 500"), &extra),
    )?;
    let agent = Agent::start(&sandbox, &unit_config("limited.service", "on-failure"), &[])?;
    sandbox.systemctl(&["start", "limited.service"])?;

    let action = wait_for_record(
        &agent,
        "limited.service",
        "action",
        "the failed restart",
        |r| r["action"] == "restart",
    )?;
    assert_eq!(action["outcome"], "failed", "{action:#}");
    let detail = action["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("start-limit-hit"), "{action:#}");
    assert_eq!(agent.unit("limited.service")?["restarts"], 0);
    Ok(())
}
