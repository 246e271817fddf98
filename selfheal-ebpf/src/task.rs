//! Offsets of `struct task_struct` fields, which differ between kernels and configs. The agent
//! reads them from the running kernel's BTF and sets these globals before loading.

use aya_ebpf::helpers::bpf_probe_read_kernel;

#[unsafe(no_mangle)]
static TASK_PID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_EXIT_CODE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_REAL_PARENT_OFFSET: u32 = 0;

#[inline(always)]
fn offset(global: &'static u32) -> usize {
    // SAFETY: a plain integer global, written by the loader before any program runs.
    unsafe { core::ptr::read_volatile(global) as usize }
}

/// Reads an `i32` field of `task` at the offset stored in `global`.
#[inline(always)]
fn read_i32(task: *const u8, global: &'static u32) -> Result<i32, i64> {
    // SAFETY: `task` is a task_struct pointer from a BTF tracepoint; bpf_probe_read_kernel
    // fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel(task.add(offset(global)).cast::<i32>()) }.map_err(i64::from)
}

pub fn pid(task: *const u8) -> Result<u32, i64> {
    read_i32(task, &TASK_PID_OFFSET).map(|v| v as u32)
}

pub fn tgid(task: *const u8) -> Result<u32, i64> {
    read_i32(task, &TASK_TGID_OFFSET).map(|v| v as u32)
}

pub fn exit_code(task: *const u8) -> Result<u32, i64> {
    read_i32(task, &TASK_EXIT_CODE_OFFSET).map(|v| v as u32)
}

/// Process id of the task's parent (`real_parent->tgid`).
pub fn parent_tgid(task: *const u8) -> Result<u32, i64> {
    // SAFETY: as in read_i32.
    let parent = unsafe {
        bpf_probe_read_kernel(
            task.add(offset(&TASK_REAL_PARENT_OFFSET))
                .cast::<*const u8>(),
        )
    }
    .map_err(i64::from)?;
    tgid(parent)
}
