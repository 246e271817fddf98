//! Bringing a sandbox up: its files, `systemd --user` in the sandbox cgroup, and the wait for it.

use std::{
    fs,
    io::Read,
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt, symlink},
        unix::process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{PATH, POLL, RUNTIME_BASE, Sandbox};

const SYSTEMD: &str = "/usr/lib/systemd/systemd";
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The manager's start unit instead of `default.target`, whose host `.wants/` would start the
/// host's user services (gpg-agent, pipewire, …) inside the sandbox. It only starts the bus.
const START_UNIT: &str = "selfheal-sandbox.target";
/// Host units masked in every sandbox: these targets pull in whatever the host's `.wants/`
/// directories list, via `basic.target`, which every service requires.
const MASKED_UNITS: &[&str] = &["sockets.target", "timers.target", "paths.target"];
/// How many lines of systemd's output an error message quotes.
const TAIL_LINES: usize = 30;

impl Sandbox {
    /// The runtime dir, the manager's configuration and units, and the sandbox cgroup.
    pub(super) fn create_files(&self) -> anyhow::Result<()> {
        // systemd refuses to start unless this exists (sd_booted()). Other sandboxes may be using
        // it, so it stays.
        fs::create_dir_all("/run/systemd/system").context("creating /run/systemd/system")?;
        fs::create_dir_all(RUNTIME_BASE).with_context(|| format!("creating {RUNTIME_BASE}"))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.runtime_dir)
            .with_context(|| format!("creating runtime dir {}", self.runtime_dir.display()))?;
        let unit_dir = self.unit_dir();
        fs::create_dir_all(&unit_dir)
            .with_context(|| format!("creating {}", unit_dir.display()))?;
        for unit in MASKED_UNITS {
            symlink("/dev/null", unit_dir.join(unit)).with_context(|| format!("masking {unit}"))?;
        }
        let dbus_daemon = find_program("dbus-daemon")
            .context("dbus-daemon is not installed (Debian/Ubuntu: `apt install dbus`)")?;
        let files = [
            (self.runtime_dir.join("dbus.conf"), DBUS_CONFIG.to_owned()),
            (unit_dir.join("dbus.socket"), DBUS_SOCKET.to_owned()),
            (unit_dir.join("dbus.service"), dbus_service(&dbus_daemon)),
            (unit_dir.join(START_UNIT), START_TARGET.to_owned()),
            (
                self.config_home().join("systemd/user.conf"),
                MANAGER_CONFIG.to_owned(),
            ),
        ];
        for (path, contents) in files {
            fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        }
        fs::create_dir(&self.cgroup)
            .with_context(|| format!("creating cgroup {}", self.cgroup.display()))?;
        Ok(())
    }

    /// Starts `systemd --user`, which first moves itself into the sandbox cgroup.
    ///
    /// A user manager logs to `/dev/console` when told "console", so it logs to the kernel log
    /// (`dmesg`) at notice level instead: warnings and failures only, which start errors quote.
    /// `SYSTEMD_LOG_TARGET`/`SYSTEMD_LOG_LEVEL` override that. Its stdout and stderr, where unit
    /// output goes too, are `systemd.log` in the runtime dir.
    pub(super) fn spawn_systemd(&self) -> anyhow::Result<Child> {
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(self.cgroup.join("cgroup.procs"))
            .context("opening the sandbox's cgroup.procs")?;
        let log = fs::File::create(self.log_path()).context("creating systemd.log")?;
        let log_target = std::env::var("SYSTEMD_LOG_TARGET").unwrap_or_else(|_| "kmsg".into());
        let log_level = std::env::var("SYSTEMD_LOG_LEVEL").unwrap_or_else(|_| "notice".into());
        let mut command = self.client(SYSTEMD);
        command
            .args(["--user", &format!("--unit={START_UNIT}")])
            .env("HOME", self.runtime_dir.join("home"))
            .env("XDG_CONFIG_HOME", self.config_home())
            .env("SYSTEMD_LOG_TARGET", log_target)
            .env("SYSTEMD_LOG_LEVEL", log_level)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // A process group of its own: a Ctrl-C at the terminal reaches the test or
            // `cargo xtask run`, which tear the sandbox down in order, not systemd directly.
            .process_group(0);
        let fd = procs.as_raw_fd();
        // SAFETY: between fork and exec the child only calls write(2), which is async-signal-safe,
        // on an fd that stays open in the parent until spawn() has returned.
        unsafe {
            command.pre_exec(move || {
                // "0" moves the writing process: the child, never anyone else.
                if libc::write(fd, c"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = command.spawn().with_context(|| {
            format!(
                "starting {SYSTEMD} --user in cgroup {}",
                self.cgroup.display()
            )
        })?;
        drop(procs);
        Ok(child)
    }

    /// Waits until the manager is on our bus and its SystemState is running or degraded.
    pub(super) fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let pid = self.systemd_pid().context("systemd was not started")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = match self.systemd.as_mut() {
                Some(systemd) => systemd.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                self.systemd = None;
                bail!(
                    "systemd --user in sandbox {} exited ({status}) before it was ready\n{}",
                    self.id,
                    self.diagnostics(pid)
                );
            }
            let output = self
                .client("busctl")
                // A bus that is not up yet may not answer at all: do not wait 25 s for it.
                .args(["--user", "--auto-start=no", "--timeout=2", "get-property"])
                .args(["org.freedesktop.systemd1", "/org/freedesktop/systemd1"])
                .args(["org.freedesktop.systemd1.Manager", "SystemState"])
                .output()
                .context("running busctl (is systemd installed?)")?;
            // busctl prints `s "running"`.
            let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let ready = state == r#"s "running""# || state == r#"s "degraded""#;
            if output.status.success() && ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let last_seen = if output.status.success() {
                    format!("SystemState is {state}")
                } else {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    format!("not on the bus: {}", stderr.trim())
                };
                bail!(
                    "systemd --user in sandbox {} was not ready on {} within {START_TIMEOUT:?} \
                     (last seen: {last_seen})\n{}",
                    self.id,
                    self.bus_address(),
                    self.diagnostics(pid)
                );
            }
            thread::sleep(POLL);
        }
    }

    fn log_path(&self) -> PathBuf {
        self.runtime_dir.join("systemd.log")
    }

    /// The last lines of systemd's output and of what it logged to the kernel log.
    fn diagnostics(&self, pid: u32) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let kernel_log = kernel_log_of(pid);
        format!(
            "last lines of {}:\n{}\nlast kernel log lines of systemd[{pid}]:\n{}",
            self.log_path().display(),
            tail(log.lines()),
            tail(kernel_log.iter().map(String::as_str)),
        )
    }
}

