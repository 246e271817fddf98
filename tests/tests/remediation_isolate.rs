//! Issue 5 end to end, containment: `isolate` freezes a unit's tasks or cuts it off the network
//! (loopback included, the default) until the quarantine ends or an operator releases it, and
//! a unit hung in uninterruptible sleep is escalated instead of restarted in a loop.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use selfheal_tests::agent::{
    WAIT, cli, history_and_log, records_where, sandbox_file, text, wait_for_policy,
    wait_for_record, wait_watching, workload,
};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};

/// A detector the test switches on and off: it fails while `flag` exists.
fn flag_detector(kind: &str, flag: &str) -> String {
    format!(
        "[[unit.detector]]\nname = \"ids\"\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e '{flag}'\"]\n\
         kind = \"{kind}\"\ninterval = \"500ms\"\ntimeout = \"5s\"\n"
    )
}

/// A `[[unit]]` that answers the custom kind `compromised` by isolating it as `isolation` says.
fn isolated_unit(name: &str, isolation: &str, flag: &str) -> String {
    format!(
        "[[unit]]\nname = \"{name}\"\n\n[unit.remediation]\nisolation = [\"{isolation}\"]\n\n\
         [unit.remediation.custom]\ncompromised = [\"isolate\"]\n\n{}\n",
        flag_detector("compromised", flag)
    )
}

/// "ok 12" / "fail 13", as `connect-loop` writes it.
fn last_try(file: &Path) -> anyhow::Result<(bool, u64)> {
    let text = std::fs::read_to_string(file)?;
    let (verdict, attempt) = text
        .trim()
        .split_once(' ')
        .with_context(|| format!("{}: {text:?}", file.display()))?;
    Ok((verdict == "ok", attempt.parse()?))
}

/// Waits for a try that started after try `after` and went as `ok` says; returns its number.
fn wait_for_try(file: &Path, after: u64, ok: bool, what: &str) -> anyhow::Result<u64> {
    let mut seen = 0;
    Sandbox::wait_until(what, WAIT, || {
        let (went_ok, attempt) = last_try(file)?;
        seen = attempt;
        // The try in flight at `after` may have started before the change.
        Ok(attempt > after + 1 && went_ok == ok)
    })?;
    Ok(seen)
}

fn frozen(cgroup: &Path) -> anyhow::Result<bool> {
    let events = std::fs::read_to_string(cgroup.join("cgroup.events"))?;
    Ok(events.lines().any(|l| l == "frozen 1"))
}

#[test]
fn freeze_stops_the_units_tasks_until_the_quarantine_expires() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("freeze")?;
    let flag = sandbox_file(&sandbox, "intrusion.flag");
    // connect-loop counts its tries in a file: a cheap sign of life. Nobody listens on port 9.
    let ticks = PathBuf::from(sandbox_file(&sandbox, "suspect.ticks"));
    let exec = workload(&format!("connect-loop 127.0.0.1:9 {}", ticks.display()));
    sandbox.install_unit("suspect.service", &service_unit("suspect", &exec, &[]))?;
    sandbox.systemctl(&["start", "suspect.service"])?;
    let config = format!(
        "[policy]\nquarantine_duration = \"4s\"\n\n{}",
        isolated_unit("suspect.service", "freeze", &flag)
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_watching(&agent, "suspect.service")?;
    let cgroup = sandbox.unit_cgroup("suspect.service")?;
    let before = wait_for_try(&ticks, 0, false, "the workload to tick")?;

    std::fs::write(&flag, "")?;
    let decision = wait_for_record(
        &agent,
        "suspect.service",
        "decision",
        "the isolation",
        |d| d["problem"] == "compromised",
    )?;
    assert_eq!(decision["action"], "freeze", "{decision:#}");
    let frozen_done = wait_for_record(&agent, "suspect.service", "action", "the freeze", |a| {
        a["action"] == "freeze"
    })?;
    assert_eq!(
        frozen_done["outcome"],
        "done",
        "{}",
        history_and_log(&agent, "suspect.service")
    );
    Sandbox::wait_until("the cgroup to be frozen", WAIT, || frozen(&cgroup))?;
    let view = wait_for_policy(&agent, "suspect.service", "the unit frozen", |p| {
        p["frozen"] == true
    })?;
    assert_eq!(view["quarantined"], false, "{view:#}");

    // Frozen, the workload makes no progress, for as long as the freeze lasts.
    let (_, at_freeze) = last_try(&ticks)?;
    assert!(at_freeze >= before);
    let mut polls = 0;
    while frozen(&cgroup)? {
        let (_, now) = last_try(&ticks)?;
        assert!(
            now <= at_freeze + 1,
            "tries went on while frozen: {at_freeze} → {now}"
        );
        polls += 1;
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(polls < 300, "still frozen after 30 s");
    }
    let thaw = wait_for_record(&agent, "suspect.service", "decision", "the thaw", |d| {
        d["problem"] == "quarantine expired"
    })?;
    assert_eq!(thaw["action"], "thaw", "{thaw:#}");
    assert!(
        polls >= 20,
        "the freeze lasted {polls} polls of 100 ms, not the 4 s configured"
    );
    wait_for_try(&ticks, at_freeze + 1, false, "the workload to tick again")?;
    assert!(!frozen(&cgroup)?, "thawed");
    wait_for_policy(
        &agent,
        "suspect.service",
        "the unit no longer frozen",
        |p| p["frozen"] == false,
    )?;
    Ok(())
}

