//! Hook: tp_btf `sched_switch`.
//!
//! Kernel prototype (5.18+): `trace_sched_switch(bool preempt, struct task_struct *prev,
//! struct task_struct *next, unsigned int prev_state)`, called with `prev` as current, after
//! the scheduler has updated `prev`'s `se.sum_exec_runtime` and before `next`'s
//! `sched_info.run_delay` takes in its latest wait.
//!
//! Filter first, without hashing and without a lock: a task of a monitored unit carries a tag
//! in `TASK_TAGS` (task-local storage, see `tag.rs` for where tasks get it), so every other
//! task has no task storage at all, and this program reads `task->bpf_storage`, finds NULL and
//! returns; the clock is read only after a hit. A task that has storage (ours, or another BPF
//! user's) is then looked up by pid in `TASKS`, whose entries the tagging hooks create.
//!
//! `bpf_task_storage_get` is never called here: this hook runs under the run-queue lock, and
//! on kernels before 6.15 (local storage without rqspinlock) a lookup that misses the
//! storage's cache takes the storage's spinlock to fill it, the lock under which storage is
//! allocated and freed (which may wake kswapd or a kworker: a run-queue lock). That is an
//! ABBA between CPUs, made likely when an agent restart leaves the old map and the new one
//! sharing a cache slot. A pointer read and a hash lookup (RCU only) cannot deadlock.
//!
//! For tagged tasks we keep, in `TASKS`, the state they left the CPU in and when, and at each
//! switch-out the kernel's own totals of time on a CPU (`se.sum_exec_runtime`) and time waiting
//! for one (`sched_info.run_delay`): no wakeup hook is needed for either. Per unit and CPU we
//! keep the last time one of them ran and a log2 histogram of run-queue waits: between two
//! switch-outs a task arrives on a CPU once, so the growth of `run_delay` is that one wait.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use selfheal_common::sched::{TASK_RUNNING, TaskStat, runq_bucket};

use crate::{
    maps::{TASKS, UNIT_SCHED},
    task,
};

#[btf_tracepoint(function = "sched_switch")]
#[inline(always)]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    // Each task is checked on its own: LLVM would merge "neither has storage" into an OR of
    // the two pointers, which the verifier rejects (`pointer |= pointer prohibited`).
    let mut now = 0;
    if let Some(stat) = tracked(prev) {
        // SAFETY: helper without preconditions.
        now = unsafe { bpf_ktime_get_ns() };
        let prev_state: u64 = ctx.arg(3);
        switched_out(prev, stat, prev_state as u32, now);
    }
    if let Some(stat) = tracked(next) {
        if now == 0 {
            // SAFETY: helper without preconditions.
            now = unsafe { bpf_ktime_get_ns() };
        }
        switched_in(stat, now);
    }
    0
}

/// The task's entry in `TASKS`, if it is a tagged task of a monitored unit. Tasks without
/// task storage (all but a handful on a host) cost one pointer read.
#[inline(always)]
fn tracked(task: *const u8) -> Option<&'static mut TaskStat> {
    if !task::has_local_storage(task) {
        return None;
    }
    let pid = task::pid(task).ok()?;
    // SAFETY: a pointer to the map value, valid for this program run; nothing else in this
    // program holds it.
    TASKS.get_ptr_mut(&pid).map(|stat| unsafe { &mut *stat })
}

#[inline(always)]
fn switched_out(prev: *const u8, stat: &mut TaskStat, state: u32, now: u64) {
    let exec = task::sum_exec_runtime(prev);
    let run_delay = task::run_delay(prev);
    let unit = stat.unit;
    if run_delay > stat.run_delay_ns {
        waited(unit, run_delay - stat.run_delay_ns);
    }
    stat.on_cpu = 0;
    stat.state = state;
    stat.since_ns = now;
    stat.oncpu_ns = exec;
    stat.run_delay_ns = run_delay;
    if state == TASK_RUNNING {
        stat.involuntary += 1;
    } else {
        stat.voluntary += 1;
    }
    ran(unit, now);
}

#[inline(always)]
fn switched_in(stat: &mut TaskStat, now: u64) {
    stat.on_cpu = 1;
    stat.state = TASK_RUNNING;
    stat.since_ns = now;
    ran(stat.unit, now);
}

#[inline(always)]
fn ran(unit: u32, now: u64) {
    if let Some(agg) = UNIT_SCHED.get_ptr_mut(unit) {
        // SAFETY: per-CPU slot of this unit.
        unsafe { (*agg).last_ran_ns = now };
    }
}

#[inline(always)]
fn waited(unit: u32, ns: u64) {
    if let Some(agg) = UNIT_SCHED.get_ptr_mut(unit) {
        let bucket = runq_bucket(ns);
        // SAFETY: per-CPU slot of this unit; bucket < RUNQ_BUCKETS by construction.
        unsafe {
            if let Some(slot) = (*agg).runq_hist.get_mut(bucket) {
                *slot += 1;
            }
        }
    }
}
