//! cgroupfs: `*.pressure` and `cpu.stat` in their v2 (µs) and v1 (ns) forms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_agent::sensors::cgroup_stats::{parse_psi_some_avg10, parse_throttling};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_psi_some_avg10(text);
    let _ = parse_throttling(text, "throttled_usec", 1000);
    let _ = parse_throttling(text, "throttled_time", 1);
});
