//! SIGHUP reloads the agent's config without losing state: a changed unit policy is applied,
//! an invalid file is refused with its file:line:col while the running config stays in force,
//! a change the running agent cannot apply (`[agent]`) is refused with the reason, and units
//! (or patterns) added and removed are monitored and let go without restarting the agent, and
//! so are a unit's probes.

use std::time::Duration;

use anyhow::Context as _;
use selfheal_tests::agent::{
    history_and_log, kill_main, restart_done, text, wait_for_record, wait_watching, workload,
};
use selfheal_tests::{Sandbox, agent::Agent, service_unit};

const WAIT: Duration = Duration::from_secs(30);

const UNITS: &str = "[[unit]]\nname = \"web.service\"\nrestart = \"on-failure\"\n";

fn hangup(agent: &Agent) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
}

fn restart_policy(agent: &Agent) -> anyhow::Result<String> {
    Ok(agent.unit("web.service")?["restart"]
        .as_str()
        .context("no restart in the unit's status")?
        .to_owned())
}

/// Rewrites the agent's config file: the `[agent]` and `[http]` tables stay, the units change.
fn rewrite(sandbox: &Sandbox, units: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = sandbox.runtime_dir().join("selfheal.toml");
    let text = std::fs::read_to_string(&path)?;
    let head = text.split("[[unit]]").next().unwrap_or_default().to_owned();
    std::fs::write(&path, format!("{head}{units}"))?;
    Ok(path)
}

#[test]
fn sighup_applies_a_valid_config_and_refuses_the_rest_keeping_the_running_one() -> anyhow::Result<()>
{
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("reload")?;
    let agent = Agent::start(&sandbox, UNITS, &[])?;
    assert_eq!(restart_policy(&agent)?, "on-failure");

    // A changed unit policy is applied.
    rewrite(&sandbox, &UNITS.replace("on-failure", "never"))?;
    hangup(&agent);
    Sandbox::wait_until("the reloaded restart policy", WAIT, || {
        Ok(restart_policy(&agent)? == "never")
    })?;

    // An invalid file is refused with file:line:col; the running config stays in force.
    let path = rewrite(
        &sandbox,
        "[[unit]]\nname = \"web.service\"\nrestart = \"sometimes\"\n",
    )?;
    hangup(&agent);
    let refusal = format!("{}:", path.display());
    Sandbox::wait_until("the refusal in the log", WAIT, || {
        Ok(agent
            .log_text()
            .lines()
            .any(|l| l.contains("new config refused") && l.contains(&refusal)))
    })?;
    let line = agent
        .log_text()
        .lines()
        .find(|l| l.contains("new config refused"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("unit.restart"), "{line}");
    assert_eq!(restart_policy(&agent)?, "never", "the running config stays");

    // A table the running agent cannot change: refused with the reason, units unchanged.
    let path = rewrite(&sandbox, &UNITS.replace("on-failure", "never"))?;
    let text = std::fs::read_to_string(&path)?;
    std::fs::write(
        &path,
        text.replacen("[agent]\n", "[agent]\ntick = \"2s\"\n", 1),
    )?;
    hangup(&agent);
    Sandbox::wait_until("the refusal of the [agent] change", WAIT, || {
        Ok(agent.log_text().contains("[agent] changed"))
    })?;
    let status = agent.status()?;
    assert_eq!(
        status["units"].as_array().map(Vec::len),
        Some(1),
        "{status:#}"
    );
    Ok(())
}

/// The names of the units in the agent's status.
fn monitored(agent: &Agent) -> anyhow::Result<Vec<String>> {
    let status = agent.status()?;
    Ok(status["units"]
        .as_array()
        .context("no units in the status")?
        .iter()
        .map(|u| text(u, "name").to_owned())
        .collect())
}

#[test]
fn sighup_adds_and_removes_units_and_patterns_without_restarting_the_agent() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("reload-units")?;
    for name in ["web.service", "db.service"] {
        sandbox.install_unit(name, &service_unit(name, &workload("sleep"), &[]))?;
    }
    sandbox.install_unit(
        "work@.service",
        &service_unit("work %i", &workload("sleep"), &[]),
    )?;
    sandbox.systemctl(&["start", "web.service", "db.service", "work@1.service"])?;
    let agent = Agent::start(&sandbox, UNITS, &[])?;
    wait_watching(&agent, "web.service")?;
    assert_eq!(monitored(&agent)?, ["web.service"]);

    // Added: a unit and a pattern, watched and healed by the running agent.
    let pattern = "[[unit]]\nname = \"work@*.service\"\nrestart = \"on-failure\"\n";
    rewrite(
        &sandbox,
        &format!("{UNITS}[[unit]]\nname = \"db.service\"\nrestart = \"on-failure\"\n{pattern}"),
    )?;
    hangup(&agent);
    wait_watching(&agent, "db.service")?;
    wait_watching(&agent, "work@1.service")?;
    assert_eq!(agent.unit("work@1.service")?["pattern"], "work@*.service");
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("config reloaded")
            && l.contains("added [\"db.service\"]")
            && l.contains("new patterns [\"work@*.service\"]")),
        "{log}"
    );
    let killed = kill_main(&sandbox, "db.service", libc::SIGKILL)?;
    wait_for_record(&agent, "db.service", "action", "db's restart", restart_done)
        .with_context(|| history_and_log(&agent, "db.service"))?;
    assert_ne!(sandbox.main_pid("db.service")?, killed);

    // Removed: gone from status and metrics, no longer healed.
    rewrite(&sandbox, UNITS)?;
    hangup(&agent);
    Sandbox::wait_until("db and work@1 to leave the status", WAIT, || {
        Ok(monitored(&agent)? == ["web.service"])
    })?;
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("config reloaded")
            && l.contains("removed: ")
            && l.contains("db.service")
            && l.contains("work@1.service")),
        "{log}"
    );
    let metrics = agent.metrics()?;
    assert!(!metrics.contains("unit=\"db.service\""), "{metrics}");
    kill_main(&sandbox, "db.service", libc::SIGKILL)?;
    Sandbox::wait_until("db.service to fail", WAIT, || {
        Ok(sandbox.property("db.service", "ActiveState")? == "failed")
    })?;
    // Time for a restart the agent would have done at once (the first one is immediate).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sandbox.property("db.service", "ActiveState")?, "failed");
    Ok(())
}

