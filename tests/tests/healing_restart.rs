//! Issue 14 end to end, restarts of real faults: the first restart of a crash is immediate, a
//! stopped unit is restarted without waiting for its stop timeout (and the audit record says
//! which signals did it), and systemd's `SuccessExitStatus=` / `RestartPreventExitStatus=` are
//! honoured for `restart = "on-failure"`. A real `systemd --user` and the real agent.

use std::time::Duration;

use selfheal_tests::agent::{
    WAIT, audit_lines, history_and_log, kill_main, records_where, restart_done, text,
    wait_for_record, wait_loaded, workload,
};
use selfheal_tests::{Sandbox, agent::Agent, service_unit};

#[test]
fn a_sigkilled_unit_is_restarted_at_once_without_a_backoff() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("immediate")?;
    let unit = "killed.service";
    sandbox.install_unit(unit, &service_unit(unit, &workload("sleep"), &[]))?;
    // The shipped backoff (1 s × 2): only the first attempt is immediate.
    let agent = Agent::start(&sandbox, &format!("[[unit]]\nname = \"{unit}\"\n"), &[])?;
    wait_loaded(&agent, unit)?;
    sandbox.systemctl(&["start", unit])?;
    Sandbox::wait_until("the unit to run", WAIT, || {
        Ok(sandbox.main_pid(unit).unwrap_or(0) != 0)
    })?;

    let old = kill_main(&sandbox, unit, libc::SIGKILL)?;
    wait_for_record(&agent, unit, "action", "the restart", restart_done)?;
    let decisions = records_where(&agent, unit, "decision", |d| d["problem"] == "crash")?;
    let [decision] = decisions.as_slice() else {
        panic!("one crash decision: {decisions:#?}");
    };
    // Decided and handed out in one step: no "none" decision scheduling it for later.
    assert_eq!(decision["action"], "restart", "{decision:#}");
    assert!(
        text(decision, "reason").contains("restart attempt 1 of 3 now"),
        "{decision:#}\n{}",
        history_and_log(&agent, unit)
    );
    assert_eq!(sandbox.property(unit, "ActiveState")?, "active");
    assert_ne!(sandbox.main_pid(unit)?, old, "a new main process runs");
    Ok(())
}

/// Like nginx's `ExecStop=` (start-stop-daemon --retry): signal the main process, then wait
/// for it to go. A stopped process keeps the signal pending, so systemd would wait for
/// `TimeoutStopSec=` — set far beyond the test's patience.
const WAITING_STOP: &[&str] = &[
    "ExecStop=/bin/sh -c 'kill -TERM $MAINPID; while kill -0 $MAINPID 2>/dev/null; do sleep 0.1; done'",
    "TimeoutStopSec=10min",
];

#[test]
fn a_stopped_unit_is_restarted_without_waiting_for_its_stop_timeout_and_the_audit_says_how()
-> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("promptstop")?;
    let unit = "paused.service";
    sandbox.install_unit(unit, &service_unit(unit, &workload("sleep"), WAITING_STOP))?;
    let config = format!("[[unit]]\nname = \"{unit}\"\n\n[unit.stall]\nthreshold = \"3s\"\n");
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_loaded(&agent, unit)?;
    sandbox.systemctl(&["start", unit])?;
    Sandbox::wait_until("the agent to sample the unit", WAIT, || {
        Ok(agent.unit(unit)?["view"]["sched"]["tasks"].as_u64() > Some(0))
    })?;

    let old = kill_main(&sandbox, unit, libc::SIGSTOP)?;
    // WAIT (30 s) is far below the 10 min stop timeout: only a prompt stop gets here.
    let action = wait_for_record(&agent, unit, "action", "the restart", |r| {
        r["action"] == "restart" && r["outcome"] != "skipped"
    })
    .map_err(|e| e.context(history_and_log(&agent, unit)))?;
    assert_eq!(action["outcome"], "done", "{action:#}");
    assert_eq!(sandbox.property(unit, "ActiveState")?, "active");
    assert_ne!(sandbox.main_pid(unit)?, old, "a new main process runs");

    let audit = audit_lines(&sandbox)?;
    let restart = audit
        .iter()
        .find(|l| l["unit"] == unit && l["action"] == "restart")
        .ok_or_else(|| anyhow::anyhow!("no restart in the audit log: {audit:#?}"))?;
    let detail = text(restart, "detail");
    for expected in [
        "sent SIGCONT to all its processes through systemd (KillUnit)",
        &format!("SIGKILL to the old main process {old}"),
        "main process was stopped",
    ] {
        assert!(detail.contains(expected), "{expected:?} in {restart:#}");
    }
    Ok(())
}

#[test]
fn exits_the_unit_declares_successful_or_not_to_restart_are_left_alone_under_on_failure()
-> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("exitstatus")?;
    let units = [
        ("declared.service", "exit 75 300", "SuccessExitStatus=75"),
        (
            "prevented.service",
            "exit 3 300",
            "RestartPreventExitStatus=3",
        ),
        // The control: the same kind of exit without a setting is a crash and is restarted.
        ("plain.service", "exit 4 300", "SuccessExitStatus=75"),
    ];
    let mut config = String::new();
    for (unit, args, line) in units {
        sandbox.install_unit(unit, &service_unit(unit, &workload(args), &[line]))?;
        config.push_str(&format!(
            "[[unit]]\nname = \"{unit}\"\nrestart = \"on-failure\"\n\n"
        ));
    }
    let agent = Agent::start(&sandbox, &config, &[])?;
    for (unit, ..) in units {
        wait_loaded(&agent, unit)?;
    }
    sandbox.systemctl(&[
        "start",
        "declared.service",
        "prevented.service",
        "plain.service",
    ])?;

    wait_for_record(
        &agent,
        "plain.service",
        "action",
        "the control's restart",
        restart_done,
    )?;
    for (unit, setting) in [
        ("declared.service", "SuccessExitStatus="),
        ("prevented.service", "RestartPreventExitStatus="),
    ] {
        let decision = wait_for_record(&agent, unit, "decision", "the exit decision", |d| {
            d["problem"] == "exit"
        })?;
        assert_eq!(decision["action"], "none", "{decision:#}");
        assert!(
            text(&decision, "evidence").contains(setting),
            "{decision:#}"
        );
        assert!(
            text(&decision, "reason").contains("on-failure"),
            "{decision:#}"
        );
    }
    // The control was restarted long ago; give the others as long again to be acted on.
    std::thread::sleep(Duration::from_secs(2));
    for unit in ["declared.service", "prevented.service"] {
        let actions = agent.records(unit, "action")?;
        assert!(actions.is_empty(), "{unit}: {actions:#?}");
        assert_ne!(sandbox.property(unit, "ActiveState")?, "active");
    }
    Ok(())
}
