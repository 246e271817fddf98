//! More workload modes for `selfheal-workload`, one module per family (stalls, leaks…). Each
//! module exposes `run(mode, args) -> Option<Result<ExitCode, String>>` (None: not its mode)
//! and a line of usage.

use std::process::ExitCode;

/// Usage of the modes below, one line each.
pub const USAGE: &str = "";

/// Runs `mode` if one of the families knows it.
pub fn run(mode: &str, args: &[String]) -> Option<Result<ExitCode, String>> {
    let families: [fn(&str, &[String]) -> Option<Result<ExitCode, String>>; 0] = [];
    families.iter().find_map(|family| family(mode, args))
}
