//! Where tasks get (and lose) their `TASK_TAGS` tag: wherever they join or leave a monitored
//! unit, never by a lookup inside `sched_switch`.
//!
//! - tp_btf `sched_process_fork(parent, child)`: a child of a tagged task inherits its tag (it
//!   starts in its parent's cgroup); a child of an untagged task is looked up by its own cgroup,
//!   because systemd forks a service's first process straight into the unit's cgroup
//!   (`CLONE_INTO_CGROUP`), which the cgroup hook below never sees.
//! - tp_btf `cgroup_attach_task(dst_cgrp, path, task, threadgroup)`: a task written into a
//!   cgroup is tagged when the v2 destination is monitored and untagged otherwise. For a whole
//!   thread group the kernel traces only the leader; the agent runs the walk below when it
//!   finds threads the kernel did not tag.
//! - `iter/task` `tag_walk`: run by the agent when a unit starts being watched (its cgroups are
//!   adopted before the walk, so every task that joins later is seen by the hooks above): tags
//!   the tasks of monitored cgroups and untags those that left them.
//!
//! Forks and cgroup moves are rare next to context switches: a cgroup lookup here is cheap.
//!
//! `TASKS`, what the scheduler hook updates, follows the tags: a forked child gets its entry
//! here (runnable, as a new task is); a task tagged by a move or the walk gets it from the
//! agent, which seeds every task of a unit it does not find in `TASKS` with its state from
//! /proc; a task that changes unit has its entry's unit changed; an untagged task loses it.
//! The scheduler hook itself never allocates.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use selfheal_common::{
    counters::Counter,
    sched::{TASK_RUNNING, TaskStat, TaskTag},
};

use crate::{
    local_storage::TASK_TAGS,
    maps::{MONITORED_CGROUPS, TASKS, count},
    task,
};

#[btf_tracepoint(function = "sched_process_fork")]
#[inline(always)]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    let tag = match TASK_TAGS.get(parent) {
        // SAFETY: a pointer to the parent's storage, valid for this program run.
        Some(tag) => Some(unsafe { *tag }),
        None => monitored_unit(task::task_cgroup_id(child)),
    };
    if let Some(tag) = tag {
        TASK_TAGS.set(child, &tag);
        count(Counter::TasksTagged);
        let _ = track_new(child, tag.unit);
    }
    0
}

/// A new task's `TASKS` entry: runnable since now, nothing run yet.
#[inline(always)]
fn track_new(child: *const u8, unit: u32) -> Result<(), i64> {
    let stat = TaskStat {
        tgid: task::tgid(child)?,
        unit,
        state: TASK_RUNNING,
        // SAFETY: helper without preconditions.
        since_ns: unsafe { bpf_ktime_get_ns() },
        ..TaskStat::default()
    };
    TASKS
        .insert(&task::pid(child)?, &stat, 0)
        .map_err(i64::from)
}

#[btf_tracepoint(function = "cgroup_attach_task")]
#[inline(always)]
pub fn cgroup_attach_task(ctx: BtfTracePointContext) -> i32 {
    let cgroup: *const u8 = ctx.arg(0);
    let moved: *const u8 = ctx.arg(2);
    if !task::cgroup_is_v2(cgroup) {
        return 0;
    }
    retag(moved, monitored_unit(task::cgroup_id(cgroup)));
    0
}

/// Tags every task of a monitored cgroup, untags the others. `ctx` points to
/// `struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }`; the
/// task is NULL once, at the end of the walk.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub extern "C" fn tag_walk(ctx: *const *const u8) -> i32 {
    // SAFETY: the second field of the iterator context, which the verifier checks.
    let task = unsafe { core::ptr::read_volatile(ctx.add(1)) };
    if task.is_null() {
        return 0;
    }
    retag(task, monitored_unit(task::task_cgroup_id(task)));
    0
}

#[inline(always)]
fn monitored_unit(cgroup_id: Result<u64, i64>) -> Option<TaskTag> {
    let id = cgroup_id.ok()?;
    // SAFETY: copied out at once.
    let unit = unsafe { MONITORED_CGROUPS.get(&id) }.copied()?;
    Some(TaskTag {
        unit: unit.unit,
        _pad: 0,
    })
}

#[inline(always)]
fn retag(task: *const u8, tag: Option<TaskTag>) {
    let current = TASK_TAGS.get(task);
    match (tag, current) {
        // SAFETY: a pointer to the task's storage, valid for this program run.
        (Some(tag), Some(old)) if unsafe { *old } == tag => {}
        (Some(tag), _) => {
            TASK_TAGS.set(task, &tag);
            count(Counter::TasksTagged);
            if let Ok(pid) = task::pid(task)
                && let Some(stat) = TASKS.get_ptr_mut(&pid)
            {
                // SAFETY: a pointer to the map value, valid for this program run.
                unsafe { (*stat).unit = tag.unit };
            }
        }
        (None, Some(_)) => {
            TASK_TAGS.remove(task);
            count(Counter::TasksUntagged);
            if let Ok(pid) = task::pid(task) {
                let _ = TASKS.remove(&pid);
            }
        }
        (None, None) => {}
    }
}
