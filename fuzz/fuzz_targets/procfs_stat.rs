//! /proc/TID/stat and /proc/TID/status: a task names itself (comm), so its own process
//! controls part of what the agent parses. The input is both texts, split at the first NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_agent::sensors::procfs::parse_task_stat;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (stat, status) = text.split_once('\0').unwrap_or((text, ""));
    let _ = parse_task_stat(stat, status);
});
