//! The per-run payload the guest mounts over 9p: what an operator would install on a host (the
//! Debian package `cargo xtask deb` builds, a newer build of it to upgrade to, a config) and
//! what the guest runs (the scenario script, the list of scenarios, the test services of
//! tests/vm/units and the `selfheal-workload` binary they run). The guest writes its journal
//! and the agent's status back to `out/`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::scenarios::Scenario;
use crate::{cmd, deb};

/// Names a unit file to install over the packaged one (to try a change to it).
const UNIT_OVERRIDE: &str = "SELFHEAL_VM_UNIT";
/// The version the `package` scenario upgrades to: the same build, newer for dpkg.
const UPGRADE_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+vmupgrade");

/// Fills `run_dir`/payload from the workspace and the agent built in `bin_dir`.
pub fn prepare(run_dir: &Path, bin_dir: &Path, scenarios: &[&Scenario]) -> anyhow::Result<PathBuf> {
    let root = cmd::workspace_root();
    let payload = run_dir.join("payload");
    fs::create_dir_all(payload.join("out"))?;

    // Each copied at once: cargo-deb clears the older packages from its output directory.
    copy(
        &deb::deb(Some(UPGRADE_VERSION))?,
        &payload.join("selfheal-upgrade.deb"),
    )?;
    copy(&deb::deb(None)?, &payload.join("selfheal.deb"))?;
    let workload = bin_dir.join("selfheal-workload");
    if workload.exists() {
        // Test workloads for scenarios that need a misbehaving service Debian does not ship.
        link_or_copy(&workload, &payload.join("selfheal-workload"))?;
    }
    if let Some(unit) = std::env::var_os(UNIT_OVERRIDE) {
        println!(
            "vm-test: installing {} over the packaged unit ({UNIT_OVERRIDE})",
            unit.to_string_lossy()
        );
        copy(Path::new(&unit), &payload.join("selfheal.service.override"))?;
    }
    copy(
        &root.join("tests/vm/selfheal.toml"),
        &payload.join("selfheal.toml"),
    )?;
    copy(
        &root.join("tests/vm/scenarios.sh"),
        &payload.join("scenarios.sh"),
    )?;
    // The misbehaving services the scenarios install.
    let units = root.join("tests/vm/units");
    fs::create_dir_all(payload.join("units"))?;
    for entry in fs::read_dir(&units).with_context(|| format!("reading {}", units.display()))? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            copy(&path, &payload.join("units").join(name))?;
        }
    }
    let names: String = scenarios.iter().map(|s| format!("{}\n", s.name)).collect();
    fs::write(payload.join("scenarios"), names)?;
    Ok(payload)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// A hard link when the target dir and the run dir share a file system (the agent's debug
/// build is large), a copy otherwise.
fn link_or_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    copy(from, to)
}