#[test]
fn a_unit_removed_while_its_restart_runs_is_let_go_once_the_restart_ends() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("reload-leaving")?;
    // Each start takes 4 s: the agent's restart is in progress that long.
    sandbox.install_unit(
        "slow.service",
        &service_unit("slow", &workload("sleep"), &["ExecStartPre=/bin/sleep 4"]),
    )?;
    sandbox.systemctl(&["start", "slow.service"])?;
    let slow = "[[unit]]\nname = \"slow.service\"\nrestart = \"on-failure\"\n";
    let agent = Agent::start(&sandbox, &format!("{UNITS}{slow}"), &[])?;
    wait_watching(&agent, "slow.service")?;

    kill_main(&sandbox, "slow.service", libc::SIGKILL)?;
    wait_for_record(
        &agent,
        "slow.service",
        "decision",
        "the restart decision",
        |d| text(d, "action").starts_with("restart"),
    )?;
    rewrite(&sandbox, UNITS)?;
    hangup(&agent);
    Sandbox::wait_until("the reload naming the deferred removal", WAIT, || {
        Ok(agent.log_text().lines().any(|l| {
            l.contains("config reloaded")
                && l.contains("slow.service (let go once its action in progress ends)")
        }))
    })
    .with_context(|| agent.log_text())?;
    // Still monitored while the restart runs, then let go once it ends.
    Sandbox::wait_until("slow.service to be let go", WAIT, || {
        Ok(monitored(&agent)? == ["web.service"])
    })
    .with_context(|| agent.log_text())?;
    assert!(
        agent.log_text().contains(
            "slow.service: no longer monitored: removed from the config; its action ended"
        ),
        "{}",
        agent.log_text()
    );
    assert_eq!(sandbox.property("slow.service", "ActiveState")?, "active");
    Ok(())
}

