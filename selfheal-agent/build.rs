//! Builds the kernel programs (`selfheal-ebpf`) for the BPF target and places the object in
//! `OUT_DIR`, where `sensors::ebpf` embeds it with `include_bytes_aligned!`.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "selfheal-ebpf")
        .ok_or_else(|| anyhow!("the selfheal-ebpf package is missing from the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("selfheal-ebpf has no manifest directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
    .context(
        "building the eBPF programs failed; `cargo xtask setup` installs the nightly \
         toolchain, rust-src and bpf-linker they need",
    )
}
