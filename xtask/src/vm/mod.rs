//! `cargo xtask vm-test`: proves the agent where it will live. Boots a Debian bookworm guest
//! under qemu with systemd as PID 1 and a pure cgroup v2 tree, installs the agent there from its
//! Debian package as an operator would, and runs scenarios against Debian's own services.
//!
//! Host side (here): build the agent, build or reuse the cached image (`image`), fill a per-run
//! payload directory (`payload`), boot qemu sharing it over 9p (`qemu`), and follow the guest's
//! console markers with a deadline per step (`session`, `scenarios`). Guest side:
//! tests/vm/scenarios.sh, started by a oneshot unit baked into the image, which powers off after.
//!
//! The image lives outside the target dir ([`IMAGE_CACHE`]): CI runs in a fresh clone, and
//! building the image is most of a cold run's time. Each run's own files (payload, console
//! log) go under target/vm/runs.

mod image;
mod mirror;
mod payload;
mod qemu;
mod scenarios;
mod session;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use qemu::{Accel, Next};
use session::Session;

use crate::{cmd, setup};

/// How long qemu may take from its start to the guest's `ready` marker.
fn boot_timeout(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(120),
        // Measured: about a minute under TCG on 2 cores; slow CI runners get a wide margin.
        Accel::Tcg => Duration::from_secs(480),
    }
}

/// Where built images are kept between runs and clones, keyed by their recipe's hash.
const IMAGE_CACHE: &str = "/var/cache/selfheal/vm";
/// Names another image cache directory (a machine whose /var is small or read-only).
const IMAGE_CACHE_OVERRIDE: &str = "SELFHEAL_VM_CACHE";

/// After `done`, how long the guest has to power off before qemu is killed.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(60);

pub fn vm_test(full: bool, keep: bool, only: &[String]) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "vm-test builds the guest image with debootstrap and chroot and shares files with \
             the guest as their owner: run `cargo xtask vm-test` as root"
        );
    }
    setup::ensure()?;
    let started = Instant::now();
    println!("vm-test: building the agent");
    cmd::run(cmd::cargo().args(["build", "--bins"]))?;

    let cache = std::env::var_os(IMAGE_CACHE_OVERRIDE)
        .map_or_else(|| PathBuf::from(IMAGE_CACHE), PathBuf::from);
    let (image, built) = image::ensure(&cache)?;
    let scenarios = scenarios::selected(full, only)?;
    let run_dir = new_run_dir(&cmd::target_dir().join("vm"))?;
    let payload = payload::prepare(&run_dir, &cmd::target_dir().join("debug"), &scenarios)?;

    let accel = Accel::detect();
    println!(
        "vm-test: booting the guest ({}; console in {}/console.log), then {} scenario(s){}",
        accel.name(),
        run_dir.display(),
        scenarios.len(),
        if full {
            ""
        } else {
            " (short form; --full runs all)"
        }
    );
    let guest = qemu::boot(&image, &payload, &run_dir, accel)?;
    let booted = Instant::now();
    let mut session = Session::new(scenarios, boot_timeout(accel), booted);
    let interrupted = loop {
        match guest.next_line(session.deadline()) {
            Next::Line(line) => {
                if let Some(message) = session.on_line(&line, Instant::now()) {
                    println!("vm-test: {message}");
                }
                if session.is_done() {
                    break None;
                }
            }
            Next::Timeout => {
                break Some(format!("timed out waiting for {}", session.waiting_for()));
            }
            Next::Ended => break Some("qemu exited before the guest was done".to_owned()),
        }
    };
    let boot_time = session.boot_time;
    let ran_for = booted.elapsed();
    let poweroff = if interrupted.is_none() {
        POWEROFF_TIMEOUT
    } else {
        Duration::ZERO
    };
    let powered_off = guest.finish(poweroff).is_some();
    let outcomes = session.finish(interrupted.as_deref());

    let failed: Vec<_> = outcomes.iter().filter(|(_, o)| !o.passed).collect();
    if let Some(why) = &interrupted {
        println!("vm-test: {why}");
        for (name, outcome) in &failed {
            println!("vm-test: {}", session::show(name, outcome));
        }
        println!("--- last lines of the guest's console ---");
        println!("{}", image::tail(&run_dir.join("console.log"), 40));
        println!("---");
    } else if !powered_off {
        println!("vm-test: the guest did not power off within {POWEROFF_TIMEOUT:?}: qemu killed");
    }
    let scenario_time: Duration = outcomes.iter().filter_map(|(_, o)| o.took).sum();
    println!(
        "vm-test: {}/{} scenario(s) passed ({}): image {}, boot {}, scenarios {}, guest {}, \
         total {}",
        outcomes.len() - failed.len(),
        outcomes.len(),
        accel.name(),
        built.map_or("cached".to_owned(), |t| format!("built in {}", seconds(t))),
        boot_time.map_or("-".to_owned(), session::secs),
        session::secs(scenario_time),
        session::secs(ran_for),
        session::secs(started.elapsed()),
    );

    if keep || !failed.is_empty() {
        println!(
            "vm-test: run directory kept: {} (console.log, qemu.log, payload/out/: the guest's \
             journal and the agent's status)",
            run_dir.display()
        );
    } else {
        fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing the run directory {}", run_dir.display()))?;
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(name, _)| *name).collect();
        bail!("vm-test: failed: {}", names.join(", "));
    }
    Ok(())
}

/// target/vm/runs/<unix time>-<pid>: the console log, qemu's log and the payload of one run.
fn new_run_dir(vm_dir: &Path) -> anyhow::Result<PathBuf> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dir = vm_dir
        .join("runs")
        .join(format!("{now}-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// "4.2s" or "3m05s".
fn seconds(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = secs.round() as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn durations_read_as_seconds_then_minutes() {
        assert_eq!(seconds(4.24), "4.2s");
        assert_eq!(seconds(59.94), "59.9s");
        assert_eq!(seconds(185.0), "3m05s");
    }
}
