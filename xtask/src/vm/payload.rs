//! The per-run payload the guest mounts over 9p: what an operator would copy to a host (the
//! agent, the shipped unit file, a config) and what the guest runs (the scenario script, the
//! list of scenarios, the test services of tests/vm/units and the `selfheal-workload` binary
//! they run). The guest writes its journal and the agent's status back to `out/`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::scenarios::Scenario;
use crate::cmd;

/// The unit file operators install.
const SHIPPED_UNIT: &str = "deploy/selfheal.service";
/// Used only while the shipped one does not exist.
const STAND_IN_UNIT: &str = "tests/vm/selfheal.service";
/// Names a unit file to install instead of the shipped one (to try a change to it).
const UNIT_OVERRIDE: &str = "SELFHEAL_VM_UNIT";

/// Fills `run_dir`/payload from the workspace and the agent built in `bin_dir`.
pub fn prepare(run_dir: &Path, bin_dir: &Path, scenarios: &[&Scenario]) -> anyhow::Result<PathBuf> {
    let root = cmd::workspace_root();
    let payload = run_dir.join("payload");
    fs::create_dir_all(payload.join("out"))?;

    link_or_copy(
        &bin_dir.join("selfheal-agent"),
        &payload.join("selfheal-agent"),
    )?;
    let workload = bin_dir.join("selfheal-workload");
    if workload.exists() {
        // Test workloads for scenarios that need a misbehaving service Debian does not ship.
        link_or_copy(&workload, &payload.join("selfheal-workload"))?;
    }
    let unit = if let Some(unit) = std::env::var_os(UNIT_OVERRIDE) {
        println!(
            "vm-test: installing {} ({UNIT_OVERRIDE})",
            unit.to_string_lossy()
        );
        PathBuf::from(unit)
    } else if root.join(SHIPPED_UNIT).exists() {
        root.join(SHIPPED_UNIT)
    } else {
        println!("vm-test: {SHIPPED_UNIT} does not exist yet: installing {STAND_IN_UNIT} instead");
        root.join(STAND_IN_UNIT)
    };
    copy(&unit, &payload.join("selfheal.service"))?;
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
