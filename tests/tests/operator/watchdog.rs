//! systemd's notify protocol. First with the test in systemd's place: it binds the datagram
//! socket `$NOTIFY_SOCKET` names and reads what the agent says there (READY=1, WATCHDOG=1
//! pings, STOPPING=1), as a `Type=notify` unit with `WatchdogSec=2` would make it. Then with
//! systemd itself: the agent as a `Type=notify` unit of the sandbox's `systemd --user`, frozen
//! with SIGSTOP, is restarted by the manager's watchdog.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use selfheal_tests::require_root;
use selfheal_tests::{
    Sandbox,
    agent::{agent_bin, ensure_kernel_filesystems, write_config},
    service_unit,
};

use super::{WAIT, wait_until_status, workload};

/// The agent watches one unit, beat.service.
const BEAT_CONFIG: &str = "[[unit]]\nname = \"beat.service\"\n";

/// What systemd would put in WATCHDOG_USEC for `WatchdogSec=2`.
const WATCHDOG_USEC: &str = "2000000";

/// The agent started by hand, with the notify environment; killed when dropped.
struct NotifiedAgent {
    child: Child,
    socket: String,
}

impl NotifiedAgent {
    fn start(
        sandbox: &Sandbox,
        notify_socket: &Path,
        watchdog_pid: Option<&str>,
    ) -> anyhow::Result<NotifiedAgent> {
        let dir = sandbox.runtime_dir();
        let socket = dir.join("agent.sock").display().to_string();
        let config = write_config(sandbox, BEAT_CONFIG)?;
        let mut command = Command::new(agent_bin());
        command
            .args(["run", "--user", "--config"])
            .arg(&config)
            .envs(sandbox.env())
            .env("NOTIFY_SOCKET", notify_socket)
            .env("WATCHDOG_USEC", WATCHDOG_USEC)
            .env_remove("WATCHDOG_PID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log"))?);
        if let Some(pid) = watchdog_pid {
            command.env("WATCHDOG_PID", pid);
        }
        let child = command.spawn().context("starting selfheal-agent")?;
        Ok(NotifiedAgent { child, socket })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as systemd stops a unit.
    fn terminate(&self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }
}

impl Drop for NotifiedAgent {
    fn drop(&mut self) {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The socket systemd would listen on.
fn bind_notify_socket(sandbox: &Sandbox) -> anyhow::Result<(UnixDatagram, std::path::PathBuf)> {
    let path = sandbox.runtime_dir().join("notify.sock");
    let socket = UnixDatagram::bind(&path).context("binding the notify socket")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok((socket, path))
}

/// Messages read from `socket` until `done` holds for all of them so far, or `timeout`.
fn read_until(
    socket: &UnixDatagram,
    messages: &mut Vec<String>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while !done(messages) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {what} within {timeout:?}; the agent said: {messages:?}"
        );
        match socket.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading the notify socket"),
        }
    }
    Ok(())
}

fn count(messages: &[String], message: &str) -> usize {
    messages.iter().filter(|m| m.as_str() == message).count()
}

fn start_beat(sandbox: &Sandbox) -> anyhow::Result<()> {
    sandbox.install_unit(
        "beat.service",
        &service_unit("beat", &workload("sleep"), &[]),
    )?;
    sandbox.systemctl(&["start", "beat.service"])?;
    Ok(())
}

#[test]
fn the_agent_says_ready_then_keeps_pinging_the_watchdog_and_says_stopping() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("op-watchdog")?;
    start_beat(&sandbox)?;
    let (socket, path) = bind_notify_socket(&sandbox)?;
    let agent = NotifiedAgent::start(&sandbox, &path, None)?;
    let mut messages = Vec::new();

    read_until(&socket, &mut messages, WAIT, "READY=1 and a STATUS", |m| {
        count(m, "READY=1") == 1 && m.iter().any(|m| m.starts_with("STATUS="))
    })?;
    // Ready means ready: the status socket answers by now.
    wait_until_status(&sandbox, &agent.socket, Duration::from_secs(5))?;
    assert!(
        messages.contains(&"STATUS=watching 1 unit(s)".to_owned()),
        "{messages:?}"
    );
    // Every half WatchdogSec: three more pings come well within a generous bound.
    let before = count(&messages, "WATCHDOG=1");
    read_until(&socket, &mut messages, WAIT, "three watchdog pings", |m| {
        count(m, "WATCHDOG=1") >= before + 3
    })?;
    assert_eq!(
        count(&messages, "READY=1"),
        1,
        "READY=1 is said once: {messages:?}"
    );

    agent.terminate();
    read_until(&socket, &mut messages, WAIT, "STOPPING=1", |m| {
        count(m, "STOPPING=1") == 1
    })?;
    Ok(())
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("op-watchdog-pid")?;
    start_beat(&sandbox)?;
    let (socket, path) = bind_notify_socket(&sandbox)?;
    // Inherited from a parent that systemd watches: WATCHDOG_PID names pid 1, not the agent.
    let agent = NotifiedAgent::start(&sandbox, &path, Some("1"))?;
    assert_ne!(agent.pid(), 1);
    let mut messages = Vec::new();
    read_until(&socket, &mut messages, WAIT, "READY=1", |m| {
        count(m, "READY=1") == 1
    })?;
    let status = wait_until_status(&sandbox, &agent.socket, WAIT)?;
    assert_eq!(
        status["agent"]["pid"].as_u64(),
        Some(u64::from(agent.pid())),
        "{status:#}"
    );
    // Long enough for several pings (one a second), had the agent taken the watchdog as its own.
    Sandbox::wait_until("the agent to run for five ping intervals", WAIT, || {
        let status = wait_until_status(&sandbox, &agent.socket, WAIT)?;
        Ok(status["agent"]["uptime_seconds"].as_u64().unwrap_or(0) >= 5)
    })?;
    agent.terminate();
    read_until(&socket, &mut messages, WAIT, "STOPPING=1", |m| {
        count(m, "STOPPING=1") == 1
    })?;
    assert_eq!(
        count(&messages, "WATCHDOG=1"),
        0,
        "pinged another process's watchdog: {messages:?}"
    );
    Ok(())
}

