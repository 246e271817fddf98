//! Runs the real `selfheal-agent` against a [`Sandbox`] and reads its status, the way an
//! operator would: through `selfheal-agent status --json`.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::Sandbox;

mod wait;
pub use wait::*;

/// How long the agent gets to load its programs and answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of the `selfheal-agent` binary: `SELFHEAL_AGENT` when set, else next to the test
/// executable (cargo puts every workspace binary in the same `target/<profile>/`).
pub fn agent_bin() -> PathBuf {
    let path = match std::env::var_os("SELFHEAL_AGENT") {
        Some(path) => PathBuf::from(path),
        None => crate::sibling_of_current_exe("selfheal-agent"),
    };
    assert!(
        path.is_file(),
        "the agent binary {} does not exist: build it with `cargo build -p selfheal-agent` \
         (same profile and target dir as the tests), or point SELFHEAL_AGENT at it",
        path.display()
    );
    path
}

/// Mounts tracefs and bpffs once for the whole test run when they are missing, so that agents
/// running side by side never race to mount (or unmount) them. They stay mounted afterwards,
/// as on any host with systemd.
pub fn ensure_kernel_filesystems() -> anyhow::Result<()> {
    static MOUNTED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    MOUNTED
        .get_or_init(|| {
            for (path, fstype) in [("/sys/kernel/tracing", "tracefs"), ("/sys/fs/bpf", "bpf")] {
                let mounts =
                    std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
                if mounts.lines().any(|l| {
                    l.split(' ').nth(1) == Some(path) && l.split(' ').nth(2) == Some(fstype)
                }) {
                    continue;
                }
                let status = Command::new("mount")
                    .args(["-t", fstype, "nodev", path])
                    .status()
                    .map_err(|e| format!("mount {fstype}: {e}"))?;
                if !status.success() {
                    return Err(format!("mounting {fstype} at {path} failed ({status})"));
                }
            }
            Ok(())
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Writes the agent's config into the sandbox: `units_toml` after an `[agent]` table whose
/// status socket (`agent.sock`), state dir and audit log (`actions.jsonl`) are in the sandbox's
/// runtime dir, and an `[http]` table on a free loopback port. Returns the config's path.
pub fn write_config(sandbox: &Sandbox, units_toml: &str) -> anyhow::Result<PathBuf> {
    let dir = sandbox.runtime_dir();
    let config = dir.join("selfheal.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstatus_socket = \"{}\"\nstate_dir = \"{}\"\naudit_log = \"{}\"\n\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\n{units_toml}",
            dir.join("agent.sock").display(),
            dir.join("state").display(),
            dir.join("actions.jsonl").display(),
        ),
    )
    .context("writing the agent's config")?;
    Ok(config)
}

/// A running agent. Stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Agent {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Agent {
    /// Writes `config` (TOML; its `[agent]` table is filled in here) into the sandbox and starts
    /// `selfheal-agent run --user` on it, with `extra_args`. Returns once its socket answers.
    pub fn start(
        sandbox: &Sandbox,
        units_toml: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<Agent> {
        let dir = sandbox.runtime_dir();
        let socket = dir.join("agent.sock");
        let config = write_config(sandbox, units_toml)?;
        let log = dir.join("agent.log");
        let mut command = Command::new(agent_bin());
        command
            .args(["run", "--user", "--config"])
            .arg(&config)
            .args(extra_args)
            .envs(sandbox.env())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("creating the agent log")?);
        ensure_kernel_filesystems()?;
        let child = command.spawn().context("starting selfheal-agent")?;
        let mut agent = Agent {
            child,
            socket,
            log,
            env: sandbox.env(),
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while agent.status().is_err() {
            if let Some(status) = agent.child.try_wait()? {
                bail!(
                    "the agent exited with {status} while starting:\n{}",
                    agent.log_text()
                );
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "the agent did not answer on {} within {START_TIMEOUT:?}:\n{}",
                    agent.socket.display(),
                    agent.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(agent)
    }

    /// The agent's process id, to signal it (SIGHUP reloads its config, the fleet tests
    /// SIGSTOP an agent that holds a slot).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `selfheal-agent status --json`, parsed.
    pub fn status(&self) -> anyhow::Result<Value> {
        let out = self.cli(&[
            "status",
            "--json",
            "--socket",
            &self.socket.to_string_lossy(),
        ])?;
        if !out.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).context("status --json printed malformed JSON")
    }

    /// Runs the agent's CLI with the sandbox environment.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Command::new(agent_bin())
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .context("running selfheal-agent")
    }

    /// The unit's entry in the status document.
    pub fn unit(&self, name: &str) -> anyhow::Result<Value> {
        let status = self.status()?;
        status["units"]
            .as_array()
            .and_then(|units| units.iter().find(|u| u["name"] == name).cloned())
            .with_context(|| format!("{name} is not in the agent's status: {status:#}"))
    }

    /// The unit's history records of one kind ("exit", "decision", "action", "unit").
    pub fn records(&self, unit: &str, kind: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self.unit(unit)?["history"]
            .as_array()
            .map(|h| h.iter().filter(|r| r["kind"] == kind).cloned().collect())
            .unwrap_or_default())
    }

    /// A kernel counter from the status document (summed over CPUs).
    pub fn counter(&self, name: &str) -> anyhow::Result<u64> {
        let status = self.status()?;
        status["kernel"]["counters"][name]
            .as_u64()
            .with_context(|| format!("no kernel counter {name} in {status:#}"))
    }

    /// The agent's `/metrics`, fetched over plain HTTP/1.0 from the address its status names.
    pub fn metrics(&self) -> anyhow::Result<String> {
        use std::io::Write as _;
        let status = self.status()?;
        let address = status["agent"]["http"]
            .as_str()
            .context("no agent.http in the status")?;
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: selfheal\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
