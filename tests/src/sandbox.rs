//! A real `systemd --user` with a private D-Bus, in a cgroup of their own.
//!
//! The user manager exposes the same `org.freedesktop.systemd1` API as the system instance, so the
//! agent (run with `--user` and [`Sandbox::env`]) drives real units without touching the host's.
//! Everything a sandbox creates is named after it (`<label>-<pid>-<counter>`) and removed when it is
//! dropped; [`sweep_stale`] removes what crashed runs left behind.
//!
//! The bus is the manager's own `dbus.socket`/`dbus.service` pair, replaced by ours: systemd only
//! joins the bus at `$XDG_RUNTIME_DIR/bus` once units with exactly those names are running
//! (`manager_dbus_is_running()` in systemd's manager.c), so a dbus-daemon started beside it is
//! never used. This keeps the bus inside the sandbox cgroup too.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};

use crate::cgroupfs;

mod setup;
mod teardown;

pub use teardown::sweep_stale;

pub use crate::unit::service_unit;

/// Parent of every sandbox's runtime dir (`XDG_RUNTIME_DIR`).
const RUNTIME_BASE: &str = "/run/selfheal-sandbox";
/// Prefix of every sandbox's cgroup name, in the v2 root and in the v1 hierarchies systemd mirrors.
const CGROUP_PREFIX: &str = "selfheal-sandbox-";
const POLL: Duration = Duration::from_millis(50);
/// Keeps socket paths such as `<runtime dir>/systemd/private` well below the 108-byte sun_path.
const MAX_LABEL_LEN: usize = 32;
/// The only `PATH` the manager, its units and our clients see: the test's environment stays out.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static NEXT_SANDBOX: AtomicU32 = AtomicU32::new(0);

/// A running `systemd --user` with its bus; dropping it tears everything down.
#[derive(Debug)]
pub struct Sandbox {
    /// `<label>-<pid>-<counter>`: names the runtime dir and (prefixed) the cgroup.
    id: String,
    runtime_dir: PathBuf,
    cgroup: PathBuf,
    systemd: Option<Child>,
}

impl Sandbox {
    /// Starts `systemd --user` and its dbus-daemon in the fresh cgroup
    /// `<v2 root>/selfheal-sandbox-<label>-<pid>-<counter>` with the runtime dir
    /// `/run/selfheal-sandbox/<label>-<pid>-<counter>/`, and waits until the manager is on the bus
    /// and reports `running` or `degraded`.
    pub fn start(label: &str) -> anyhow::Result<Sandbox> {
        Sandbox::start_with_v1(label, &[])
    }

