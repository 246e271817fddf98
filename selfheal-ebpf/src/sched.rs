//! Hooks: tp_btf `sched_switch`, `sched_wakeup` and `sched_wakeup_new`.
//!
//! Kernel prototypes (5.18+): `trace_sched_switch(bool preempt, struct task_struct *prev,
//! struct task_struct *next, unsigned int prev_state)`, called with `prev` as current;
//! `trace_sched_wakeup(struct task_struct *p)` and `trace_sched_wakeup_new(struct task_struct
//! *p)`, the latter from `wake_up_new_task()` in the forking parent's context.
//!
//! For tasks of monitored units we keep, in `TASKS`, the state they left the CPU in, when,
//! their total CPU time, voluntary and involuntary switch counts and since when they wait for a
//! CPU; per unit and CPU, the last time one of them ran and a log2 histogram of run-queue
//! waits. Everything else costs one cgroup-id lookup (prev) and one pid lookup (next).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use selfheal_common::sched::{TASK_RUNNING, TaskStat, runq_bucket};

use crate::{
    maps::{TASKS, UNIT_SCHED, current_unit},
    task,
};

#[btf_tracepoint(function = "sched_switch")]
#[inline(always)]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_switch(&ctx);
    0
}

#[inline(always)]
fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), i64> {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };

    // prev (the current task) leaves the CPU.
    if let Some((_, unit)) = current_unit() {
        let pid_tgid = bpf_get_current_pid_tgid();
        let pid = pid_tgid as u32;
        let prev_state: u64 = ctx.arg(3);
        let state = prev_state as u32;
        match TASKS.get_ptr_mut(&pid) {
            Some(stat) => {
                // SAFETY: a pointer into the map value, valid for this program run.
                let stat = unsafe { &mut *stat };
                if stat.on_cpu != 0 {
                    stat.oncpu_ns += now.saturating_sub(stat.since_ns);
                }
                switched_out(stat, state, now);
            }
            None => {
                let mut stat = TaskStat {
                    tgid: (pid_tgid >> 32) as u32,
                    unit: unit.unit,
                    ..TaskStat::default()
                };
                switched_out(&mut stat, state, now);
                let _ = TASKS.insert(&pid, &stat, 0);
            }
        }
        ran(unit.unit, now);
    }

    // next enters the CPU.
    let next: *const u8 = ctx.arg(2);
    let pid = task::pid(next)?;
    if let Some(stat) = TASKS.get_ptr_mut(&pid) {
        // SAFETY: as above.
        let stat = unsafe { &mut *stat };
        if stat.runnable_since_ns != 0 {
            waited(stat.unit, now.saturating_sub(stat.runnable_since_ns));
            stat.runnable_since_ns = 0;
        }
        stat.on_cpu = 1;
        stat.state = TASK_RUNNING;
        stat.since_ns = now;
        ran(stat.unit, now);
    }
    Ok(())
}

#[inline(always)]
fn switched_out(stat: &mut TaskStat, state: u32, now: u64) {
    stat.on_cpu = 0;
    stat.state = state;
    stat.since_ns = now;
    if state == TASK_RUNNING {
        // Preempted: still runnable, now waiting for a CPU again.
        stat.involuntary += 1;
        stat.runnable_since_ns = now;
    } else {
        stat.voluntary += 1;
        stat.runnable_since_ns = 0;
    }
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

#[btf_tracepoint(function = "sched_wakeup")]
#[inline(always)]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_wakeup(&ctx);
    0
}

#[inline(always)]
fn try_sched_wakeup(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let p: *const u8 = ctx.arg(0);
    let pid = task::pid(p)?;
    if let Some(stat) = TASKS.get_ptr_mut(&pid) {
        // SAFETY: as above.
        let stat = unsafe { &mut *stat };
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        stat.state = TASK_RUNNING;
        stat.since_ns = now;
        if stat.on_cpu == 0 {
            stat.runnable_since_ns = now;
        }
    }
    Ok(())
}

#[btf_tracepoint(function = "sched_wakeup_new")]
#[inline(always)]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_wakeup_new(&ctx);
    0
}

#[inline(always)]
fn try_sched_wakeup_new(ctx: &BtfTracePointContext) -> Result<(), i64> {
    // The forking parent is current: the child starts in its cgroup.
    let Some((_, unit)) = current_unit() else {
        return Ok(());
    };
    let p: *const u8 = ctx.arg(0);
    let pid = task::pid(p)?;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let stat = TaskStat {
        tgid: task::tgid(p)?,
        unit: unit.unit,
        state: TASK_RUNNING,
        since_ns: now,
        runnable_since_ns: now,
        ..TaskStat::default()
    };
    let _ = TASKS.insert(&pid, &stat, 0);
    Ok(())
}
