fn main() -> aya_build::Result<()> {
    // Rebuild the object when the linker changes (it is part of the toolchain, not a crate).
    println!("cargo:rerun-if-changed=build.rs");
    aya_build::emit_bpf_target_arch_cfg()
}
