//! Hook: tp_btf `sched_process_exit`.
//!
//! Kernel prototype (6.16+): `trace_sched_process_exit(struct task_struct *p, bool group_dead)`,
//! called from `do_exit()` after `tsk->exit_code = code`, in the context of the exiting task.
//! Older kernels pass only `p`: userspace then sets `HAS_GROUP_DEAD = 0` and we treat the
//! exit of the thread-group leader as the process exit.
//! `task_struct::exit_code` has no stable offset: see `task.rs`.
//!
//! Exits are classified here, so that a fork-heavy unit (a shell script, a CGI server) does
//! not send userspace a record per child: a record is written only for what userspace acts on
//! or reports — a process whose parent is outside the unit (the service manager: the main
//! process, an ExecStartPre, a daemon's reparented child), one that the OOM killer chose, or
//! one that died by a signal or with a non-zero status. Clean exits of the unit's own children
//! are only counted, per unit (`UNIT_EXITS`). A record the ring buffer has no room for is
//! counted per unit too, so the agent knows which unit to resync from systemd.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use selfheal_common::{
    counters::Counter,
    exit::{EXIT_FLAG_GROUP_LEADER, EXIT_FLAG_OOM_KILLED, ExitEvent, UnitExits},
};

use crate::{
    maps::{EVENTS, MONITORED_CGROUPS, OOM_VICTIMS, TASKS, UNIT_EXITS, count, current_unit},
    task,
};

/// 1 when the tracepoint passes `group_dead` as its second argument (set by the agent).
#[unsafe(no_mangle)]
static HAS_GROUP_DEAD: u32 = 0;

#[btf_tracepoint(function = "sched_process_exit")]
#[inline(always)]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_sched_process_exit(&ctx);
    0
}

#[inline(always)]
fn try_sched_process_exit(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let Some((cgroup_id, unit)) = current_unit() else {
        return Ok(());
    };
    count(Counter::ThreadExits);
    let _ = TASKS.remove(&(bpf_get_current_pid_tgid() as u32));

    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: globals are plain integers written by the loader before the program runs.
    let has_group_dead = unsafe { core::ptr::read_volatile(&HAS_GROUP_DEAD) } != 0;
    let process_exited = if has_group_dead {
        let group_dead: u64 = ctx.arg(1);
        group_dead & 0xff != 0
    } else {
        pid == tgid
    };
    if !process_exited {
        return Ok(());
    }
    count(Counter::ProcessExits);

    let task: *const u8 = ctx.arg(0);
    let exit_code = task::exit_code(task).unwrap_or(0);
    let parent = task::parent(task).ok();
    let ppid = parent.and_then(|p| task::tgid(p).ok()).unwrap_or(0);

    let mut flags = 0;
    if pid == tgid {
        flags |= EXIT_FLAG_GROUP_LEADER;
    }
    // SAFETY: value copied before removal.
    if unsafe { OOM_VICTIMS.get(&tgid) }.is_some() {
        flags |= EXIT_FLAG_OOM_KILLED;
        let _ = OOM_VICTIMS.remove(&tgid);
    }
    let parent_in_unit = parent
        .and_then(|p| task::task_cgroup_id(p).ok())
        // SAFETY: copied out at once.
        .and_then(|id| unsafe { MONITORED_CGROUPS.get(&id) }.copied())
        .is_some_and(|p| p.unit == unit.unit);
    if parent_in_unit && exit_code == 0 && flags & EXIT_FLAG_OOM_KILLED == 0 {
        unit_exits(unit.unit, |e| e.quiet += 1);
        count(Counter::ExitsCounted);
        return Ok(());
    }

    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        unit_exits(unit.unit, |e| e.lost += 1);
        count(Counter::EventsLost);
        return Ok(());
    };
    entry.write(ExitEvent {
        // SAFETY: helper without preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id,
        pid,
        tgid,
        exit_code,
        unit: unit.unit,
        flags,
        ppid,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    entry.submit(0);
    count(Counter::EventsSubmitted);
    Ok(())
}

#[inline(always)]
fn unit_exits(unit: u32, bump: impl FnOnce(&mut UnitExits)) {
    if let Some(slot) = UNIT_EXITS.get_ptr_mut(unit) {
        // SAFETY: per-CPU slot of this unit.
        bump(unsafe { &mut *slot });
    }
}
