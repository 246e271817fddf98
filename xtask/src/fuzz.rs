//! `cargo xtask fuzz [--seconds N] [TARGET]`: runs the cargo-fuzz targets in `fuzz/` (the
//! parsers of what the agent reads from others: its config, the webhook body, status-socket
//! requests, BTF, procfs, cgroupfs, /proc/net/tcp), each for N seconds, from the corpus kept in
//! `fuzz/corpus/<target>`. New inputs go to `target/fuzz-corpus/<target>`, so the repository's
//! corpus stays small; a crash stops the run and names its input in `fuzz/artifacts/`.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{cmd, setup::NIGHTLY};

/// Every target in fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &[
    "config",
    "webhook_body",
    "status_request",
    "btf",
    "procfs_stat",
    "cgroupfs_stats",
    "proc_net_tcp",
];

/// Per target in `cargo xtask test`: short, bounded, enough to replay the corpus and mutate.
pub const TEST_SECONDS: u64 = 5;

pub fn fuzz(seconds: u64, only: Option<&str>) -> anyhow::Result<()> {
    let targets: Vec<&str> = match only {
        Some(name) if TARGETS.contains(&name) => vec![name],
        Some(name) => bail!("no fuzz target {name:?}; there are {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    println!(
        "xtask fuzz: building {} target(s) with nightly and sanitizers",
        targets.len()
    );
    cmd::run(cargo_fuzz().args(["build", "--debug-assertions"]))?;
    let mut crashed = Vec::new();
    for target in &targets {
        println!("xtask fuzz: {target} for {seconds} s");
        let scratch = cmd::target_dir().join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = cmd::workspace_root().join("fuzz/corpus").join(target);
        let ran = cmd::run(
            cargo_fuzz()
                .args(["run", "--debug-assertions", target])
                .arg(&scratch)
                .arg(&seeds)
                .args(["--", "-rss_limit_mb=2048", "-print_final_stats=1"])
                .arg(format!("-max_total_time={seconds}")),
        );
        if let Err(e) = ran {
            crashed.push(format!("{target}: {e:#}"));
        }
    }
    if !crashed.is_empty() {
        bail!(
            "{} fuzz target(s) crashed; their inputs are in fuzz/artifacts/<target>/ (replay with \
             `cargo +nightly fuzz run <target> <file>`, then make each a regression test next \
             to its parser):\n{}",
            crashed.len(),
            crashed.join("\n")
        );
    }
    println!(
        "xtask fuzz: {} target(s) ran {seconds} s each without a crash",
        targets.len()
    );
    Ok(())
}

/// `cargo fuzz` on the nightly toolchain (sanitizers need -Z flags), from the workspace root.
fn cargo_fuzz() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", NIGHTLY, "cargo", "fuzz"])
        .current_dir(cmd::workspace_root())
        // The stable toolchain's cargo (set when xtask runs under `cargo xtask`) must not
        // stand in for nightly's.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    command
}
