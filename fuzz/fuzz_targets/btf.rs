//! The BTF reader: the kernel's /sys/kernel/btf/vmlinux, parsed without libbpf; then the two
//! lookups the loader makes with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_agent::sensors::ebpf::KernelBtf;

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = KernelBtf::parse(data) {
        let _ = btf.member_offset("task_struct", "pid");
        let _ = btf.tracepoint_arg_count("sched_switch");
    }
});
