//! selfheal's kernel programs: one module per kernel hook.
//!
//! The programs stay dumb and cheap: each first checks whether the task belongs to a monitored
//! unit (the scheduler hook: a NULL `task->bpf_storage`; the rarer hooks: one cgroup lookup),
//! returns at once when it does not, and writes a ring buffer record only on a state change (a
//! process exit). Judgement happens in userspace.
#![no_std]
#![no_main]

mod cgroup_dir;
mod floor;
mod local_storage;
mod maps;
mod oom;
mod process_exit;
mod quarantine;
mod sched;
mod sock;
mod tag;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic, so this is dead code.
    unsafe { core::hint::unreachable_unchecked() }
}

/// The kernel only loads GPL-compatible programs that call GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