/// The agent as the shipped unit runs it (`Type=notify`, `WatchdogSec=`, `Restart=on-failure`),
/// but under the sandbox's manager, on the sandbox's bus.
fn agent_unit(sandbox: &Sandbox, config: &Path) -> String {
    let exec = format!(
        "{} run --user --config {}",
        agent_bin().display(),
        config.display()
    );
    let log = sandbox.runtime_dir().join("agent.log");
    let mut lines: Vec<String> = sandbox
        .env()
        .into_iter()
        .map(|(key, value)| format!("Environment={key}={value}"))
        .collect();
    lines.extend(
        [
            "Type=notify",
            "NotifyAccess=main",
            "WatchdogSec=2s",
            "Restart=on-failure",
            "RestartSec=500ms",
            "TimeoutAbortSec=5s",
            "Environment=RUST_LOG=info",
        ]
        .map(str::to_owned),
    );
    lines.push(format!("StandardError=append:{}", log.display()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    service_unit("selfheal under a real watchdog", &exec, &lines)
}

#[test]
fn systemd_restarts_the_agent_when_its_loop_freezes() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("op-watchdog-real")?;
    start_beat(&sandbox)?;
    let config = write_config(&sandbox, BEAT_CONFIG)?;
    ensure_kernel_filesystems()?;
    sandbox.install_unit("selfheal.service", &agent_unit(&sandbox, &config))?;
    // Type=notify: `start` returns once the agent has said READY=1 to systemd.
    sandbox.systemctl(&["start", "selfheal.service"])?;
    let socket = sandbox
        .runtime_dir()
        .join("agent.sock")
        .display()
        .to_string();
    let frozen = sandbox.main_pid("selfheal.service")?;
    let status = wait_until_status(&sandbox, &socket, WAIT)?;
    assert_eq!(
        status["agent"]["pid"].as_u64(),
        Some(u64::from(frozen)),
        "{status:#}"
    );

    // The pings reach systemd: its watchdog timestamp moves while the agent runs.
    let stamp = || sandbox.property("selfheal.service", "WatchdogTimestampMonotonic");
    let first = stamp()?;
    Sandbox::wait_until("systemd to hear a watchdog ping", WAIT, || {
        Ok(stamp()? != first)
    })?;

    // Frozen, the agent pings no more; only systemd's watchdog can end it (SIGABRT, with the
    // SIGCONT systemd sends after it) and start it again.
    // SAFETY: kill(2) on the agent this test started as a unit.
    assert_eq!(unsafe { libc::kill(frozen as i32, libc::SIGSTOP) }, 0);
    let mut restarted = 0;
    Sandbox::wait_until("systemd to restart the frozen agent", WAIT, || {
        restarted = sandbox.main_pid("selfheal.service").unwrap_or(0);
        Ok(restarted != 0
            && restarted != frozen
            && sandbox.property("selfheal.service", "ActiveState")? == "active")
    })
    .with_context(|| {
        let log = std::fs::read_to_string(sandbox.runtime_dir().join("agent.log"));
        format!("agent log:\n{}", log.unwrap_or_default())
    })?;
    assert_eq!(sandbox.property("selfheal.service", "NRestarts")?, "1");
    assert!(
        !Path::new(&format!("/proc/{frozen}")).exists(),
        "the frozen agent {frozen} is still there"
    );
    // The new agent is the one answering.
    Sandbox::wait_until("the restarted agent to answer", WAIT, || {
        let status = wait_until_status(&sandbox, &socket, WAIT)?;
        Ok(status["agent"]["pid"].as_u64() == Some(u64::from(restarted)))
    })?;
    Ok(())
}
