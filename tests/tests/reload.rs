//! SIGHUP reloads the agent's config without losing state: a changed unit policy is applied,
//! an invalid file is refused with its file:line:col while the running config stays in force,
//! and a change the running agent cannot apply (a unit added) is refused with the reason.

use std::time::Duration;

use anyhow::Context as _;
use selfheal_tests::{Sandbox, agent::Agent};

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

    // A unit added: refused with the reason, the unit table unchanged.
    rewrite(
        &sandbox,
        &format!(
            "{}[[unit]]\nname = \"db.service\"\n",
            UNITS.replace("on-failure", "never")
        ),
    )?;
    hangup(&agent);
    Sandbox::wait_until("the refusal of the added unit", WAIT, || {
        Ok(agent.log_text().contains("added: [\"db.service\"]"))
    })?;
    let status = agent.status()?;
    assert_eq!(
        status["units"].as_array().map(Vec::len),
        Some(1),
        "{status:#}"
    );
    Ok(())
}
