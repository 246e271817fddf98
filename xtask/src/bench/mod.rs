//! `cargo xtask bench`: overhead, latency, footprint and scale of the agent, measured side by
//! side in one run (absolute times drift on shared machines, ratios hold), written to
//! `target/bench/report.md` (and, for the full run, `docs/performance.md`).

mod bpf;
mod compare;
mod detection;
mod harness;
mod install;
mod latency;
mod overhead;
mod perf;
mod profile;
mod report;
mod scale;
mod stats;
mod sys;
mod thousand;

use std::{process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::{cmd, setup};
use harness::Bins;
use report::{RunFacts, Section};

/// How much of everything to run: `--quick` is a sanity check (~5 min), the default the real
/// measurement (~30 min at most).
pub struct Plan {
    pub rounds: usize,
    /// Runs per condition and round.
    pub reps: usize,
    pub pingpong_round_trips: u64,
    /// `perf bench sched pipe -l`: round trips per run.
    pub perf_pipe_loops: u64,
    /// `perf bench sched messaging -g 4 -l`: messages per sender per run.
    pub perf_messaging_loops: u64,
    pub syscalls: u64,
    pub wrk_seconds: u64,
    pub exit_samples: usize,
    pub crash_samples: usize,
    pub stall_threshold_s: u64,
    pub stall_units: usize,
    pub leak_limit: u64,
    pub leak_rate: u64,
    pub leak_window_s: u64,
    pub load_units: usize,
    /// Ping-pong round trips per second per load unit: 4 scheduler events each.
    pub load_rate: u64,
    pub load_seconds: u64,
    pub idle_seconds: u64,
    /// How long the many-units agent settles before it is measured idle (a refresh period:
    /// `sensors::sched::REFRESH_PASSES` ticks).
    pub settle_seconds: u64,
    pub burst_units: usize,
    pub burst_exits: u64,
    pub many_units: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                rounds: 3,
                reps: 1,
                pingpong_round_trips: 50_000,
                perf_pipe_loops: 50_000,
                perf_messaging_loops: 50,
                syscalls: 1_000_000,
                wrk_seconds: 1,
                exit_samples: 100,
                crash_samples: 20,
                stall_threshold_s: 5,
                stall_units: 1,
                leak_limit: 256,
                leak_rate: 10,
                leak_window_s: 20,
                load_units: 100,
                load_rate: 240,
                load_seconds: 10,
                idle_seconds: 5,
                settle_seconds: 10,
                burst_units: 4,
                burst_exits: 2_000,
                many_units: 200,
            }
        } else {
            Plan {
                rounds: 10,
                reps: 3,
                pingpong_round_trips: 200_000,
                perf_pipe_loops: 200_000,
                perf_messaging_loops: 200,
                syscalls: 3_000_000,
                wrk_seconds: 2,
                exit_samples: 1_000,
                crash_samples: 100,
                stall_threshold_s: 5,
                stall_units: 3,
                leak_limit: 600,
                leak_rate: 10,
                leak_window_s: 30,
                load_units: 100,
                load_rate: 240,
                load_seconds: 30,
                idle_seconds: 20,
                settle_seconds: 60,
                burst_units: 8,
                burst_exits: 10_000,
                many_units: 1_000,
            }
        }
    }
}

/// The parts `--only` can name, in the order they run.
const PARTS: [&str; 8] = [
    "overhead",
    "exit-event",
    "crash-restart",
    "detection",
    "compare",
    "footprint",
    "bursts",
    "many-units",
];