    /// [`Sandbox::start`], and on a hybrid host the manager also gets the v1 hierarchies of
    /// `controllers` (`cpu`, `memory`, `pids`...): systemd 252 manages a v1 controller below its
    /// root only when a writable cgroup of the root's name exists there when it starts
    /// (`controller_is_v1_accessible()`). Its units then get their own v1 cgroups where systemd
    /// writes their limits (`cpu.cfs_quota_us`, `memory.limit_in_bytes`, `pids.max`).
    /// Opt-in, because a unit that gets a real v1 memory limit can be OOM-killed by it. The v1
    /// cgroups carry the sandbox's name, so teardown removes them with the rest.
    pub fn start_with_v1(label: &str, controllers: &[&str]) -> anyhow::Result<Sandbox> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);

        let counter = NEXT_SANDBOX.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{counter}", sanitize(label), std::process::id());
        let mut sandbox = Sandbox {
            runtime_dir: Path::new(RUNTIME_BASE).join(&id),
            cgroup: cgroupfs::v2_root().join(format!("{CGROUP_PREFIX}{id}")),
            id,
            systemd: None,
        };
        // From here on, dropping `sandbox` on an error removes whatever was already set up.
        sandbox.create_files()?;
        for controller in controllers {
            if let Some(root) = cgroupfs::v1_root(controller) {
                let dir = root.join(format!("{CGROUP_PREFIX}{}", sandbox.id));
                // cpu and cpuacct may share a hierarchy: the second finds the dir there.
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating v1 cgroup {}", dir.display()))?;
            }
        }
        sandbox.systemd = Some(sandbox.spawn_systemd()?);
        sandbox.wait_until_ready()?;
        Ok(sandbox)
    }

    /// `XDG_RUNTIME_DIR` of the sandbox.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// The D-Bus address of the sandbox's bus, `unix:path=<runtime dir>/bus`.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.runtime_dir.join("bus").display())
    }

    /// What a client (the agent with `--user`, `systemctl --user`) needs in its environment.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "XDG_RUNTIME_DIR".into(),
                self.runtime_dir.display().to_string(),
            ),
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.bus_address()),
        ]
    }

    /// The sandbox's v2 cgroup dir: the manager's root, with `init.scope` and `app.slice` below.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The directory `install_unit` writes to (`$XDG_CONFIG_HOME/systemd/user`, which takes
    /// precedence over the host's `/etc/systemd/user` and `/usr/lib/systemd/user`).
    pub fn unit_dir(&self) -> PathBuf {
        self.config_home().join("systemd/user")
    }

    /// Pid of the sandbox's `systemd --user` (None after it was stopped).
    pub fn systemd_pid(&self) -> Option<u32> {
        self.systemd.as_ref().map(Child::id)
    }

    /// Pid of the sandbox's dbus-daemon (the main process of its `dbus.service`).
    pub fn dbus_pid(&self) -> anyhow::Result<u32> {
        self.main_pid("dbus.service")
    }

    /// Writes a unit file (`name` like `crasher.service`) and reloads the manager.
    pub fn install_unit(&self, name: &str, contents: &str) -> anyhow::Result<()> {
        let path = self.unit_path(name)?;
        std::fs::write(&path, contents)
            .with_context(|| format!("writing unit {}", path.display()))?;
        self.systemctl(&["daemon-reload"])?;
        Ok(())
    }

    /// Stops a unit, deletes its file, reloads the manager and forgets its failed state.
    pub fn remove_unit(&self, name: &str) -> anyhow::Result<()> {
        let path = self.unit_path(name)?;
        self.systemctl(&["stop", name])?;
        std::fs::remove_file(&path).with_context(|| format!("removing unit {}", path.display()))?;
        self.systemctl(&["daemon-reload"])?;
        // The unit may never have failed, in which case there is nothing to reset.
        let _ = self.systemctl(&["reset-failed", name]);
        Ok(())
    }

    /// Runs `systemctl --user <args>` against this sandbox and returns its stdout without the
    /// trailing newline.
    pub fn systemctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .client("systemctl")
            .args(["--user", "--no-pager"])
            .args(args)
            .output()
            .context("running systemctl (is systemd installed?)")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "`systemctl --user {}` in sandbox {} failed ({}); stdout: {:?}; stderr: {:?}",
                args.join(" "),
                self.id,
                output.status,
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim(),
            );
        }
        Ok(stdout.trim_end_matches('\n').to_owned())
    }

    /// One property of a unit (`systemctl --user show -p <prop> --value <unit>`).
    pub fn property(&self, unit: &str, prop: &str) -> anyhow::Result<String> {
        self.systemctl(&["show", "-p", prop, "--value", unit])
    }

    /// The unit's main pid; an error while it has none.
    pub fn main_pid(&self, unit: &str) -> anyhow::Result<u32> {
        let value = self.property(unit, "MainPID")?;
        match value.parse() {
            Ok(0) => Err(anyhow!("{unit} has no main process")),
            Ok(pid) => Ok(pid),
            Err(err) => Err(anyhow!("MainPID of {unit} is {value:?}: {err}")),
        }
    }

    /// The absolute v2 cgroup dir of a unit: the v2 root joined with its `ControlGroup`.
    pub fn unit_cgroup(&self, unit: &str) -> anyhow::Result<PathBuf> {
        let control_group = self.property(unit, "ControlGroup")?;
        let relative = control_group.trim_start_matches('/');
        if relative.is_empty() {
            bail!("{unit} has no cgroup (it is not running)");
        }
        Ok(cgroupfs::v2_root().join(relative))
    }

    /// Polls `f` every 50 ms until it returns true; after `timeout`, fails with an error naming
    /// `what`. Errors from `f` count as "not yet", so a transient failure (a unit not loaded yet,
    /// a socket not answering yet) cannot fail a test; the last one is quoted on timeout.
    pub fn wait_until(
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match f() {
                Ok(true) => return Ok(()),
                Ok(false) => None,
                Err(err) => Some(err),
            };
            if Instant::now() >= deadline {
                let last_error = last_error
                    .map(|err| format!("; the last check failed: {err:#}"))
                    .unwrap_or_default();
                bail!("timed out after {timeout:?} waiting for {what}{last_error}");
            }
            thread::sleep(POLL);
        }
    }

    fn config_home(&self) -> PathBuf {
        self.runtime_dir.join("home/.config")
    }

    fn unit_path(&self, name: &str) -> anyhow::Result<PathBuf> {
        if name.is_empty() || name.contains('/') || !name.contains('.') {
            bail!("{name:?} is not a unit name like `crasher.service`");
        }
        Ok(self.unit_dir().join(name))
    }

    /// A command for a client of this sandbox, with a clean environment.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env_clear().env("PATH", PATH).envs(self.env());
        command
    }
}

/// A label usable in paths and cgroup names, short enough for socket paths.
fn sanitize(label: &str) -> String {
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_LABEL_LEN)
        .collect();
    if label.is_empty() {
        "sandbox".into()
    } else {
        label
    }
}
