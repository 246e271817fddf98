//! Issue 4 end to end: fds, sockets, threads and memory that leak are found before they run
//! out, with a predicted exhaustion close to the real one, and the unit is restarted; a pool's
//! breathing and a warm-up are not leaks; the counts the agent reports are the kernel's; units
//! that are not monitored are not tracked. Real `systemd --user`, real agent, real workloads
//! (tests/src/workloads/leaks.rs), whose known rates give the real exhaustion times.

use std::{
    collections::{BTreeSet, HashSet},
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use selfheal_tests::agent::{WAIT, audit_lines, restart_done, wait_for_record, workload};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, cgroupfs, service_unit};
use serde_json::Value;

/// The tests' `[unit.leak] window`: trends are judged once half of it is covered, seconds
/// after the agent first sees a unit, long before these workloads exhaust anything.
const WINDOW: Duration = Duration::from_secs(20);
/// How far a predicted exhaustion may be from the real one (issue 4: ±25 %).
const TOLERANCE: f64 = 0.25;
const MIB: u64 = 1 << 20;
/// How long status may trail the audit log: a few sampling passes.
const VIEW_LAG: Duration = Duration::from_secs(5);

#[test]
fn fd_leak_is_detected_before_exhaustion_then_restarted_and_the_restart_verified()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("leak-fd")?;
    let once = sandbox.runtime_dir().join("fds.once");
    let (lines, out) = leak_output(&sandbox, "fds");
    sandbox.install_unit(
        "fds.service",
        &service_unit(
            "fds",
            &workload(&format!("leak-fds 10 {}", once.display())),
            &["LimitNOFILE=1024", &lines],
        ),
    )?;
    // Restarts are verified by the leak clearing, within recovery_timeout.
    let config = format!(
        "[policy]\ncooldown = \"5s\"\nrecovery_timeout = \"20s\"\n\n{}",
        unit_config("fds.service", "", "")
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    start_watched(&sandbox, &agent, &["fds.service"])?;
    let pid = sandbox.main_pid("fds.service")?;
    let leak = leak_started(&out)?;

    let decision = wait_for_problem(&sandbox, &agent, "fds.service", "fd_leak")?;
    assert_predicted(&decision, &leak, 1024.0);
    let text = evidence(&decision);
    let top = format!("top process {pid} (");
    assert!(
        text.starts_with("fds grew from ") && text.contains(&top),
        "{decision:#}"
    );
    assert!(text.contains("limit 1024 ("), "{decision:#}");
    let reason = decision["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("restart attempt 1 of"), "{decision:#}");

    // The default ladder for leaks starts with a restart.
    wait_for_record(&agent, "fds.service", "action", "the restart", restart_done)?;
    let new_pid = sandbox.main_pid("fds.service")?;
    assert_ne!(new_pid, pid, "fds.service kept its main process");
    // The second run does not leak: the restart cured the unit, and the agent must see that
    // (the old processes' leak is gone) rather than fail the recovery and restart again.
    Sandbox::wait_until(
        "the restart to be verified",
        WAIT + Duration::from_secs(20),
        || Ok(agent.unit("fds.service")?["view"]["policy"]["incident"].is_null()),
    )
    .map_err(|err| err.context(agent.log_text()))?;
    let unit = agent.unit("fds.service")?;
    assert_eq!(unit["restarts"], 1, "{unit:#}");
    assert_eq!(
        unit["view"]["policy"]["consecutive_failures"], 0,
        "{unit:#}"
    );
    assert_eq!(sandbox.main_pid("fds.service")?, new_pid, "restarted again");
    Ok(())
}

#[test]
fn socket_leak_is_counted_by_the_kernel_and_detected_before_exhaustion() -> anyhow::Result<()> {
    require_root!();
    // Sockets run into the fd limit: the leak is exhausted when the fds are.
    watched_leak("leak-socket", "socket", 1024.0, |_| {
        ("leak-sockets 10".into(), "LimitNOFILE=1024".into())
    })?;
    Ok(())
}

#[test]
fn thread_leak_is_detected_against_its_pids_limit_before_exhaustion() -> anyhow::Result<()> {
    require_root!();
    let decision = watched_leak("leak-thread", "thread", 400.0, |sandbox| {
        let (cgroup, line) = limit_cgroup(sandbox, "pids", "TasksMax=400");
        (format!("leak-threads 5 {cgroup} 400"), line)
    })?;
    assert!(evidence(&decision).contains("limit 400 ("), "{decision:#}");
    Ok(())
}

#[test]
fn memory_leak_is_detected_against_its_memory_limit_before_exhaustion() -> anyhow::Result<()> {
    require_root!();
    let decision = watched_leak("leak-memory", "memory", (128 * MIB) as f64, |sandbox| {
        let (cgroup, line) = limit_cgroup(sandbox, "memory", "MemoryMax=128M");
        (format!("leak-memory 2 {cgroup} 128"), line)
    })?;
    assert!(
        evidence(&decision).contains("limit 128.0 MiB ("),
        "{decision:#}"
    );
    Ok(())
}

#[test]
fn a_breathing_pool_and_a_warm_up_run_ten_windows_without_a_problem() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("leak-breathing")?;
    // 200 fds opened over 5 s, all closed, again; 360 fds opened over 6 s (under half the
    // window), then kept. Both far from 90 % of their limit, and growing fast enough that a
    // trend mistaken for a leak would exhaust the limit within the hour.
    for (name, args) in [
        ("pool", "fd-sawtooth 200 5000"),
        ("warmup", "fd-warm-up 360 6000"),
    ] {
        let unit = service_unit(name, &workload(args), &["LimitNOFILE=1024"]);
        sandbox.install_unit(&format!("{name}.service"), &unit)?;
    }
    let config = unit_config("pool.service", "", "") + &unit_config("warmup.service", "", "");
    let agent = Agent::start(&sandbox, &config, &[])?;
    start_watched(&sandbox, &agent, &["pool.service", "warmup.service"])?;

    let end = Instant::now() + WINDOW * 10;
    let mut shapes = BTreeSet::new();
    // Every view of the ten windows is checked: a leak shape is a wrong judgement even
    // before it becomes a problem.
    while Instant::now() < end {
        for unit in ["pool.service", "warmup.service"] {
            let view = agent.unit(unit)?["view"].clone();
            if let Some(fd) = resource(&view, "fd") {
                assert_ne!(fd["shape"], "leak", "{unit}: {view:#}");
                assert_eq!(fd["reported"], false, "{unit}: {view:#}");
                shapes.insert(format!(
                    "{unit} {}",
                    fd["shape"].as_str().unwrap_or_default()
                ));
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let problems = audit(&sandbox)?;
    assert!(problems.is_empty(), "problems raised: {problems:#?}");
    for unit in ["pool.service", "warmup.service"] {
        assert_eq!(agent.unit(unit)?["restarts"], 0, "{unit} was restarted");
    }
    // The detector did judge them, and told them apart.
    assert!(shapes.contains("pool.service sawtooth"), "{shapes:?}");
    let warm = ["warmup.service plateau", "warmup.service flat"];
    assert!(
        warm.iter().any(|shape| shapes.contains(*shape)),
        "{shapes:?}"
    );
    Ok(())
}

#[test]
fn counts_are_the_kernels_and_an_unmonitored_leaker_beside_them_is_not_tracked()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("leak-counts")?;
    let steady = workload("hold 40 7 5");
    sandbox.install_unit(
        "steady.service",
        &service_unit("steady", &steady, &["LimitNOFILE=2048"]),
    )?;
    let stranger = workload("leak-sockets 20");
    sandbox.install_unit(
        "stranger.service",
        &service_unit("stranger", &stranger, &["LimitNOFILE=1024"]),
    )?;
    // The stranger would be caught within this window, if it were watched.
    let config = format!(
        "[defaults.leak]\nwindow = \"20s\"\n\n{}",
        unit_config("steady.service", "", "")
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    start_watched(&sandbox, &agent, &["steady.service"])?;
    sandbox.systemctl(&["start", "stranger.service"])?;
    let pid = sandbox.main_pid("steady.service")?;
    let stranger = sandbox.main_pid("stranger.service")?;
    // Both run in the slice where the kernel's socket programs are attached; the stranger
    // leaks long enough to be judged if it were tracked.
    Sandbox::wait_until("the stranger to leak for over half a window", WAIT, || {
        Ok(proc_counts(stranger)?.2 > 250)
    })?;
    // 7 parked threads and the main one; 5 clients and the listener, which come last.
    Sandbox::wait_until("steady.service to hold its resources", WAIT, || {
        Ok(proc_counts(pid)?.1 == 8 && proc_counts(pid)?.2 == 6)
    })?;
    let (fds, threads, sockets) = proc_counts(pid)?;
    assert!(fds >= 46, "40 files and 6 sockets, yet {fds} fds");

    // At this quiescent point the agent's counts are the kernel's: /proc for fds and threads,
    // the inet sockets among the fds for the cgroup_sock programs' count; and the 5 clients'
    // connections (in CLOSE_WAIT: the listener closed its side).
    let mut view = Value::Null;
    let counts = |view: &Value| {
        ["fd", "thread", "socket", "connection"]
            .map(|kind| resource(view, kind).map(|r| r["value"].clone()))
    };
    let expected = [fds, threads, sockets, 5].map(|n| Some(Value::from(n as f64)));
    let waited = Sandbox::wait_until("the agent's counts to match the kernel's", WAIT, || {
        view = agent.unit("steady.service")?["view"].clone();
        Ok(counts(&view) == expected)
    });
    assert!(
        waited.is_ok(),
        "agent {:?} vs kernel {expected:?}: {view:#}",
        counts(&view)
    );
    assert_eq!(proc_counts(pid)?, (fds, threads, sockets), "it moved");
    for kind in ["fd", "socket"] {
        let limit = &resource(&view, kind).expect("listed")["limit"];
        assert_eq!(*limit, 2048.0, "{view:#}");
    }
    // No memory cgroup of its own on hybrid hosts: the one it shares is not the unit's.
    let v2_memory = sandbox
        .unit_cgroup("steady.service")?
        .join("memory.current");
    if !v2_memory.exists() {
        assert!(resource(&view, "memory").is_none(), "{view:#}");
    }
    // The operator's text shows the same numbers against their limits.
    let text = agent.cli(&["status", "--socket", &agent.socket().to_string_lossy()])?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("fd {fds}/2048")), "{text}");
    assert!(text.contains(&format!("socket {sockets}/2048")), "{text}");

    // Nothing at all about the stranger: not in status, no problem, no metric.
    let status = agent.status()?;
    let names: Vec<&str> = status["units"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["steady.service"], "{status:#}");
    let decisions = audit(&sandbox)?;
    assert!(decisions.is_empty(), "{decisions:#?}");
    let metrics = http_get(
        status["agent"]["http"].as_str().unwrap_or_default(),
        "/metrics",
    )?;
    assert!(!metrics.contains("stranger"), "{metrics}");
    assert!(metrics.contains("steady.service"), "{metrics}");
    Ok(())
}

/// Starts `units` once the agent watches their cgroup paths: the kernel then adopts their
/// cgroups as systemd creates them and counts every socket from the first.
fn start_watched(sandbox: &Sandbox, agent: &Agent, units: &[&str]) -> anyhow::Result<()> {
    for unit in units {
        Sandbox::wait_until(&format!("the agent to watch {unit}"), WAIT, || {
            Ok(agent.unit(unit)?["cgroup"].is_string())
        })?;
    }
    sandbox.systemctl(&[&["start"], units].concat())?;
    Ok(())
}

/// A `[[unit]]` with the tests' leak window; `leak` and `remediation` are more lines of its
/// `[unit.leak]` and `[unit.remediation]`.
fn unit_config(name: &str, leak: &str, remediation: &str) -> String {
    format!(
        "[[unit]]\nname = \"{name}\"\n\n[unit.leak]\nwindow = \"{}s\"\n{leak}\n\
         [unit.remediation]\n{remediation}\n",
        WINDOW.as_secs()
    )
}

/// The unit line sending a leaker's output to a file of the sandbox, and that file.
fn leak_output(sandbox: &Sandbox, name: &str) -> (String, PathBuf) {
    let path = sandbox.runtime_dir().join(format!("{name}.out"));
    (format!("StandardOutput=append:{}", path.display()), path)
}

/// Where the limit of a thread or memory leaker comes from: on hybrid hosts a v1 `controller`
/// cgroup the workload joins (named after the sandbox, so its teardown removes it; systemd
/// applies no limits there), on pure v2 hosts the unit's own `v2_line`. Returns the
/// workload's CGROUP argument and the unit's line.
fn limit_cgroup(sandbox: &Sandbox, controller: &str, v2_line: &str) -> (String, String) {
    let v1 = cgroupfs::v1_hierarchies()
        .iter()
        .any(|root| root.file_name().is_some_and(|name| name == controller));
    if !v1 {
        return ("-".into(), v2_line.into());
    }
    let sandbox_name = sandbox.cgroup().file_name().expect("a sandbox cgroup name");
    let cgroup = format!("{}/leaker", sandbox_name.to_string_lossy());
    (cgroup, String::new())
}

/// Runs a leaker of `kind` (its workload arguments and one more unit line from `setup`) in a
/// unit the agent only watches, judging only that kind; checks its problem and status view
/// against the real exhaustion at `limit`. Returns the problem's audit record.
fn watched_leak(
    label: &str,
    kind: &str,
    limit: f64,
    setup: impl FnOnce(&Sandbox) -> (String, String),
) -> anyhow::Result<Value> {
    let sandbox = Sandbox::start(label)?;
    let (output, out) = leak_output(&sandbox, "leaker");
    let (args, line) = setup(&sandbox);
    sandbox.install_unit(
        "leaker.service",
        &service_unit(kind, &workload(&args), &[&output, &line]),
    )?;
    // fds grow with sockets, connections with them, memory with threads: each test judges one.
    let problem = format!("{kind}_leak");
    let config = unit_config(
        "leaker.service",
        &format!("kinds = [\"{problem}\"]\n"),
        &format!("{problem} = []\n"),
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    start_watched(&sandbox, &agent, &["leaker.service"])?;
    let leak = leak_started(&out)?;
    let decision = wait_for_problem(&sandbox, &agent, "leaker.service", &problem)?;
    assert_predicted(&decision, &leak, limit);
    assert_view(&agent, "leaker.service", kind, limit, &leak)?;
    Ok(decision)
}

fn evidence(decision: &Value) -> &str {
    decision["evidence"].as_str().unwrap_or_default()
}

/// What a leaker said when it started: it holds `base` and takes `rate` more a second from
/// `since_ms` (ms since the epoch) on.
#[derive(Debug)]
struct Leak {
    base: f64,
    rate: f64,
    since_ms: f64,
}

impl Leak {
    /// When the leak really reaches `limit`, in ms since the epoch.
    fn exhausted_at_ms(&self, limit: f64) -> f64 {
        self.since_ms + (limit - self.base) / self.rate * 1000.0
    }
}

/// Reads "leaking KIND from BASE at RATE/s since UNIX_MS" from the workload's output.
fn leak_started(out: &Path) -> anyhow::Result<Leak> {
    let mut leak = None;
    Sandbox::wait_until("the leaker to start", WAIT, || {
        let text = std::fs::read_to_string(out)?;
        leak = text.lines().find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["leaking", _, "from", base, "at", rate, "since", since] => Some(Leak {
                    base: base.parse().ok()?,
                    rate: rate.strip_suffix("/s")?.parse().ok()?,
                    since_ms: since.parse().ok()?,
                }),
                _ => None,
            }
        });
        Ok(leak.is_some())
    })?;
    Ok(leak.expect("found"))
}