pub fn bench(quick: bool, only: &[String]) -> anyhow::Result<()> {
    if let Some(unknown) = only.iter().find(|p| !PARTS.contains(&p.as_str())) {
        bail!(
            "--only {unknown}: no such bench part (the parts are {})",
            PARTS.join(", ")
        );
    }
    let wanted = |part: &str| only.is_empty() || only.iter().any(|p| p == part);
    if !cmd::is_root() {
        bail!(
            "the bench loads eBPF programs and runs systemd sandboxes: run `cargo xtask bench` as root"
        );
    }
    setup::ensure()?;
    install::ensure_packages()?;
    println!("xtask bench: building the agent and the workloads (release)");
    cmd::run(cmd::cargo().args([
        "build",
        "--release",
        "-p",
        "selfheal-agent",
        "-p",
        "selfheal-tests",
        "--bins",
    ]))?;
    let release = cmd::target_dir().join("release");
    let bins = Bins {
        agent: release.join("selfheal-agent"),
        workload: release.join("selfheal-workload"),
    };
    // SAFETY: nothing else runs yet: xtask is single-threaded until the bench starts sandboxes.
    unsafe {
        std::env::set_var("SELFHEAL_AGENT", &bins.agent);
        std::env::set_var("SELFHEAL_WORKLOAD", &bins.workload);
    }

    let plan = Plan::new(quick);
    let began = Instant::now();
    let load_before = sys::load_average();
    let foreign_before = bpf::foreign_sched_programs(None);
    let mut sections = Vec::new();
    if wanted("overhead") {
        sections.push(section("Overhead", || overhead::run(&bins, &plan)));
    }
    if ["exit-event", "crash-restart", "detection"]
        .iter()
        .any(|p| wanted(p))
    {
        sections.push(section("Detection and reaction latency", || {
            let mut s = Section::new("Detection and reaction latency");
            if wanted("exit-event") {
                part(&mut s, "exit → event", |s| {
                    latency::exit_to_event(&bins, &plan, s)
                });
            }
            if wanted("crash-restart") {
                part(&mut s, "crash → restart", |s| {
                    latency::exit_to_restart(&bins, &plan, s)
                });
            }
            if wanted("detection") {
                part(&mut s, "stall and leak detection", |s| {
                    detection::run(&bins, &plan, s)
                });
            }
            Ok(s)
        }));
    }
    if wanted("compare") {
        sections.push(section(
            "Side by side: selfheal, systemd's Restart=, monit",
            || compare::run(&bins, &plan),
        ));
    }
    if ["footprint", "bursts", "many-units"]
        .iter()
        .any(|p| wanted(p))
    {
        sections.push(section("Footprint and scale", || {
            let mut s = Section::new("Footprint and scale");
            if wanted("footprint") {
                part(&mut s, "footprint", |s| scale::run(&bins, &plan, s));
            }
            if wanted("bursts") {
                part(&mut s, "exit bursts", |s| scale::burst(&bins, &plan, s));
            }
            if wanted("many-units") {
                part(&mut s, "many units", |s| thousand::run(&plan, s));
            }
            Ok(s)
        }));
    }
    let facts = RunFacts {
        flags: format!(
            "{}{}",
            if quick { " --quick" } else { "" },
            if only.is_empty() {
                String::new()
            } else {
                format!(" --only {}", only.join(","))
            }
        ),
        machine: sys::machine(),
        date: cmd::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load_before,
        load_after: sys::load_average(),
        foreign_agents: format!(
            "{foreign_before} `sched_switch` programs of other agents at the start, {} at the \
             end (tests running beside the bench: their probes run on every context switch of \
             every workload here, in all conditions alike)",
            bpf::foreign_sched_programs(None)
        ),
        duration_s: began.elapsed().as_secs(),
    };
    let text = report::render(&facts, &sections);
    let path = cmd::target_dir().join("bench/report.md");
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "\n{}",
        text.split("\n## ")
            .nth(1)
            .map(|t| format!("## {t}"))
            .unwrap_or_default()
    );
    println!("xtask bench: report written to {}", path.display());
    if !quick && only.is_empty() {
        let docs = cmd::workspace_root().join("docs/performance.md");
        std::fs::create_dir_all(docs.parent().expect("has a parent"))?;
        std::fs::write(&docs, &text)?;
        println!(
            "xtask bench: and to {} (commit it with the README's summary)",
            docs.display()
        );
    }
    Ok(())
}

/// Runs one part of a section; a failure is said in the section, and the other parts still run.
fn part(section: &mut Section, what: &str, f: impl FnOnce(&mut Section) -> anyhow::Result<()>) {
    if let Err(e) = f(section) {
        eprintln!("xtask bench: {what} failed: {e:#}");
        section.line(format!("\n**{what}: not measured**: {e:#}\n"));
    }
}

/// Runs one section; a failure becomes the section's text, and the other sections still run.
fn section(title: &str, f: impl FnOnce() -> anyhow::Result<Section>) -> Section {
    let start = Instant::now();
    let result = f();
    println!(
        "xtask bench: {title}: {:.0} s",
        start.elapsed().as_secs_f64()
    );
    result.unwrap_or_else(|e| {
        eprintln!("xtask bench: {title} failed: {e:#}");
        Section::failed(title, &e)
    })
}
