//! The kernel's own scheduler benchmarks (Debian's linux-perf) as overhead workloads: code no
//! one here wrote, which is how a new user would try the agent. `perf bench sched pipe`: two
//! processes bounce a token over pipes (one op = a round trip, two context switches);
//! `perf bench sched messaging`: groups of senders and receivers over sockets, forking every
//! task anew each run.

use std::path::Path;

use anyhow::Context as _;

/// The `ExecStart=` of a unit that runs `perf bench sched <args>`, takes the figure `awk`
/// extracts and renames it into `out` whole (as the bench's own workloads do). A script file,
/// because systemd would expand awk's `$1` itself.
pub fn exec(
    dir: &Path,
    tag: &str,
    bench_args: &str,
    awk: &str,
    out: &Path,
) -> anyhow::Result<String> {
    let script = dir.join(format!("{tag}.sh"));
    let out = out.display();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nperf bench sched {bench_args} | awk '{awk}' > {out}.tmp\n\
             mv {out}.tmp {out}\n"
        ),
    )
    .with_context(|| format!("writing {}", script.display()))?;
    Ok(format!("/bin/sh {}", script.display()))
}

/// `perf bench sched pipe -l LOOPS`: nanoseconds per round trip.
pub fn pipe_args(loops: u64) -> (String, &'static str) {
    (
        format!("pipe -l {loops}"),
        r#"/usecs\/op/ { printf "%.1f\n", $1 * 1000 }"#,
    )
}

/// `perf bench sched messaging -g GROUPS -l LOOPS`: nanoseconds per run.
pub fn messaging_args(groups: u64, loops: u64) -> (String, &'static str) {
    (
        format!("messaging -g {groups} -l {loops}"),
        r#"/Total time/ { printf "%.0f\n", $3 * 1e9 }"#,
    )
}
