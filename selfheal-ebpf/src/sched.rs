//! Hook: tp_btf `sched_switch`.
//!
//! Kernel prototype (5.18+): `trace_sched_switch(bool preempt, struct task_struct *prev,
//! struct task_struct *next, unsigned int prev_state)`, called with `prev` as current, after
//! the scheduler has updated `prev`'s `se.sum_exec_runtime` and before `next`'s
//! `sched_info.run_delay` takes in its latest wait.
//!
//! Filter first, without hashing: a task of a monitored unit carries a tag in `TASK_TAGS`
//! (task-local storage, see `tag.rs` for where tasks get it), so for every other task this
//! program costs two storage misses and returns; the clock is read only after a hit.
//!
//! For tagged tasks we keep, in `TASKS`, the state they left the CPU in and when, and at each
//! switch-out the kernel's own totals of time on a CPU (`se.sum_exec_runtime`) and time waiting
//! for one (`sched_info.run_delay`): no wakeup hook is needed for either. Per unit and CPU we
//! keep the last time one of them ran and a log2 histogram of run-queue waits: between two
//! switch-outs a task arrives on a CPU once, so the growth of `run_delay` is that one wait.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use selfheal_common::sched::{TASK_RUNNING, TaskStat, runq_bucket};

use crate::{
    local_storage::TASK_TAGS,
    maps::{TASKS, UNIT_SCHED},
    task,
};

#[btf_tracepoint(function = "sched_switch")]
#[inline(always)]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    // Each tag is checked on its own: LLVM would merge "neither is tagged" into an OR of the
    // two pointers, which the verifier rejects (`pointer |= pointer prohibited`).
    let mut now = 0;
    if let Some(tag) = TASK_TAGS.get(prev) {
        // SAFETY: helper without preconditions.
        now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: a pointer to prev's storage, valid for this program run.
        let unit = unsafe { (*tag).unit };
        let prev_state: u64 = ctx.arg(3);
        let _ = switched_out(prev, unit, prev_state as u32, now);
    }
    if let Some(tag) = TASK_TAGS.get(next) {
        if now == 0 {
            // SAFETY: helper without preconditions.
            now = unsafe { bpf_ktime_get_ns() };
        }
        // SAFETY: as above, for next.
        let unit = unsafe { (*tag).unit };
        let _ = switched_in(next, unit, now);
    }
    0
}

#[inline(always)]
fn switched_out(prev: *const u8, unit: u32, state: u32, now: u64) -> Result<(), i64> {
    let pid = task::pid(prev)?;
    let exec = task::sum_exec_runtime(prev);
    let run_delay = task::run_delay(prev);
    let stat = match TASKS.get_ptr_mut(&pid) {
        // SAFETY: a pointer into the map value, valid for this program run.
        Some(stat) => unsafe { &mut *stat },
        None => {
            let stat = TaskStat {
                tgid: task::tgid(prev)?,
                unit,
                run_delay_ns: run_delay,
                ..TaskStat::default()
            };
            TASKS.insert(&pid, &stat, 0).map_err(i64::from)?;
            // SAFETY: as above; the entry was just created.
            unsafe { &mut *TASKS.get_ptr_mut(&pid).ok_or(-1i64)? }
        }
    };
    if run_delay > stat.run_delay_ns {
        waited(unit, run_delay - stat.run_delay_ns);
    }
    stat.unit = unit;
    stat.on_cpu = 0;
    stat.state = state;
    stat.since_ns = now;
    stat.oncpu_ns = exec;
    stat.run_delay_ns = run_delay;
    if state == TASK_RUNNING {
        // Preempted: still runnable.
        stat.involuntary += 1;
    } else {
        stat.voluntary += 1;
    }
    ran(unit, now);
    Ok(())
}

#[inline(always)]
fn switched_in(next: *const u8, unit: u32, now: u64) -> Result<(), i64> {
    let pid = task::pid(next)?;
    if let Some(stat) = TASKS.get_ptr_mut(&pid) {
        // SAFETY: a pointer into the map value, valid for this program run.
        let stat = unsafe { &mut *stat };
        stat.on_cpu = 1;
        stat.state = TASK_RUNNING;
        stat.since_ns = now;
    } else {
        // A task tagged since its last switch-out (a new fork, a moved task).
        let stat = TaskStat {
            tgid: task::tgid(next)?,
            unit,
            on_cpu: 1,
            since_ns: now,
            oncpu_ns: task::sum_exec_runtime(next),
            run_delay_ns: task::run_delay(next),
            ..TaskStat::default()
        };
        let _ = TASKS.insert(&pid, &stat, 0);
    }
    ran(unit, now);
    Ok(())
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