/// The decisions of the audit log, with their evidence.
fn audit(sandbox: &Sandbox) -> anyhow::Result<Vec<Value>> {
    let mut lines = audit_lines(sandbox)?;
    lines.retain(|record| record["event"] == "decision");
    Ok(lines)
}

/// Waits for the agent's decision on `problem` of `unit`; detection takes half a window after
/// the unit starts, so this waits longer than [`WAIT`].
fn wait_for_problem(
    sandbox: &Sandbox,
    agent: &Agent,
    unit: &str,
    problem: &str,
) -> anyhow::Result<Value> {
    let mut found = None;
    Sandbox::wait_until(&format!("{problem} of {unit}"), WAIT * 2, || {
        found = audit(sandbox)?
            .into_iter()
            .find(|r| r["unit"] == unit && r["problem"] == problem);
        Ok(found.is_some())
    })
    .with_context(|| format!("agent log:\n{}", agent.log_text()))?;
    Ok(found.expect("found"))
}

/// The problem came before the real exhaustion, and its evidence dates the exhaustion within
/// [`TOLERANCE`] of the real one, both counted from the moment of detection.
fn assert_predicted(decision: &Value, leak: &Leak, limit: f64) {
    let detected_ms = decision["at_ms"].as_f64().expect("at_ms");
    let real = leak.exhausted_at_ms(limit) - detected_ms;
    assert!(
        real > 0.0,
        "detected {:.1} s after the exhaustion: {decision:#}",
        -real / 1000.0
    );
    let predicted = evidence_exhaustion_seconds(evidence(decision))
        .unwrap_or_else(|| panic!("no exhaustion in seconds in {decision:#}"));
    // The evidence says whole seconds.
    let context = format!("{decision:#} of {leak:?}");
    assert_close(predicted * 1000.0, real, 1000.0, &context);
}

