//! `cargo xtask setup`: installs what is missing, checks what is there, and says exactly what
//! it could not install and why. Idempotent: a second run installs nothing.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd::{self, succeeds};

/// Debian packages and why we need them.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links eBPF objects with LLVM 22"),
    ("dbus", "the test sandbox runs a private dbus-daemon"),
    ("systemd", "the test sandbox runs a real systemd --user"),
    (
        "bpftool",
        "inspecting loaded programs and their run-time stats",
    ),
    (
        "qemu-system-x86",
        "`cargo xtask vm-test` boots a Debian guest",
    ),
    (
        "debootstrap",
        "`cargo xtask vm-test` builds the guest's image",
    ),
    (
        "prometheus",
        "promtool checks the rules and metrics; the end-to-end tests run a real Prometheus",
    ),
    (
        "prometheus-alertmanager",
        "amtool checks the example config; the end-to-end tests run a real Alertmanager",
    ),
    // Fleet mode (issue 15). protoc must be there before the agent is built: `run` and `test`
    // call `ensure` before their first cargo build.
    (
        "protobuf-compiler",
        "the etcd-client crate runs protoc when the agent is built",
    ),
    (
        "libprotobuf-dev",
        "protoc's well-known types (google/protobuf/*.proto) that etcd's protos import",
    ),
    (
        "etcd-server",
        "the fleet tests and `cargo xtask run -- --fleet-demo` run a real etcd cluster",
    ),
    (
        "etcd-client",
        "etcdctl reads etcd's own history in the fleet tests",
    ),
    ("lintian", "`cargo xtask deb` checks the package it builds"),
    ("gzip", "`cargo xtask deb` compresses the man pages"),
];

pub const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13";
pub const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

pub fn setup() -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("setup installs Debian packages: run it as root");
    }
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    cargo_deb()?;
    println!("xtask setup: everything is in place");
    Ok(())
}

/// Whether everything `setup` provides is already there (a quick check for run and test).
pub fn is_complete() -> bool {
    PACKAGES.iter().all(|(p, _)| package_installed(p))
        && has_rust_src()
        && bpf_linker_ok()
        && cargo_fuzz_ok()
        && cargo_deb_ok()
}

/// Runs `setup` when something is missing.
pub fn ensure() -> anyhow::Result<()> {
    if is_complete() {
        return Ok(());
    }
    println!("xtask: prerequisites missing, running `cargo xtask setup` first");
    setup()
}

/// Whether Debian's package `name` is installed (also used by the bench's own installs).
pub(crate) fn package_installed(name: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask setup: installing Debian packages {missing:?}");
    cmd::run(Command::new("apt-get").arg("update").arg("-qq"))
        .context("apt-get update failed: are Debian's package mirrors reachable?")?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing);
    install.env("DEBIAN_FRONTEND", "noninteractive");
    if let Err(e) = cmd::run(&mut install) {
        let why: Vec<String> = PACKAGES
            .iter()
            .filter(|(p, _)| missing.contains(p))
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
        bail!("cannot install {}: {e:#}", why.join(", "));
    }
    Ok(())
}

fn has_rust_src() -> bool {
    cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")))
}

fn nightly_rust_src() -> anyhow::Result<()> {
    if !succeeds(Command::new("rustup").args(["run", NIGHTLY, "rustc", "--version"])) {
        println!("xtask setup: installing the nightly toolchain (eBPF needs -Z build-std)");
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))
        .context("cannot install the nightly Rust toolchain, which builds the eBPF programs")?;
    }
    if !has_rust_src() {
        println!(
            "xtask setup: adding rust-src to nightly (core is rebuilt for bpfel-unknown-none)"
        );
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            NIGHTLY,
        ]))
        .context("cannot add rust-src to the nightly toolchain")?;
    }
    Ok(())
}

fn bpf_linker_ok() -> bool {
    cmd::output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")))
}

fn bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    if !Path::new(LLVM_BIN).join("llvm-config").exists() {
        bail!("cannot build bpf-linker: {LLVM_BIN}/llvm-config is missing (package llvm-22-dev)");
    }
    println!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)"
    );
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    cmd::run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--version"])
            .arg(format!("~{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path),
    )
    .context("cannot build bpf-linker, which links the eBPF programs")?;
    if !bpf_linker_ok() {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` does not report {BPF_LINKER_VERSION}: is ~/.cargo/bin on PATH?"
        );
    }
    Ok(())
}

pub(crate) fn cargo_fuzz_ok() -> bool {
    succeeds(Command::new("cargo").args(["fuzz", "--version"]))
}

/// `cargo xtask fuzz` (and its short form in `cargo xtask test`) runs the parsers' fuzz
/// targets with cargo-fuzz on the nightly toolchain.
fn cargo_fuzz() -> anyhow::Result<()> {
    if cargo_fuzz_ok() {
        return Ok(());
    }
    println!("xtask setup: installing cargo-fuzz from crates.io (a few minutes)");
    cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("cannot install cargo-fuzz, which runs the fuzz targets")
}

const CARGO_DEB_VERSION: &str = "3.8";

fn cargo_deb_ok() -> bool {
    cmd::output(Command::new("cargo-deb").arg("--version"))
        .is_some_and(|v| v.contains(&format!(" {CARGO_DEB_VERSION}.")))
}

/// cargo-deb builds the Debian package from `[package.metadata.deb]` (`cargo xtask deb`).
fn cargo_deb() -> anyhow::Result<()> {
    if cargo_deb_ok() {
        return Ok(());
    }
    println!("xtask setup: building cargo-deb {CARGO_DEB_VERSION} (a few minutes)");
    cmd::run(
        Command::new("cargo")
            .args(["install", "cargo-deb", "--locked", "--version"])
            .arg(format!("~{CARGO_DEB_VERSION}")),
    )
    .context("cannot build cargo-deb, which builds the Debian package")?;
    if !cargo_deb_ok() {
        bail!(
            "cargo-deb was installed but `cargo-deb --version` does not report {CARGO_DEB_VERSION}: is ~/.cargo/bin on PATH?"
        );
    }
    Ok(())
}