/// The probes status shows for web.service: (name, checks so far).
fn probes(agent: &Agent) -> anyhow::Result<Vec<(String, u64)>> {
    let unit = agent.unit("web.service")?;
    Ok(unit["view"]["probes"]
        .as_array()
        .map(|probes| {
            probes
                .iter()
                .map(|p| {
                    (
                        text(p, "name").to_owned(),
                        p["checks"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// A sandbox whose `web.service` sleeps, started.
fn sleeping_web(name: &str) -> anyhow::Result<Sandbox> {
    let sandbox = Sandbox::start(name)?;
    sandbox.install_unit(
        "web.service",
        &service_unit("web.service", &workload("sleep"), &[]),
    )?;
    sandbox.systemctl(&["start", "web.service"])?;
    Ok(sandbox)
}

#[test]
fn sighup_starts_replaces_and_stops_a_units_probes() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = sleeping_web("reload-probes")?;
    let agent = Agent::start(&sandbox, UNITS, &[])?;
    wait_watching(&agent, "web.service")?;
    assert!(probes(&agent)?.is_empty());
    let probe = |name: &str| {
        format!(
            "[[unit.probe]]\nname = \"{name}\"\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n\
             interval = \"1s\"\n"
        )
    };

    // Added: it runs at once, without restarting the agent.
    rewrite(&sandbox, &format!("{UNITS}{}", probe("alive")))?;
    hangup(&agent);
    Sandbox::wait_until("the added probe's results in status", WAIT, || {
        Ok(probes(&agent)?
            .iter()
            .any(|(name, checks)| name == "alive" && *checks >= 2))
    })
    .with_context(|| agent.log_text())?;
    assert!(
        agent
            .log_text()
            .lines()
            .any(|l| l.contains("config reloaded")
                && l.contains("probes and detectors replaced for [\"web.service\"]")),
        "{}",
        agent.log_text()
    );

    // Replaced: the new one runs, the old one is gone from status.
    rewrite(&sandbox, &format!("{UNITS}{}", probe("ready")))?;
    hangup(&agent);
    Sandbox::wait_until("the replacing probe's results", WAIT, || {
        let now = probes(&agent)?;
        Ok(now.len() == 1 && now[0].0 == "ready" && now[0].1 >= 2)
    })
    .with_context(|| format!("{:?}\n{}", probes(&agent), agent.log_text()))?;
    let metrics = agent.metrics()?;
    assert!(
        metrics.contains("probe=\"ready\"") && !metrics.contains("probe=\"alive\""),
        "{metrics}"
    );

    // Removed: no probe left, none comes back.
    rewrite(&sandbox, UNITS)?;
    hangup(&agent);
    Sandbox::wait_until("the probes to leave the status", WAIT, || {
        Ok(probes(&agent)?.is_empty())
    })?;
    std::thread::sleep(Duration::from_secs(2));
    assert!(probes(&agent)?.is_empty(), "{:?}", probes(&agent)?);
    Ok(())
}

/// A reload that takes away the probe whose failures are an open problem ends the problem (no
/// probe will ever say it is over): the unit's history says why, and its status shows no
/// problem any more.
#[test]
fn sighup_removing_a_failing_probe_ends_its_problem() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = sleeping_web("reload-failing-probe")?;
    // Recorded, not acted on: the episode stays open for as long as the probe fails.
    let failing = "[unit.remediation]\nconsecutive_failures = []\n\n[[unit.probe]]\n\
                   name = \"broken\"\nkind = \"exec\"\ncommand = [\"/bin/false\"]\n\
                   interval = \"1s\"\ngrace = \"0s\"\nconsecutive_failures = 2\n";
    let agent = Agent::start(&sandbox, &format!("{UNITS}{failing}"), &[])?;
    wait_watching(&agent, "web.service")?;
    wait_for_record(
        &agent,
        "web.service",
        "decision",
        "the failing probe's problem",
        |r| text(r, "problem") == "consecutive_failures",
    )?;

    // Open in status: what the reload must end.
    Sandbox::wait_until("the incident in status", WAIT, || {
        Ok(agent.unit("web.service")?["view"]["policy"]["incident"] == "consecutive_failures")
    })?;
    rewrite(&sandbox, UNITS)?;
    hangup(&agent);
    let cleared = "consecutive_failures cleared: probe \"broken\" was removed from the config";
    wait_for_record(
        &agent,
        "web.service",
        "unit",
        "the problem ended by the reload",
        |r| text(r, "message") == cleared,
    )
    .with_context(|| history_and_log(&agent, "web.service"))?;
    Sandbox::wait_until("the probe to leave the status", WAIT, || {
        Ok(probes(&agent)?.is_empty())
    })?;
    let policy = &agent.unit("web.service")?["view"]["policy"];
    assert!(policy["incident"].is_null(), "{policy:#}");
    Ok(())
}
