//! `cargo xtask test`: formatting and lints, unit tests, then the privileged integration tests
//! against the real kernel and a real systemd. Needs root; says so plainly when it is missing.

use anyhow::bail;

use crate::{cmd, setup};

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
    cmd::run(&mut tests)
}
