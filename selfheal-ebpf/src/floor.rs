//! Empty programs on the hot hooks: `return 0` and nothing else. The agent attaches them only
//! when the bench asks (`SELFHEAL_BENCH_FLOOR=1`), beside the real programs, so that
//! `run_time_ns / run_cnt` of each real program can be read against the cost of merely being
//! called on the same hook with stats on: the dispatch floor. Never attached in production.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "sched_switch")]
pub fn floor_switch(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn floor_fork(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn floor_exit(_ctx: BtfTracePointContext) -> i32 {
    0
}
