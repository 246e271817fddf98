//! The operator's live view and the CLI's errors, against a running agent: `events --follow`
//! streams the audit records of a crash as they are written, `status --watch` into a pipe
//! prints the tree and then each new record as plain lines, and every CLI error says what to
//! do.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use selfheal_tests::{Sandbox, agent::Agent, agent::agent_bin, service_unit};
use serde_json::Value;

use super::{WAIT, kill_main, wait_watching, workload};

const UNIT: &str = "followed.service";

fn start(sandbox: &Sandbox) -> anyhow::Result<Agent> {
    sandbox.install_unit(UNIT, &service_unit("followed", &workload("sleep"), &[]))?;
    sandbox.systemctl(&["start", UNIT])?;
    let config = format!("[[unit]]\nname = \"{UNIT}\"\nrestart = \"on-failure\"\n");
    let agent = Agent::start(sandbox, &config, &[])?;
    wait_watching(&agent, UNIT)?;
    Ok(agent)
}

/// A CLI process whose stdout lines arrive on a channel; killed when dropped.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Streaming {
    fn spawn(sandbox: &Sandbox, args: &[&str]) -> anyhow::Result<Streaming> {
        let mut child = Command::new(agent_bin())
            .args(args)
            .envs(sandbox.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting selfheal-agent")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Streaming {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// The first line (from now) that `matches`, within WAIT.
    fn expect(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return Ok(line);
                    }
                }
                Err(_) => anyhow::bail!(
                    "no {what} within {WAIT:?}; the output was:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_follow_streams_a_crash_and_its_restart_as_json_lines() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("op-events")?;
    let agent = start(&sandbox)?;
    let config = sandbox.runtime_dir().join("selfheal.toml");
    // Started before anything is recorded: it waits for the log, then follows it.
    let mut events = Streaming::spawn(
        &sandbox,
        &[
            "events",
            "--follow",
            "--json",
            "--config",
            &config.to_string_lossy(),
        ],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    kill_main(&sandbox, UNIT, libc::SIGKILL)?;
    let parse = |line: &str| serde_json::from_str::<Value>(line).unwrap_or(Value::Null);
    let decision = events.expect("crash decision", |l| {
        let r = parse(l);
        r["event"] == "decision" && r["unit"] == UNIT && r["problem"] == "crash"
    })?;
    assert!(parse(&decision)["at_ms"].is_u64(), "{decision}");
    events.expect("restart outcome", |l| {
        let r = parse(l);
        r["event"] == "action"
            && r["unit"] == UNIT
            && r["action"] == "restart"
            && r["outcome"] == "done"
    })?;
    // Every line it printed is one JSON record.
    for line in &events.seen {
        assert!(
            parse(line).is_object(),
            "not a JSON record: {line}\n{}",
            agent.log_text()
        );
    }

    // Without --follow: the same records, as readable lines, then it exits.
    let out = agent.cli(&["events", "--config", &config.to_string_lossy()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("{UNIT}: crash (")), "{text}");
    assert!(
        text.contains(&format!("{UNIT}: restart done after")),
        "{text}"
    );
    Ok(())
}

#[test]
fn status_watch_in_a_pipe_prints_the_tree_then_each_record_as_it_happens() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("op-watch")?;
    let agent = start(&sandbox)?;
    let socket = agent.socket().to_string_lossy().into_owned();
    let mut watch = Streaming::spawn(
        &sandbox,
        &[
            "status",
            "--watch",
            "--interval",
            "0.2",
            "--socket",
            &socket,
        ],
    )?;
    watch.expect("the tree", |l| l.starts_with("System Health:"))?;
    watch.expect("the unit in the tree", |l| {
        l.contains(&format!("{UNIT}: active (running)"))
    })?;
    kill_main(&sandbox, UNIT, libc::SIGKILL)?;
    watch.expect("the restart streaming under the tree", |l| {
        l.contains(&format!("{UNIT}: restart done after"))
    })?;
    // The tree again, now that the unit restarted once: printed when the unit's state
    // changed, which may come before or after the restart's record on the pipe.
    if !watch.seen.iter().any(|l| l.contains("restarts 1")) {
        watch.expect("the refreshed tree", |l| l.contains("restarts 1"))?;
    }
    let escapes: Vec<&String> = watch.seen.iter().filter(|l| l.contains('\x1b')).collect();
    assert!(
        escapes.is_empty(),
        "colours or cursor moves into a pipe: {escapes:?}"
    );
    Ok(())
}

#[test]
fn cli_errors_say_what_was_wrong_and_what_to_do() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("op-errors")?;
    let agent = start(&sandbox)?;
    let socket = agent.socket().to_string_lossy().into_owned();
    let stderr = |out: std::process::Output| {
        assert!(!out.status.success(), "it succeeded: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // No agent running.
    let missing = sandbox.runtime_dir().join("nobody-here.sock");
    let text = stderr(agent.cli(&["status", "--socket", &missing.to_string_lossy()])?);
    assert!(text.contains("no selfheal agent is running"), "{text}");
    assert!(
        text.contains("selfheal-agent run") && text.contains("systemctl start selfheal"),
        "{text}"
    );

    // Unknown unit: the units it watches, and the likely one.
    let text = stderr(agent.cli(&["explain", "nope.service", "--socket", &socket])?);
    assert!(text.contains("unknown unit nope.service"), "{text}");
    assert!(text.contains(&format!("it watches {UNIT}")), "{text}");
    let text = stderr(agent.cli(&["history", "followed", "--socket", &socket])?);
    assert!(text.contains(&format!("did you mean {UNIT}?")), "{text}");

    // Permission denied: as an unprivileged user, against the root-only socket.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(agent_bin())
        .args(["status", "--socket", &socket])
        .output()
        .context("running setpriv")?;
    let text = stderr(out);
    assert!(text.contains("permission denied"), "{text}");
    assert!(text.contains("run as root"), "{text}");
    Ok(())
}
