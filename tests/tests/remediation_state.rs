//! Issue 5 end to end, state beyond one unit and one agent: budgets, backoff and circuits
//! survive the agent being SIGKILLed, and the storm breaker holds when many units fail at once.

use anyhow::Context as _;
use selfheal_tests::agent::{
    WAIT, agent_pid, cli, history_and_log, policy, records_where, restart_done, text,
    wait_for_policy, wait_for_record, wait_loaded, wait_watching, workload,
};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};
use serde_json::Value;

/// loop.service crashes for ever: its second attempt waits 20 s (× 20), long enough to kill the
/// agent in between. gate.service falls back at its first crash, and its circuit stays open
/// for 10 minutes.
const PERSIST: &str = r#"
[policy]
cooldown = "1m"
escalate_after = 5

[policy.budget]
max_restarts = 3
window = "1h"

[policy.backoff]
initial = "1s"
multiplier = 20.0
max = "1m"
max_attempts = 5
# This test times the backoff before every attempt, the first included.
immediate_first = false

[policy.breaker]
open_for = "10m"

[[unit]]
name = "loop.service"

[[unit]]
name = "gate.service"

[unit.remediation]
crash = ["fallback"]
fallback = "gate-fallback.service"
"#;

#[test]
fn budgets_backoff_and_circuits_survive_the_agent_being_killed_mid_backoff() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("persist")?;
    sandbox.install_unit(
        "loop.service",
        &service_unit("loop", &workload("exit 3 300"), &[]),
    )?;
    sandbox.install_unit(
        "gate.service",
        &service_unit("gate", &workload("exit 3 300"), &[]),
    )?;
    sandbox.install_unit(
        "gate-fallback.service",
        &service_unit("gate fallback", &workload("sleep"), &[]),
    )?;
    let first = Agent::start(&sandbox, PERSIST, &[])?;
    wait_loaded(&first, "loop.service")?;
    wait_loaded(&first, "gate.service")?;
    sandbox.systemctl(&["start", "loop.service", "gate.service"])?;

    wait_for_record(&first, "gate.service", "action", "the fallback", |a| {
        a["action"] == "start_fallback gate-fallback.service" && a["outcome"] == "done"
    })?;
    wait_for_record(
        &first,
        "loop.service",
        "action",
        "the first restart",
        restart_done,
    )?;
    wait_for_record(
        &first,
        "loop.service",
        "decision",
        "the second attempt scheduled",
        |d| d["action"] == "none" && text(d, "reason").contains("restart attempt 2 of 5"),
    )?;
    // The decision is saved before the agent goes on: wait for the file to say so.
    let state_file = sandbox.runtime_dir().join("state/policy.json");
    Sandbox::wait_until("policy.json to hold the scheduled restart", WAIT, || {
        let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state_file)?)?;
        let units = &saved["units"];
        Ok(
            units["loop.service"]["incident"]["phase"]["phase"] == "scheduled"
                && units["gate.service"]["circuit"]["state"] == "open",
        )
    })?;
    let pid = agent_pid(&first)?;
    // SAFETY: kill(2) on the agent this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    Sandbox::wait_until("the killed agent to stop answering", WAIT, || {
        Ok(first.status().is_err())
    })?;

    let second = Agent::start(&sandbox, PERSIST, &[])?;
    let loop_view = wait_for_policy(&second, "loop.service", "the restored incident", |p| {
        p["incident"] == "crash"
    })?;
    assert_eq!(loop_view["restarts_left"], 2, "{loop_view:#}");
    assert_eq!(loop_view["next_action"], "restart", "{loop_view:#}");
    let gate_view = wait_for_policy(&second, "gate.service", "a policy view", |_| true)?;
    assert_eq!(gate_view["circuit"], "open", "{gate_view:#}");
    assert_eq!(gate_view["fallback_running"], true, "{gate_view:#}");
    let explained = cli(&second, &["explain", "gate.service"])?;
    assert!(
        explained.contains("circuit open since")
            && explained.contains("fallback gate-fallback.service running"),
        "{explained}"
    );

    // The restart the first agent scheduled runs, as its second attempt: the backoff, the
    // attempt count and the budget went on where they were.
    let due = wait_for_record(
        &second,
        "loop.service",
        "decision",
        "the scheduled restart",
        |d| d["action"] == "restart",
    )?;
    assert!(
        text(&due, "reason").contains("restart attempt 2 of 5"),
        "{due:#}"
    );
    wait_for_record(
        &second,
        "loop.service",
        "action",
        "the second restart",
        restart_done,
    )?;
    wait_for_policy(&second, "loop.service", "1 restart left", |p| {
        p["restarts_left"] == 1
    })?;
    // The circuit is still open: no trial restart of gate.service, and its fallback serves.
    assert!(
        records_where(&second, "gate.service", "action", |a| a["action"]
            == "restart")?
        .is_empty(),
        "{}",
        history_and_log(&second, "gate.service")
    );
    assert_eq!(policy(&second, "gate.service")?["circuit"], "open");
    assert_eq!(
        sandbox.property("gate-fallback.service", "ActiveState")?,
        "active"
    );
    Ok(())
}

