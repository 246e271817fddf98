//! `cargo xtask test`: formatting and lints, unit tests, the privileged integration tests
//! against the real kernel and a real systemd, then the short form of `cargo xtask vm-test`:
//! the agent installed with its shipped unit on a real systemd host (a Debian guest under
//! qemu). Needs root; says so plainly when it is missing.

use anyhow::bail;

use crate::{cmd, setup, vm};

pub fn test(filter: Option<&str>) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "the integration tests load eBPF programs, create cgroups and start systemd: \
             run `cargo xtask test` as root"
        );
    }
    setup::ensure()?;
    println!("xtask test: rustfmt and clippy");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    cmd::run(cmd::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;

    println!("xtask test: building the agent and the test workloads");
    cmd::run(cmd::cargo().args(["build", "--bins"]))?;
    let bin = cmd::target_dir().join("debug");

    println!("xtask test: unit and integration tests");
    let mut tests = cmd::cargo();
    tests
        .args([
            "test",
            "--workspace",
            "--exclude",
            "selfheal-ebpf",
            "--no-fail-fast",
        ])
        .env("SELFHEAL_AGENT", bin.join("selfheal-agent"))
        .env("SELFHEAL_WORKLOAD", bin.join("selfheal-workload"))
        .env("RUST_BACKTRACE", "1");
    if let Some(filter) = filter {
        tests.args(["--", filter]);
    }
    let tested = cmd::run(&mut tests);

    // The scenarios are not named like tests: a filter picks tests, so it skips the guest.
    let vm_tested = if filter.is_some() {
        println!("xtask test: vm-test skipped (a filter was given; run `cargo xtask vm-test`)");
        Ok(())
    } else {
        // Run even when a test above failed: the guest says whether the agent works on a
        // real systemd host, which is worth knowing in either case.
        println!("xtask test: vm-test (short form)");
        vm::vm_test(false, false)
    };
    match (tested, vm_tested) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(tests), Err(vm)) => bail!("{tests:#}\n{vm:#}"),
    }
}