/// The status view shows the resource leaking against its limit, reported, with a predicted
/// exhaustion within [`TOLERANCE`] of the real one.
///
/// Status is published at the end of the sampling pass that wrote the decision to the audit
/// log, so right after the decision it may still show the pass before: it is read until it
/// shows the problem, for a few passes at most.
fn assert_view(
    agent: &Agent,
    unit: &str,
    kind: &str,
    limit: f64,
    leak: &Leak,
) -> anyhow::Result<()> {
    let (mut read_at, mut view) = (0.0, Value::Null);
    let shown = Sandbox::wait_until(&format!("status to show the {kind} leak"), VIEW_LAG, || {
        read_at = now_ms();
        view = agent.unit(unit)?["view"].clone();
        Ok(resource(&view, kind).is_some_and(|r| r["reported"] == true))
    });
    let r = resource(&view, kind).with_context(|| format!("no {kind} in {view:#}"))?;
    assert!(shown.is_ok(), "not reported after {VIEW_LAG:?}: {view:#}");
    assert_eq!(r["shape"], "leak", "{view:#}");
    assert_eq!(r["limit"], limit, "{view:#}");
    assert!(
        r["value"].as_f64().is_some_and(|v| v > 0.0 && v < limit),
        "{view:#}"
    );
    let predicted = r["exhaustion_in_seconds"]
        .as_f64()
        .with_context(|| format!("{view:#}"))?;
    // The view is as of the last tick, a second or so before it was read.
    let real = leak.exhausted_at_ms(limit) - read_at;
    assert_close(
        predicted * 1000.0,
        real,
        1500.0,
        &format!("{view:#} of {leak:?}"),
    );
    Ok(())
}

