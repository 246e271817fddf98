//! `cargo xtask soak [--minutes N]`: the chaos soak of `selfheal_tests::soak` for N minutes
//! (its short form runs among the tests). Needs root, like every test that runs the agent.

use std::time::Duration;

use anyhow::bail;

use crate::{cmd, setup};

pub fn soak(minutes: u64) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the soak loads eBPF programs and runs systemd: run `cargo xtask soak` as root");
    }
    setup::ensure()?;
    // The soak finds the agent and the workload next to this binary, in target/debug.
    cmd::run(cmd::cargo().args(["build", "--bins"]))?;
    let report = selfheal_tests::soak::run(Duration::from_secs(minutes * 60))?;
    println!("xtask soak: {minutes} min clean: {report}");
    Ok(())
}
