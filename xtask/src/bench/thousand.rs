//! Many monitored units: the time the agent takes to attach to all of them, to refresh its view
//! after all of them restart, and its memory and CPU while it watches them.

use std::{
    collections::HashMap,
    fmt::Write as _,
    thread,
    time::{Duration, Instant},
};

use selfheal_tests::{Sandbox, agent::Agent, service_unit};

use super::{
    Plan, bpf, harness,
    report::{Section, Target},
    sys,
};

const TEMPLATE: &str = "bench-many@.service";
const CHUNK: usize = 200;
const TIMEOUT: Duration = Duration::from_secs(300);

fn instance(i: usize) -> String {
    format!("bench-many@{i}.service")
}

/// systemctl over the instances, `CHUNK` at a time (argument lists stay short).
fn systemctl_all(sandbox: &Sandbox, verb: &str, names: &[String]) -> anyhow::Result<()> {
    for chunk in names.chunks(CHUNK) {
        let mut args = vec![verb];
        args.extend(chunk.iter().map(String::as_str));
        sandbox.systemctl(&args)?;
    }
    Ok(())
}

/// Main pid of every instance, as systemd says.
fn systemd_pids(sandbox: &Sandbox) -> anyhow::Result<HashMap<String, u64>> {
    let out = sandbox.systemctl(&["show", "bench-many@*.service", "-p", "Id", "-p", "MainPID"])?;
    let mut pids = HashMap::new();
    for block in out.split("\n\n") {
        let get = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::to_owned)
        };
        if let (Some(id), Some(pid)) = (get("Id="), get("MainPID=")) {
            pids.insert(id, pid.parse().unwrap_or(0));
        }
    }
    Ok(pids)
}

/// How many instances the agent shows with a cgroup and the main pid systemd has.
fn in_step(agent: &Agent, pids: &HashMap<String, u64>) -> anyhow::Result<usize> {
    let status = agent.status()?;
    Ok(status["units"].as_array().map_or(0, |units| {
        units
            .iter()
            .filter(|u| u["cgroup_id"].as_u64().is_some())
            .filter(|u| {
                let name = u["name"].as_str().unwrap_or_default();
                pids.get(name)
                    .is_some_and(|p| *p != 0 && u["main_pid"].as_u64() == Some(*p))
            })
            .count()
    }))
}