fn assert_close(predicted_ms: f64, real_ms: f64, slack_ms: f64, context: &str) {
    assert!(
        (predicted_ms - real_ms).abs() <= TOLERANCE * real_ms + slack_ms,
        "predicted exhaustion in {:.1} s, really in {:.1} s: {context}",
        predicted_ms / 1000.0,
        real_ms / 1000.0
    );
}

/// "...; exhaustion in ~52s at ...": the seconds. These leakers run out within two minutes of
/// their detection, which the evidence says to the second.
fn evidence_exhaustion_seconds(evidence: &str) -> Option<f64> {
    let (_, rest) = evidence.split_once("exhaustion in ~")?;
    rest.split_once("s at ")?.0.parse().ok()
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
        * 1000.0
}

/// The resource `kind` ("fd", "socket"...) of a unit's status view.
fn resource(view: &Value, kind: &str) -> Option<Value> {
    view["resources"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == kind)
        .cloned()
}

/// What the kernel says about a process: open fds, threads, and inet sockets among its fds.
fn proc_counts(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .collect();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let threads = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .context("no Threads: line")?
        .trim()
        .parse()?;
    let inet = inet_inodes(pid);
    let sockets = links
        .iter()
        .filter_map(|link| {
            link.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .filter(|inode| inet.contains(inode))
        .count();
    Ok((links.len() as u64, threads, sockets as u64))
}

/// Inodes of the inet sockets in the process's network namespace.
fn inet_inodes(pid: u32) -> HashSet<u64> {
    ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().nth(9)?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// A plain HTTP/1.0 GET; the whole response, headers included.
fn http_get(address: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(address)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(WAIT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