const STORM_UNITS: [&str; 4] = [
    "storm-1.service",
    "storm-2.service",
    "storm-3.service",
    "storm-4.service",
];

#[test]
fn the_storm_breaker_holds_new_incidents_when_many_units_fail_at_once() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("storm")?;
    let mut config = String::from(
        "[policy]\ncooldown = \"3s\"\n\n[policy.backoff]\ninitial = \"2s\"\n\n\
         [policy.storm]\nmax_units = 2\ncalm_period = \"3s\"\n\n",
    );
    for unit in STORM_UNITS {
        sandbox.install_unit(unit, &service_unit(unit, &workload("sleep"), &[]))?;
        config.push_str(&format!("[[unit]]\nname = \"{unit}\"\n\n"));
    }
    let mut start = vec!["start"];
    start.extend(STORM_UNITS);
    sandbox.systemctl(&start)?;
    let agent = Agent::start(&sandbox, &config, &[])?;
    for unit in STORM_UNITS {
        wait_watching(&agent, unit)?;
    }

    let mut kill = vec!["kill", "--signal=SIGKILL"];
    kill.extend(STORM_UNITS);
    sandbox.systemctl(&kill)?;
    let mut first_decisions = Vec::new();
    for unit in STORM_UNITS {
        let decision = wait_for_record(&agent, unit, "decision", "the crash decision", |d| {
            d["problem"] == "crash"
        })?;
        first_decisions.push((unit, decision));
    }
    let (held, admitted): (Vec<_>, Vec<_>) = first_decisions
        .iter()
        .partition(|(_, d)| text(d, "reason").contains("storm breaker tripped"));
    assert_eq!(
        (admitted.len(), held.len()),
        (2, 2),
        "two units are remediated, two held: {first_decisions:#?}"
    );
    for (unit, decision) in &admitted {
        assert!(
            text(decision, "reason").contains("restart attempt 1"),
            "{unit}: {decision:#}"
        );
    }
    for (unit, _) in &held {
        wait_for_policy(&agent, unit, "the unit held", |p| {
            p["held_by_storm"] == true
        })?;
    }

    // The admitted ones are restarted while the held ones wait.
    for (unit, _) in &admitted {
        wait_for_record(
            &agent,
            unit,
            "action",
            "an admitted unit's restart",
            restart_done,
        )?;
    }
    for (unit, _) in &held {
        assert!(
            agent.records(unit, "action")?.is_empty(),
            "{}",
            history_and_log(&agent, unit)
        );
        assert_eq!(sandbox.property(unit, "ActiveState")?, "failed", "{unit}");
    }

    // Calm again (the restarts verified, no new unit held for 3 s): the held ones get their turn.
    for (unit, _) in &held {
        // Held units are let through a few at a time: one may be held again while the other
        // takes its turn; what matters is that each one's turn comes.
        wait_for_record(&agent, unit, "decision", "the held unit's turn", |d| {
            let reason = text(d, "reason");
            (reason.contains("storm breaker calm again") && !reason.contains("tripped"))
                || text(d, "action") == "restart"
        })?;
        wait_for_record(
            &agent,
            unit,
            "action",
            "the held unit's restart",
            restart_done,
        )?;
        wait_for_policy(&agent, unit, "the unit no longer held", |p| {
            p["held_by_storm"] == false
        })?;
    }
    for unit in STORM_UNITS {
        Sandbox::wait_until(&format!("{unit} to be active"), WAIT, || {
            Ok(sandbox.property(unit, "ActiveState")? == "active")
        })
        .with_context(|| history_and_log(&agent, unit))?;
    }
    Ok(())
}
