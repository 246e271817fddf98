//! `cargo xtask test`: formatting and lints, unit tests, the privileged integration tests
//! against the real kernel and a real systemd, then the short form of `cargo xtask vm-test`:
//! the agent installed with its shipped unit on a real systemd host (a Debian guest under
//! qemu).
//!
//! Two tiers. As root (as CI runs it) everything runs and a missing precondition of a
//! privileged test is a failure ([`STRICT_ENV`]), so nothing is skipped. Without root, fmt,
//! clippy and every test that needs no privileges still run; the privileged tests announce
//! themselves as not run, and the end of the run counts and names them.

use std::path::Path;

use anyhow::bail;
use selfheal_tests::require::{SKIP_LOG_ENV, STRICT_ENV};

use crate::{cmd, fuzz, setup, vm};

mod failures;

pub fn test(filter: Option<&str>) -> anyhow::Result<()> {
    let root = cmd::is_root();
    if root {
        setup::ensure()?;
    } else {
        println!(
            "xtask test: not root, so only the unprivileged tier runs (no setup, no eBPF, no \
             systemd, no VM); `sudo cargo xtask test` runs everything"
        );
    }
    println!("xtask test: rustfmt and clippy");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
    cmd::run(cmd::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;

    println!("xtask test: building the agent and the test workloads");
    cmd::run(cmd::cargo().args(["build", "--bins"]))?;
    let bin = cmd::target_dir().join("debug");
    let skip_log = cmd::target_dir().join("xtask-test-not-run.tsv");
    // A stale list from an earlier run would be counted again.
    let _ = std::fs::remove_file(&skip_log);

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
        .env(SKIP_LOG_ENV, &skip_log)
        .env("RUST_BACKTRACE", "1");
    if root {
        tests.env(STRICT_ENV, "1");
    }
    if let Some(filter) = filter {
        tests.args(["--", filter]);
    }
    let mut tested = failures::run_collecting(&mut tests);

    // Unfiltered runs fuzz each parser briefly: the corpus replays, mutations get a few seconds.
    if filter.is_none() && !root && !setup::cargo_fuzz_ok() {
        println!("xtask test: fuzzing NOT RUN (cargo-fuzz is missing: `sudo cargo xtask setup`)");
    } else if filter.is_none() {
        println!(
            "xtask test: fuzzing each target for {} s",
            fuzz::TEST_SECONDS
        );
        let fuzzed = fuzz::fuzz(fuzz::TEST_SECONDS, None);
        tested = match (tested, fuzzed) {
            (Ok(()), fuzzed) => fuzzed,
            (Err(e), Ok(())) => Err(e),
            (Err(tests), Err(fuzz)) => Err(anyhow::anyhow!("{tests:#}\n{fuzz:#}")),
        };
    }

    // The scenarios are not named like tests: a filter picks tests, so it skips the guest.
    let vm_tested = if !root {
        println!("xtask test: vm-test NOT RUN (it boots a guest under qemu: needs root)");
        Ok(())
    } else if filter.is_some() {
        println!("xtask test: vm-test skipped (a filter was given; run `cargo xtask vm-test`)");
        Ok(())
    } else {
        // Run even when a test above failed: the guest says whether the agent works on a
        // real systemd host, which is worth knowing in either case.
        println!("xtask test: vm-test (short form)");
        vm::vm_test(false, false, &[])
    };
    report_not_run(&skip_log, root);
    match (tested, vm_tested) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(tests), Err(vm)) => bail!("{tests:#}\n{vm:#}"),
    }
}

/// Prints every test (or part of one) that did not run, with its reason, and their count.
fn report_not_run(skip_log: &Path, root: bool) {
    let listed = std::fs::read_to_string(skip_log).unwrap_or_default();
    let lines: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        println!("xtask test: every selected test ran in full");
        return;
    }
    println!(
        "\nxtask test: {} test(s) or parts of tests did NOT run:",
        lines.len()
    );
    for line in &lines {
        let (test, reason) = line.split_once('\t').unwrap_or((line, ""));
        println!("  - {test}: {reason}");
    }
    if !root {
        println!("xtask test: run `sudo cargo xtask test` to run them (and the VM test)");
    }
}
