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
/// `task_struct.se.sum_exec_runtime` and `task_struct.sched_info.run_delay`.
#[unsafe(no_mangle)]
static TASK_SUM_EXEC_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_RUN_DELAY_OFFSET: u32 = 0;
/// `task_struct.bpf_storage`: NULL for a task without task-local storage.
#[unsafe(no_mangle)]
static TASK_BPF_STORAGE_OFFSET: u32 = 0;
/// The pointer chain from a task to its v2 cgroup id:
/// `task->cgroups->dfl_cgrp->kn->id`, and a cgroup's hierarchy: `cgrp->root->hierarchy_id`.
#[unsafe(no_mangle)]
static TASK_CGROUPS_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CSS_SET_DFL_CGRP_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_KN_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static KERNFS_NODE_ID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_ROOT_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_ROOT_HIERARCHY_ID_OFFSET: u32 = 0;

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

/// Reads a `T` at the offset stored in `global` from `base`.
#[inline(always)]
fn read<T>(base: *const u8, global: &'static u32) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel(base.add(offset(global)).cast::<T>()) }.map_err(i64::from)
}

/// `se.sum_exec_runtime`: the task's total time on a CPU, kept by the scheduler.
#[inline(always)]
pub fn sum_exec_runtime(task: *const u8) -> u64 {
    read(task, &TASK_SUM_EXEC_OFFSET).unwrap_or(0)
}

/// `sched_info.run_delay`: the task's total time runnable but waiting for a CPU.
#[inline(always)]
pub fn run_delay(task: *const u8) -> u64 {
    read(task, &TASK_RUN_DELAY_OFFSET).unwrap_or(0)
}

/// Whether the task carries task-local storage of any map (`task->bpf_storage != NULL`):
/// read without the storage's lock, so safe under the run-queue lock. `task` must be a
/// trusted BTF task pointer (a tp_btf argument): the field is loaded directly, no helper
/// call, which the verifier allows because the offset is a constant of the frozen `.rodata`
/// and names a pointer field of `task_struct` in the kernel's BTF.
#[inline(always)]
pub fn has_local_storage(task: *const u8) -> bool {
    // SAFETY: a direct load the verifier checks against the kernel's BTF (see above).
    let storage = unsafe {
        core::ptr::read_volatile(task.add(offset(&TASK_BPF_STORAGE_OFFSET)).cast::<u64>())
    };
    storage != 0
}

/// The v2 id of a `struct cgroup` (its kernfs node id, as `bpf_get_current_cgroup_id`).
#[inline(always)]
pub fn cgroup_id(cgroup: *const u8) -> Result<u64, i64> {
    let kn: *const u8 = read(cgroup, &CGROUP_KN_OFFSET)?;
    read(kn, &KERNFS_NODE_ID_OFFSET)
}

/// Whether a `struct cgroup` is on the v2 hierarchy (hierarchy id 0); cgroup ids are only
/// unique within one hierarchy, and hybrid hosts move tasks in v1 hierarchies too.
#[inline(always)]
pub fn cgroup_is_v2(cgroup: *const u8) -> bool {
    let root: Result<*const u8, i64> = read(cgroup, &CGROUP_ROOT_OFFSET);
    root.and_then(|root| read::<i32>(root, &CGROUP_ROOT_HIERARCHY_ID_OFFSET)) == Ok(0)
}

/// The v2 cgroup id of a task (not necessarily the current one).
#[inline(always)]
pub fn task_cgroup_id(task: *const u8) -> Result<u64, i64> {
    let css_set: *const u8 = read(task, &TASK_CGROUPS_OFFSET)?;
    let cgroup: *const u8 = read(css_set, &CSS_SET_DFL_CGRP_OFFSET)?;
    cgroup_id(cgroup)
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

/// The task's parent (`real_parent`).
pub fn parent(task: *const u8) -> Result<*const u8, i64> {
    read(task, &TASK_REAL_PARENT_OFFSET)
}