fn wait_in_step(
    agent: &Agent,
    pids: &HashMap<String, u64>,
    n: usize,
) -> anyhow::Result<Option<Duration>> {
    let start = Instant::now();
    while start.elapsed() < TIMEOUT {
        if in_step(agent, pids)? >= n {
            return Ok(Some(start.elapsed()));
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(None)
}

pub fn run(plan: &Plan, section: &mut Section) -> anyhow::Result<()> {
    let n = plan.many_units;
    println!("xtask bench: {n} monitored units");
    let sandbox = Sandbox::start("bench-many")?;
    harness::install_units(
        &sandbox,
        &[(
            TEMPLATE.into(),
            service_unit("many", "/bin/sleep infinity", &[]),
        )],
    )?;
    let names: Vec<String> = (0..n).map(instance).collect();
    systemctl_all(&sandbox, "start", &names)?;
    let pids = systemd_pids(&sandbox)?;
    anyhow::ensure!(
        pids.values().filter(|p| **p != 0).count() >= n,
        "not all {n} units started"
    );

    let mut toml = String::from("[defaults]\nrestart = \"never\"\n\n");
    for name in &names {
        let _ = writeln!(toml, "[[unit]]\nname = \"{name}\"");
    }
    let spawned = Instant::now();
    let agent = Agent::start(&sandbox, &toml, &[])?;
    let attach = wait_in_step(&agent, &pids, n)?.map(|_| spawned.elapsed());
    let pid = harness::agent_pid(&agent)?;
    // Idle means settled: every unit read in full once since the agent attached (a refresh
    // period), so the first readings' one-off changes (PSI decaying after the mass start, a
    // trend's shape) are behind.
    let settle = plan.settle_seconds;
    println!("xtask bench: agent {pid} attached; letting it settle for {settle} s");
    thread::sleep(Duration::from_secs(settle));
    let before = sys::usage(pid)?;
    // Said so that a profiler can be pointed at the idle agent (docs/performance.md).
    println!(
        "xtask bench: agent {pid} watches {n} units; idle for {} s",
        plan.idle_seconds
    );
    // What the machine charges for cold memory, measured meanwhile on the other core: an idle
    // agent's CPU is about its pass's working set times this.
    let cold = thread::spawn(sys::cold_page_ns);
    thread::sleep(Duration::from_secs(plan.idle_seconds));
    let after = sys::usage(pid)?;
    let idle_cpu = sys::cpu_percent(&before, &after);
    let cold_page_ns = cold.join().unwrap_or(f64::NAN);
    // One tick and a bit: the pages one pass (or two) touches.
    let touched_kib = sys::touched_private_kib(pid, Duration::from_millis(1200))?;

    let restart_issued = Instant::now();
    sandbox.systemctl(&["restart", "bench-many@*.service"])?;
    let systemd_done = restart_issued.elapsed();
    let new_pids = systemd_pids(&sandbox)?;
    let changed = new_pids
        .iter()
        .filter(|(k, v)| pids.get(*k) != Some(v))
        .count();
    let refreshed = wait_in_step(&agent, &new_pids, n)?.map(|_| restart_issued.elapsed());
    let usage = sys::usage(pid)?;
    let maps: u64 = bpf::maps_of(pid)
        .unwrap_or_default()
        .iter()
        .map(|(_, b)| b)
        .sum();
    drop(agent);
    let _ = systemctl_all(&sandbox, "stop", &names);

    let secs = |d: Option<Duration>| {
        d.map_or("not within 300 s".into(), |d| {
            format!("{:.2} s", d.as_secs_f64())
        })
    };
    section.line(format!(
        "\n**{n} monitored units** (`bench-many@1..{n}.service`, each `/bin/sleep infinity`, all \
         running before the agent starts). Attach = agent spawned → its status shows every unit \
         with a cgroup id and the main pid systemd reports: {}. Idle over {} s with {n} units, once \
         settled ({settle} s after attaching): RSS \
         {:.1} MiB, CPU {idle_cpu:.2} % of a core; an idle pass touches {:.1} MiB of private \
         memory, and touching a page that went cold costs {:.1} µs on this machine now (a cache \
         miss on bare metal: well under 1 µs). Refresh = `systemctl --user restart \
         'bench-many@*'` issued → the agent shows every new main pid ({changed} changed): \
         systemd finished its jobs after {:.2} s, the agent was in step after {}. After: RSS \
         {:.1} MiB (peak {:.1} MiB), BPF maps {:.1} MiB.\n",
        secs(attach),
        plan.idle_seconds,
        after.rss_kib as f64 / 1024.0,
        touched_kib as f64 / 1024.0,
        cold_page_ns / 1000.0,
        systemd_done.as_secs_f64(),
        secs(refreshed),
        usage.rss_kib as f64 / 1024.0,
        usage.hwm_kib as f64 / 1024.0,
        maps as f64 / 1048576.0
    ));
    section.targets.push(Target::new(
        &format!("{n} idle units: agent CPU / RSS"),
        "≤ 1 % / ≤ 40 MiB",
        format!("{idle_cpu:.2} % / {:.1} MiB", after.rss_kib as f64 / 1024.0),
        Some(idle_cpu <= 1.0 && after.rss_kib <= 40 * 1024),
    ));
    section.targets.push(Target::new(
        &format!("{n} idle units: private memory an idle pass touches / cold page cost"),
        "(reported)",
        format!(
            "{:.1} MiB / {:.1} µs",
            touched_kib as f64 / 1024.0,
            cold_page_ns / 1000.0
        ),
        None,
    ));
    section.targets.push(Target::new(
        &format!("{n} monitored units: attach / refresh after restart / RSS after"),
        "(reported)",
        format!(
            "{} / {} / {:.1} MiB",
            secs(attach),
            secs(refreshed),
            usage.rss_kib as f64 / 1024.0
        ),
        None,
    ));
    if idle_cpu > 1.0 {
        section.notes.push(format!(
            "With {n} idle units the agent uses {idle_cpu:.1} % of a core; an idle pass touches \
             {:.1} MiB of private memory and a cold page costs {:.1} µs here now. Still units \
             (nothing ran, every task asleep, nothing in progress) are neither sampled, judged \
             nor republished, and what a pass walks is planned when the unit table changes; what \
             is left is the full read of one unit in 60 (cgroup.threads, the fd table, the \
             resource files: about half of it) and the two batch reads of the kernel's maps. On \
             a machine that charges tens of µs for a page left untouched for a second (some \
             virtual machines), the same passes cost several times more CPU.",
            touched_kib as f64 / 1024.0,
            cold_page_ns / 1000.0
        ));
    }
    if after.rss_kib > 40 * 1024 {
        section.notes.push(format!(
            "With {n} units the agent's RSS is {:.1} MiB idle and {:.1} MiB after the mass \
             restart (target 40 MiB): per-unit state (32 history records, the view, leak series, \
             the scheduler's and the readings' caches) grows with the unit count.",
            after.rss_kib as f64 / 1024.0,
            usage.rss_kib as f64 / 1024.0
        ));
    }
    Ok(())
}