/// What process `pid` (a systemd) wrote to the kernel log.
fn kernel_log_of(pid: u32) -> Vec<String> {
    let prefix = format!("systemd[{pid}]: ");
    let Ok(mut kmsg) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    // Each read returns one record, "<prio>,<seq>,<usec>,<flags>;<message>\n", at most 8 KiB.
    let mut record = vec![0; 8192];
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(len) => {
                let record = String::from_utf8_lossy(&record[..len]);
                let message = record.split_once(';').map_or("", |(_, message)| message);
                if let Some(line) = message.lines().next().and_then(|l| l.strip_prefix(&prefix)) {
                    lines.push(line.to_owned());
                }
            }
            // Records were overwritten while we read: carry on with the next one.
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => {}
            // EAGAIN: no more records.
            Err(_) => break,
        }
    }
    lines
}

fn tail<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let lines: Vec<&str> = lines.collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn find_program(name: &str) -> Option<PathBuf> {
    PATH.split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// Our bus: a session bus on the socket systemd passes in, without service activation or host
/// configuration.
const DBUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>systemd:</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#;

const DBUS_SOCKET: &str = "[Unit]
Description=selfheal sandbox bus socket

[Socket]
ListenStream=%t/bus
";

fn dbus_service(dbus_daemon: &Path) -> String {
    format!(
        "[Unit]
Description=selfheal sandbox bus
Requires=dbus.socket

[Service]
ExecStart={} --config-file=%t/dbus.conf --nofork --nopidfile
",
        dbus_daemon.display()
    )
}

const START_TARGET: &str = "[Unit]
Description=selfheal sandbox
Wants=dbus.service
";

/// Unit output goes to systemd's stdout, our `systemd.log`: there is no journal to take it.
const MANAGER_CONFIG: &str = "[Manager]
DefaultStandardOutput=inherit
DefaultStandardError=inherit
";
