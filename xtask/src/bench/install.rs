//! What only the bench needs from Debian: a real server and its load generator, and monit to
//! compare with. Installed without starting their services (the bench runs its own instances
//! inside the sandbox).

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd;

const PACKAGES: &[(&str, &str)] = &[
    ("nginx-light", "the real server under load"),
    ("wrk", "drives nginx"),
    ("monit", "the supervisor selfheal is compared with"),
    (
        "linux-perf",
        "`perf bench sched pipe|messaging`, the kernel's own scheduler benchmarks",
    ),
];

/// Makes invoke-rc.d refuse to start services while packages install (exit 101 = "forbidden").
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !crate::setup::package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask bench: installing Debian packages {missing:?}");
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: are Debian's package mirrors reachable?")?;
    // Without a policy, nginx's and monit's postinst would start system-wide daemons (nginx on
    // port 80). One already in place (container images ship one) is left alone.
    let ours = !Path::new(POLICY_RC_D).exists();
    if ours {
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# cargo xtask bench: no services started during install\nexit 101\n",
        )?;
        std::fs::set_permissions(
            POLICY_RC_D,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
    }
    let result = cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if ours {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    if let Err(e) = result {
        let why: Vec<String> = PACKAGES
            .iter()
            .filter(|(p, _)| missing.contains(p))
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
        bail!("cannot install {}: {e:#}", why.join(", "));
    }
    Ok(())
}
