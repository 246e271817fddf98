//! Where the agent spends its CPU: a `perf record -e cpu-clock` of its process (software clock:
//! this machine has no hardware counters), summed by function, when perf is installed.

use std::process::Command;

use crate::cmd;

/// The agent's own functions by share of samples (callees included), largest first.
pub fn top_functions(pid: u32, seconds: u64, dir: &std::path::Path) -> Option<Vec<(String, f64)>> {
    let data = dir.join("perf.data");
    let recorded = cmd::succeeds(
        Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-o"])
            .arg(&data)
            .args(["-p", &pid.to_string(), "--", "sleep", &seconds.to_string()]),
    );
    if !recorded {
        return None;
    }
    let report = cmd::output(
        Command::new("perf")
            .args([
                "report",
                "--children",
                "--sort",
                "symbol",
                "--stdio",
                "-g",
                "none",
                "-i",
            ])
            .arg(&data),
    )?;
    let _ = std::fs::remove_file(&data);
    let mut top: Vec<(String, f64)> = report
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let children: f64 = words.next()?.strip_suffix('%')?.parse().ok()?;
            let symbol = line.split("[.] ").nth(1)?.split_whitespace().next()?;
            symbol.starts_with("selfheal_agent::").then(|| {
                (
                    symbol.trim_start_matches("selfheal_agent::").to_owned(),
                    children,
                )
            })
        })
        .filter(|(symbol, _)| {
            !symbol.contains("{{closure}}") && !symbol.starts_with("daemon::engine::Engine::run")
        })
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(6);
    Some(top)
}
