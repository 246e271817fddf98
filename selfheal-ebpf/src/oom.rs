//! Hook: tracepoint `oom:mark_victim`.
//!
//! Format (6.x): `int pid` at offset 8, then comm and memory figures. It fires in the context
//! of the task that ran the OOM killer, not the victim, so we cannot filter by the current
//! cgroup here: we remember the victim's pid, and `sched_process_exit` (which runs as the
//! victim, and filters) turns it into a flag on the exit record. OOM kills are rare enough
//! that recording every victim costs nothing.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use selfheal_common::counters::Counter;

use crate::maps::{OOM_VICTIMS, count};

const PID_OFFSET: usize = 8;

#[tracepoint(category = "oom", name = "mark_victim")]
#[inline(always)]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    // SAFETY: offset 8 holds the `pid` field of this tracepoint's record.
    if let Ok(pid) = unsafe { ctx.read_at::<i32>(PID_OFFSET) } {
        let _ = OOM_VICTIMS.insert(&(pid as u32), &1, 0);
        count(Counter::OomVictims);
    }
    0
}