/// Two units reaching a server on loopback; `leaky.service` is quarantined (loopback cut too,
/// the default) when the flag file appears.
struct NetQuarantine {
    sandbox: Sandbox,
    config: String,
    flag: String,
    leaky: PathBuf,
    bystander: PathBuf,
}

impl NetQuarantine {
    fn start(name: &str) -> anyhow::Result<Self> {
        let sandbox = Sandbox::start(name)?;
        let server = TcpListener::bind("127.0.0.1:0")?;
        let address = server.local_addr()?;
        std::thread::spawn(move || for _ in server.incoming() {});
        let flag = sandbox_file(&sandbox, "intrusion.flag");
        let leaky = PathBuf::from(sandbox_file(&sandbox, "leaky.tries"));
        let bystander = PathBuf::from(sandbox_file(&sandbox, "bystander.tries"));
        for (unit, file) in [("leaky.service", &leaky), ("bystander.service", &bystander)] {
            let exec = workload(&format!("connect-loop {address} {}", file.display()));
            sandbox.install_unit(unit, &service_unit(unit, &exec, &[]))?;
        }
        sandbox.systemctl(&["start", "leaky.service", "bystander.service"])?;
        let config = format!(
            "[policy]\nquarantine_duration = \"10m\"\n\n{}\n[[unit]]\nname = \"bystander.service\"\n",
            isolated_unit("leaky.service", "network", &flag)
        );
        Ok(Self {
            sandbox,
            config,
            flag,
            leaky,
            bystander,
        })
    }

    /// Raises the flag and waits until `leaky.service` is cut off and `bystander.service` is not.
    fn quarantine(&self, agent: &Agent) -> anyhow::Result<()> {
        wait_for_try(&self.leaky, 0, true, "leaky.service to reach the server")?;
        std::fs::write(&self.flag, "")?;
        let decision =
            wait_for_record(agent, "leaky.service", "decision", "the quarantine", |d| {
                d["problem"] == "compromised"
            })?;
        assert_eq!(decision["action"], "quarantine", "{decision:#}");
        let done = wait_for_record(agent, "leaky.service", "action", "the quarantine", |a| {
            a["action"] == "quarantine"
        })?;
        assert_eq!(
            done["outcome"],
            "done",
            "{}",
            history_and_log(agent, "leaky.service")
        );
        let (_, at_quarantine) = last_try(&self.leaky)?;
        let (_, bystander_at) = last_try(&self.bystander)?;
        wait_for_try(
            &self.leaky,
            at_quarantine,
            false,
            "leaky.service to be cut off",
        )?;
        wait_for_try(
            &self.bystander,
            bystander_at,
            true,
            "bystander.service to still get through",
        )?;
        let view = wait_for_policy(agent, "leaky.service", "the unit quarantined", |p| {
            p["quarantined"] == true
        })?;
        assert_eq!(view["frozen"], false, "{view:#}");
        assert_eq!(
            self.sandbox.property("leaky.service", "ActiveState")?,
            "active"
        );
        Ok(())
    }

    /// Lowers the flag, releases the unit and waits until it gets through again.
    fn release(&self, agent: &Agent) -> anyhow::Result<()> {
        std::fs::remove_file(&self.flag)?;
        let answer = cli(agent, &["release", "leaky.service"])?;
        assert!(answer.contains("release"), "{answer}");
        let released = wait_for_record(agent, "leaky.service", "action", "the release", |a| {
            a["action"] == "release"
        })?;
        assert_eq!(released["outcome"], "done", "{released:#}");
        let (_, at_release) = last_try(&self.leaky)?;
        wait_for_try(
            &self.leaky,
            at_release,
            true,
            "leaky.service to get through again",
        )?;
        wait_for_policy(agent, "leaky.service", "the quarantine over", |p| {
            p["quarantined"] == false
        })?;
        Ok(())
    }
}

