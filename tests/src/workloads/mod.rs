//! More workload modes for `selfheal-workload`, one module per family (stalls, leaks…). Each
//! module exposes `run(mode, args) -> Option<Result<ExitCode, String>>` (None: not its mode)
//! and a line of usage.

use std::process::ExitCode;

mod bench;
mod leaks;
mod remediation;
mod servers;
mod stalls;

/// Usage of the modes below, one line each.
pub const USAGE: &str = "\
  fail-first COUNTFILE N AFTER_MS   runs 1..=N sleep AFTER_MS then exit 3; later runs stay up (COUNTFILE counts runs)\n\
  connect-loop ADDR OUTFILE        every 200 ms connect to ADDR; OUTFILE holds \"ok N\" or \"fail N\" (N counts tries)\n\
  vfork-hang                       wait in uninterruptible sleep (D) for a vfork child that never execs\n\
  spin THREADS | no-accept PORT | squeeze CGROUP QUOTA_US THREADS   spin without syscalls; listen and never accept; spin in a shared v1 CPU quota (see workloads/stalls.rs)\n\
  leak-fds RATE [ONCE_FILE] | leak-sockets RATE | leak-threads RATE CGROUP MAX | leak-memory MIB_PER_S CGROUP LIMIT_MIB | fd-sawtooth N PERIOD_MS | fd-warm-up N RAMP_MS | hold FDS THREADS SOCKETS   (see workloads/leaks.rs)\n\
  deadlocked-server PORT | echo-server PORT | hold-accepted PORT   workers deadlocked while the acceptor runs; a healthy line echo server; accepted connections never closed (see workloads/servers.rs)\n\
  bench-pingpong N OUT | bench-syscalls N OUT | bench-switcher RATE | bench-exit-children MS | bench-exit-burst N OUT | bench-spin MS OUT | bench-fd-leak PER_S OUT | bench-idle TAG   (cargo xtask bench; see workloads/bench.rs)\n\
";

/// A family's entry point: `None` when `mode` is not one of its modes.
type Family = fn(&str, &[String]) -> Option<Result<ExitCode, String>>;

/// Every family; add yours here.
const FAMILIES: &[Family] = &[
    remediation::run,
    bench::run,
    stalls::run,
    leaks::run,
    servers::run,
];

/// Runs `mode` if one of the families knows it.
pub fn run(mode: &str, args: &[String]) -> Option<Result<ExitCode, String>> {
    FAMILIES.iter().find_map(|family| family(mode, args))
}
