//! Booting the guest under qemu and reading its serial console line by line, with deadlines.
//! A [`Guest`] owns the qemu process: dropping it kills qemu, and qemu dies with xtask, so no
//! virtual machine outlives a run, whatever way the run ends.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::image::Image;

const MEMORY_MIB: u32 = 2048;
const CPUS: u32 = 2;

/// How qemu runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Accel {
    /// Hardware virtualization: seconds to boot.
    Kvm,
    /// Emulation (no usable KVM, as in most CI runners and nested VMs): minutes to boot.
    Tcg,
}

impl Accel {
    /// KVM when the CPU has virtualization extensions and /dev/kvm opens; a /dev/kvm alone
    /// proves nothing (a VM without nested virtualization has one that fails to create guests).
    pub fn detect() -> Self {
        let cpu_can = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        });
        let kvm_opens = File::options()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if cpu_can && kvm_opens {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            // `max` gives the emulated CPU every feature TCG has (the distribution kernel wants
            // more than qemu64's 2003-era set).
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// What the console gave before a deadline.
pub enum Next {
    Line(String),
    /// The deadline passed first.
    Timeout,
    /// The console closed: qemu exited.
    Ended,
}

pub struct Guest {
    qemu: Child,
    lines: Receiver<String>,
}

/// The kernel command line: the serial console, the image's root file system read-write, and a
/// pure cgroup v2 tree (bookworm's default, said explicitly because it is what we test).
/// `panic=1` with qemu's `-no-reboot` turns a kernel panic into a quick qemu exit.
const CMDLINE: &str =
    "console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1 panic=1 quiet loglevel=4";

/// Boots `image` with `payload` shared read-write as 9p tag "payload". The console is copied,
/// as it arrives, to `run_dir`/console.log; qemu's own messages go to `run_dir`/qemu.log.
pub fn boot(image: &Image, payload: &Path, run_dir: &Path, accel: Accel) -> anyhow::Result<Guest> {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(accel.args())
        .args(["-smp", &CPUS.to_string(), "-m", &MEMORY_MIB.to_string()])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", CMDLINE])
        // snapshot=on: writes go to a temporary overlay, so every run boots the pristine image.
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,snapshot=on",
            image.disk.display()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=payload,security_model=none,id=payload",
            payload.display()
        ))
        // Entropy at boot, or early services wait for the pool to fill.
        .args(["-device", "virtio-rng-pci"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(run_dir.join("qemu.log"))?);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent;
    // it makes the kernel kill qemu when xtask dies, even by SIGKILL.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut qemu = command
        .spawn()
        .context("cannot start qemu-system-x86_64 (package qemu-system-x86)")?;
    let stdout = qemu.stdout.take().expect("stdout is piped");
    let mut console = File::create(run_dir.join("console.log"))?;
    let (send, lines) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        // Ends at EOF (qemu exited) or when the Guest, and with it the receiver, is gone.
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = console.write_all(&line);
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            line.clear();
            if send.send(text).is_err() {
                break;
            }
        }
    });
    Ok(Guest { qemu, lines })
}

impl Guest {
    /// The next console line, unless `deadline` passes or qemu exits first.
    pub fn next_line(&self, deadline: Instant) -> Next {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => Next::Line(line),
            Err(RecvTimeoutError::Timeout) => Next::Timeout,
            Err(RecvTimeoutError::Disconnected) => Next::Ended,
        }
    }

    /// Waits up to `timeout` for qemu to exit by itself (the guest powering off), then kills
    /// it. Returns its exit status, or None when it had to be killed.
    pub fn finish(mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.qemu.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => thread::sleep(Duration::from_millis(100)),
                Err(_) => break,
            }
        }
        None // Drop kills it.
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.qemu.try_wait() {
            let _ = self.qemu.kill();
        }
        let _ = self.qemu.wait();
    }
}