#[test]
fn network_quarantine_cuts_the_unit_off_loopback_until_an_operator_releases_it()
-> anyhow::Result<()> {
    require_root!();
    let setup = NetQuarantine::start("netquar")?;
    let agent = Agent::start(&setup.sandbox, &setup.config, &[])?;
    wait_watching(&agent, "leaky.service")?;
    setup.quarantine(&agent)?;
    setup.release(&agent)
}

#[test]
fn a_network_quarantine_survives_the_agent_being_killed_and_restarted() -> anyhow::Result<()> {
    require_root!();
    let setup = NetQuarantine::start("netkeep")?;
    let first = Agent::start(&setup.sandbox, &setup.config, &[])?;
    wait_watching(&first, "leaky.service")?;
    setup.quarantine(&first)?;
    let state_file = setup.sandbox.runtime_dir().join("state/policy.json");
    Sandbox::wait_until("policy.json to hold the quarantine", WAIT, || {
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_file)?)?;
        Ok(saved["units"]["leaky.service"]["isolation"]["quarantined"] == true)
    })?;
    // SAFETY: kill(2) on the agent this test started.
    assert_eq!(unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) }, 0);
    Sandbox::wait_until("the killed agent to stop answering", WAIT, || {
        Ok(first.status().is_err())
    })?;
    drop(first);

    // With no agent running, and after a new one started, the unit stays cut off.
    let (_, at_kill) = last_try(&setup.leaky)?;
    wait_for_try(
        &setup.leaky,
        at_kill,
        false,
        "leaky.service still cut off without an agent",
    )?;
    let second = Agent::start(&setup.sandbox, &setup.config, &[])?;
    wait_watching(&second, "leaky.service")?;
    let view = wait_for_policy(&second, "leaky.service", "the quarantine restored", |p| {
        p["quarantined"] == true
    })?;
    assert_eq!(view["frozen"], false, "{view:#}");
    assert!(
        second
            .log_text()
            .contains("taken over from the previous agent"),
        "{}",
        second.log_text()
    );
    let (_, at_restart) = last_try(&setup.leaky)?;
    wait_for_try(
        &setup.leaky,
        at_restart,
        false,
        "leaky.service still cut off",
    )?;
    let quarantines = records_where(&second, "leaky.service", "action", |a| {
        a["action"] == "quarantine"
    })?;
    assert!(
        quarantines.len() <= 1,
        "quarantined again: {quarantines:#?}"
    );
    setup.release(&second)
}

#[test]
fn a_unit_hung_in_uninterruptible_sleep_is_escalated_once_and_never_restarted() -> anyhow::Result<()>
{
    require_root!();
    let sandbox = Sandbox::start("hung")?;
    sandbox.install_unit(
        "stuck.service",
        &service_unit("stuck", &workload("vfork-hang"), &[]),
    )?;
    sandbox.systemctl(&["start", "stuck.service"])?;
    let pid = sandbox.main_pid("stuck.service")?;
    Sandbox::wait_until("the workload to enter D state", WAIT, || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let state = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.starts_with('D'));
        Ok(state == Some(true))
    })?;
    let config = "[[unit]]\nname = \"stuck.service\"\nrestart = \"always\"\n\n\
                  [unit.stall]\nthreshold = \"2s\"\n";
    let agent = Agent::start(&sandbox, config, &[])?;
    wait_watching(&agent, "stuck.service")?;

    let escalation = wait_for_record(&agent, "stuck.service", "decision", "the escalation", |d| {
        d["problem"] == "hung"
    })?;
    assert_eq!(escalation["action"], "escalate", "{escalation:#}");
    assert!(
        text(&escalation, "reason").contains("restarting cannot help"),
        "{escalation:#}"
    );
    wait_for_policy(&agent, "stuck.service", "the unit escalated", |p| {
        p["escalated"].is_string()
    })?;

    // It stays hung for twice the threshold more: still one escalation, no restart, same process.
    Sandbox::wait_until("the hang to last 6 s", WAIT, || {
        let stalls = agent.unit("stuck.service")?["view"]["stalls"].clone();
        Ok(stalls.as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["kind"] == "hung" && s["age_seconds"].as_f64() >= Some(6.0))
        }))
    })
    .with_context(|| history_and_log(&agent, "stuck.service"))?;
    let escalations = records_where(&agent, "stuck.service", "action", |a| {
        a["action"] == "escalate"
    })?;
    assert_eq!(escalations.len(), 1, "{escalations:#?}");
    let restarts = records_where(&agent, "stuck.service", "action", |a| {
        a["action"] == "restart"
    })?;
    assert!(restarts.is_empty(), "{restarts:#?}");
    assert_eq!(sandbox.main_pid("stuck.service")?, pid);
    assert_eq!(agent.unit("stuck.service")?["restarts"], 0);
    Ok(())
}
