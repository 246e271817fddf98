//! `cargo xtask deb`: the Debian package operators install, built with cargo-deb from
//! `[package.metadata.deb]` in selfheal-agent/Cargo.toml, then checked by lintian.
//!
//! What the package needs beyond the tree is generated here, into target/deb-assets (a fixed
//! path, because the package metadata names it):
//! - the man pages and completions, written by the release binary itself
//!   (`selfheal-agent generate …`), so they describe exactly the CLI being packaged; xtask
//!   cannot link the agent crate, whose build needs the eBPF toolchain xtask installs;
//! - the unit file: deploy/selfheal.service as it is in the tree, with the binary at
//!   /usr/bin (packages own /usr, operators who copy by hand own /usr/local).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};

const UNIT: &str = "deploy/selfheal.service";
const HAND_INSTALLED: &str = "/usr/local/bin/selfheal-agent";
const PACKAGED: &str = "/usr/bin/selfheal-agent";

/// Builds the package (with `version` instead of the crate's when given), runs lintian on it,
/// and returns its path.
pub fn deb(version: Option<&str>) -> anyhow::Result<PathBuf> {
    setup::ensure()?;
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "-p",
        "selfheal-agent",
        "--bin",
        "selfheal-agent",
    ]))?;
    let assets = cmd::workspace_root().join("target/deb-assets");
    if assets.exists() {
        fs::remove_dir_all(&assets).with_context(|| format!("clearing {}", assets.display()))?;
    }
    let agent = cmd::target_dir().join("release/selfheal-agent");
    generate(&agent, &assets)?;
    packaged_unit(&assets.join("units"))?;

    let out_dir = cmd::target_dir().join("debian");
    fs::create_dir_all(&out_dir)?;
    let mut cargo_deb = cmd::cargo();
    cargo_deb
        .args(["deb", "-p", "selfheal-agent", "--no-build", "--output"])
        .arg(&out_dir);
    if let Some(version) = version {
        cargo_deb.args(["--deb-version", version]);
    }
    let out = cargo_deb
        .output()
        .context("running cargo deb (`cargo xtask setup` installs it)")?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let package = printed
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb printed no package path: {printed}"))?;
    lintian(&package)?;
    println!("xtask deb: {}", package.display());
    Ok(package)
}

/// Man pages (gzipped, as Debian ships them) and completions from the binary.
fn generate(agent: &Path, assets: &Path) -> anyhow::Result<()> {
    let man = assets.join("man");
    for (what, dir) in [
        ("manpage", &man),
        ("completions", &assets.join("completions")),
    ] {
        cmd::run(Command::new(agent).args(["generate", what]).arg(dir))
            .with_context(|| format!("generating the {what} with {}", agent.display()))?;
    }
    for entry in fs::read_dir(&man)? {
        let page = entry?.path();
        // -n: no name or time stamp inside, so the same CLI gives the same bytes.
        cmd::run(Command::new("gzip").args(["-9nf"]).arg(&page))?;
    }
    Ok(())
}

fn packaged_unit(dir: &Path) -> anyhow::Result<()> {
    let source = cmd::workspace_root().join(UNIT);
    let text =
        fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
    let text = text.replace(HAND_INSTALLED, PACKAGED);
    if !text
        .lines()
        .any(|l| l.starts_with(&format!("ExecStart={PACKAGED}")))
    {
        bail!("{UNIT}: no ExecStart={HAND_INSTALLED} or {PACKAGED} line to package");
    }
    fs::create_dir_all(dir)?;
    let header = "# Installed by the selfheal package: edit with `systemctl edit selfheal`.\n";
    fs::write(dir.join("selfheal.service"), format!("{header}{text}"))?;
    Ok(())
}

/// Lintian's verdict; errors fail the build, warnings are shown.
fn lintian(package: &Path) -> anyhow::Result<()> {
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(package)
        .output()
        .context("running lintian: install Debian's `lintian` (or `cargo xtask setup`)")?;
    let findings = String::from_utf8_lossy(&out.stdout);
    print!("{findings}");
    if !out.status.success() {
        bail!(
            "lintian rejects {}: {findings}{}",
            package.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
