//! More workload modes for `selfheal-workload`, one module per family (stalls, leaks…). Each
//! module exposes `run(mode, args) -> Option<Result<ExitCode, String>>` (None: not its mode)
//! and a line of usage.

use std::process::ExitCode;

mod bench;
mod remediation;

/// Usage of the modes below, one line each.
pub const USAGE: &str = "\
  fail-first COUNTFILE N AFTER_MS   runs 1..=N sleep AFTER_MS then exit 3; later runs stay up (COUNTFILE counts runs)\n\
  connect-loop ADDR OUTFILE        every 200 ms connect to ADDR; OUTFILE holds \"ok N\" or \"fail N\" (N counts tries)\n\
  vfork-hang                       wait in uninterruptible sleep (D) for a vfork child that never execs\n\
  bench-pingpong N OUT | bench-syscalls N OUT | bench-switcher RATE | bench-exit-children MS | bench-exit-burst N OUT | bench-spin MS OUT | bench-fd-leak PER_S OUT | bench-idle TAG   (cargo xtask bench; see workloads/bench.rs)\n\
";

/// Runs `mode` if one of the families knows it.
pub fn run(mode: &str, args: &[String]) -> Option<Result<ExitCode, String>> {
    let families: [fn(&str, &[String]) -> Option<Result<ExitCode, String>>; 2] = [remediation::run, bench::run];
    families.iter().find_map(|family| family(mode, args))
}
