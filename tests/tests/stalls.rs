//! Issue 3 end to end: real workloads stall in each way the agent knows (stopped, spinning,
//! wedged, hung, starved); the kernel's scheduler probes and procfs feed the stall detector; the
//! policy answers; the status document shows the scheduler picture and stalls in progress. Short
//! per-unit thresholds keep each test under a minute.

use std::{
    net::{TcpListener, TcpStream},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use selfheal_tests::agent::{
    WAIT, history_and_log, restart_done, wait_for_record, wait_loaded, workload,
};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};
use serde_json::Value;

/// The stall threshold of most units below, and its `[unit.stall]` line.
const THRESHOLD: Duration = Duration::from_secs(3);
const SHORT: &str = "threshold = \"3s\"";

/// Tests that keep CPUs busy take turns, so their spinners do not share cores between them.
static CPU_HUNGRY: Mutex<()> = Mutex::new(());

fn cpu_turn() -> MutexGuard<'static, ()> {
    CPU_HUNGRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A `[[unit]]` table with a `[unit.stall]` table holding `stall` (TOML lines).
fn unit_config(name: &str, stall: &str) -> String {
    format!("[[unit]]\nname = \"{name}\"\n\n[unit.stall]\n{stall}\n\n")
}

/// Installs and starts `name` running the workload `args`.
fn start_unit(sandbox: &Sandbox, name: &str, args: &str) -> anyhow::Result<()> {
    sandbox.install_unit(name, &service_unit(name, &workload(args), &[]))?;
    sandbox.systemctl(&["start", name])?;
    Ok(())
}

/// Waits until the agent has sampled the unit's tasks at least once (its scheduler view exists
/// and counts them).
fn wait_sampled(agent: &Agent, unit: &str) -> anyhow::Result<()> {
    Sandbox::wait_until(&format!("the agent to sample {unit}"), WAIT, || {
        Ok(agent.unit(unit)?["view"]["sched"]["tasks"].as_u64() > Some(0))
    })
}

/// Waits for the first decision on `problem`; returns it (its `evidence` says what was seen).
fn wait_for_decision(agent: &Agent, unit: &str, problem: &str) -> anyhow::Result<Value> {
    let what = format!("a decision on {problem} for {unit}");
    wait_for_record(agent, unit, "decision", &what, |r| r["problem"] == problem)
}

/// The decision's evidence, checked for each of `expected`.
fn assert_evidence(decision: &Value, expected: &[&str]) {
    let evidence = decision["evidence"].as_str().unwrap_or_default();
    for part in expected {
        assert!(evidence.contains(part), "no {part:?} in: {decision:#}");
    }
}

/// Fails as soon as the agent records a decision about `unit` during `period`, other than on
/// the problems in `besides`.
fn stays_quiet(
    agent: &Agent,
    unit: &str,
    period: Duration,
    besides: &[&str],
) -> anyhow::Result<()> {
    let end = Instant::now() + period;
    while Instant::now() < end {
        let mut decisions = agent.records(unit, "decision")?;
        decisions.retain(|d| !besides.iter().any(|problem| d["problem"] == *problem));
        if !decisions.is_empty() {
            bail!(
                "{unit} should have raised no problem, yet: {decisions:#?}\n{}",
                history_and_log(agent, unit)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn unix_ms() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
    since_epoch.map_or(0, |d| d.as_millis() as u64)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a unit's process that this test started.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// The unit's stalls in progress (`view.stalls`) of one kind.
fn stall_in_progress(agent: &Agent, unit: &str, kind: &str) -> anyhow::Result<Option<Value>> {
    let view = agent.unit(unit)?["view"]["stalls"].clone();
    Ok(view
        .as_array()
        .and_then(|stalls| stalls.iter().find(|s| s["kind"] == kind).cloned()))
}

#[test]
fn a_stopped_main_process_is_reported_within_the_threshold_and_restarted_once_for_good()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("stopped")?;
    start_unit(&sandbox, "frozen.service", "sleep")?;
    // Short verification windows, so the test also sees the restart judged a success.
    let policy = "[policy]\nrecovery_timeout = \"5s\"\ncooldown = \"3s\"\n\n";
    let config = policy.to_owned() + &unit_config("frozen.service", SHORT);
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_sampled(&agent, "frozen.service")?;

    let pid = sandbox.main_pid("frozen.service")?;
    let stopped_at = unix_ms();
    signal(pid, libc::SIGSTOP);

    let decision = wait_for_decision(&agent, "frozen.service", "stopped")?;
    let took = Duration::from_millis(decision["at_ms"].as_u64().unwrap_or(u64::MAX) - stopped_at);
    eprintln!("stopped reported {took:?} after SIGSTOP (threshold {THRESHOLD:?})");
    // The stall is dated from the kernel's state change, which follows the SIGSTOP: never
    // reported before the threshold. How soon after it (issue 3: within T + 2 s) depends on the
    // machine's load and is measured by `cargo xtask bench` (stall detection), not here.
    assert!(
        took >= THRESHOLD,
        "reported before the threshold: {decision:#}"
    );
    assert_evidence(
        &decision,
        &["stopped", "SIGSTOP", &format!("process {pid} ")],
    );

    wait_for_record(
        &agent,
        "frozen.service",
        "action",
        "the restart of the stopped unit",
        restart_done,
    )?;
    assert_eq!(sandbox.property("frozen.service", "ActiveState")?, "active");
    let new_pid = sandbox.main_pid("frozen.service")?;
    assert_ne!(
        new_pid, pid,
        "the stopped process is still the main process"
    );

    // The new process runs fine: the stall is over, the recovery verified, and nothing more
    // is done (no second restart once the recovery timeout has passed).
    let verified = wait_for_record(
        &agent,
        "frozen.service",
        "decision",
        "the restart to be verified",
        |r| r["problem"] != "stopped",
    )?;
    assert_eq!(verified["problem"], "verified", "{verified:#}");
    let restarts = agent.records("frozen.service", "action")?;
    assert_eq!(restarts.len(), 1, "{restarts:#?}");
    assert_eq!(sandbox.main_pid("frozen.service")?, new_pid);
    Ok(())
}

#[test]
fn a_stop_shorter_than_the_threshold_shows_in_progress_with_its_age_and_is_never_reported()
-> anyhow::Result<()> {
    require_root!();
    // Long enough to see the stall in status before resuming the process.
    let threshold = Duration::from_secs(8);
    let sandbox = Sandbox::start("sigcont")?;
    start_unit(&sandbox, "paused.service", "sleep")?;
    let config = unit_config(
        "paused.service",
        &format!("threshold = \"{}s\"", threshold.as_secs()),
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_sampled(&agent, "paused.service")?;

    let pid = sandbox.main_pid("paused.service")?;
    signal(pid, libc::SIGSTOP);
    let mut ages = Vec::new();
    Sandbox::wait_until(
        "the stop to show in status with a growing age",
        WAIT,
        || {
            let Some(stall) = stall_in_progress(&agent, "paused.service", "stopped")? else {
                return Ok(false);
            };
            assert_eq!(stall["reported"], false, "{stall:#}");
            let age = stall["age_seconds"].as_f64().unwrap_or(-1.0);
            if ages.last() != Some(&age) {
                ages.push(age);
            }
            Ok(ages.len() >= 2)
        },
    )
    .with_context(|| history_and_log(&agent, "paused.service"))?;
    assert!(ages[1] > ages[0] && ages[0] >= 0.0, "ages {ages:?}");
    signal(pid, libc::SIGCONT);
    // By the agent's own clock, the stop ended before the threshold: not a stall to report.
    assert!(
        ages[1] < threshold.as_secs_f64(),
        "ages {ages:?}: the stop reached the threshold before SIGCONT"
    );

    Sandbox::wait_until("the stall to end", WAIT, || {
        Ok(stall_in_progress(&agent, "paused.service", "stopped")?.is_none())
    })?;
    stays_quiet(&agent, "paused.service", 2 * threshold, &[])?;
    assert_eq!(
        sandbox.main_pid("paused.service")?,
        pid,
        "the unit restarted"
    );
    Ok(())
}

#[test]
fn a_thread_spinning_without_syscalls_is_spinning_unless_the_unit_turns_spinning_off()
-> anyhow::Result<()> {
    require_root!();
    let _turn = cpu_turn();
    let sandbox = Sandbox::start("spinning")?;
    start_unit(&sandbox, "loop.service", "spin 1")?;
    start_unit(&sandbox, "cruncher.service", "spin 1")?;
    // The share is of wall-clock time, and a loop on a shared 2-core host gets a fifth of a CPU
    // at times, far below the default 95 %: what matters is that it never blocks.
    let stall = format!("{SHORT}\nspinning_cpu_percent = 10");
    let config = unit_config("loop.service", &stall)
        + &unit_config("cruncher.service", &format!("{stall}\nspinning = false"));
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_sampled(&agent, "cruncher.service")?;

    let decision = wait_for_decision(&agent, "loop.service", "spinning")?;
    assert_evidence(&decision, &["(spinner-0)", "no voluntary context switch"]);

    // The other unit spins just as hard, for at least as long, and is left alone.
    let oncpu = agent.unit("cruncher.service")?["view"]["sched"]["oncpu_percent"].clone();
    assert!(oncpu.as_f64() > Some(10.0), "cruncher on a CPU {oncpu}%");
    // Quiet all the time the loop took to be reported (no decision recorded so far), and two
    // thresholds more. A busy host starves it now and then (and it says so): that is no false
    // spinning.
    stays_quiet(&agent, "cruncher.service", 2 * THRESHOLD, &["starved"])?;
    assert!(stall_in_progress(&agent, "cruncher.service", "spinning")?.is_none());
    Ok(())
}

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[test]
fn a_server_that_stops_accepting_while_clients_queue_is_wedged_but_an_idle_one_is_not()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("wedged")?;
    let (busy_port, idle_port) = (free_port()?, free_port()?);
    start_unit(
        &sandbox,
        "jammed.service",
        &format!("no-accept {busy_port}"),
    )?;
    start_unit(&sandbox, "quiet.service", &format!("no-accept {idle_port}"))?;
    let config = unit_config("jammed.service", SHORT) + &unit_config("quiet.service", SHORT);
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_sampled(&agent, "quiet.service")?;
    let watched_since = Instant::now();

    let mut clients = Vec::new();
    Sandbox::wait_until("3 clients to connect to jammed.service", WAIT, || {
        clients.push(TcpStream::connect(("127.0.0.1", busy_port))?);
        Ok(clients.len() == 3)
    })?;
    let decision = wait_for_decision(&agent, "jammed.service", "wedged")?;
    assert_evidence(&decision, &["3 connection(s) in accept queues"]);

    // Idle for 3 thresholds with nothing waiting: healthy.
    let quiet_for = (3 * THRESHOLD).saturating_sub(watched_since.elapsed());
    stays_quiet(&agent, "quiet.service", quiet_for.max(THRESHOLD), &[])?;
    let idle = agent.unit("quiet.service")?["view"]["sched"]["idle_seconds"].clone();
    assert!(
        idle.as_f64() >= Some(THRESHOLD.as_secs_f64()),
        "quiet.service idle for {idle}s"
    );
    drop(clients);
    Ok(())
}

#[test]
fn a_task_stuck_in_uninterruptible_sleep_is_hung_with_its_wait_channel_and_escalated()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("hung")?;
    sandbox.install_unit(
        "stuck.service",
        &service_unit("stuck", &workload("vfork-hang"), &[]),
    )?;
    let agent = Agent::start(&sandbox, &unit_config("stuck.service", SHORT), &[])?;
    // Started once the agent watches: the kernel's probes, not a /proc scan, see it enter D.
    wait_loaded(&agent, "stuck.service")?;
    sandbox.systemctl(&["start", "stuck.service"])?;
    let pid = sandbox.main_pid("stuck.service")?;
    let (mut stat, mut wchan) = (String::new(), String::new());
    // The kernel says "0" for the wait channel of a task it cannot walk at that instant (it
    // did once under a loaded suite, the task in D all along): read until it names one.
    Sandbox::wait_until(
        "the vfork parent to be in D, in a wait channel",
        WAIT,
        || {
            stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan"))?;
            Ok(stat.contains(") D ") && !wchan.is_empty() && wchan != "0")
        },
    )
    .with_context(|| format!("/proc/{pid}/stat: {stat}, wchan {wchan:?}"))?;

    let decision = wait_for_decision(&agent, "stuck.service", "hung")?;
    let process = format!("process {pid} ");
    let wait_channel = format!("wait channel {wchan}");
    assert_evidence(
        &decision,
        &[&process, "uninterruptible sleep (D)", &wait_channel],
    );
    assert_eq!(decision["action"], "escalate", "{decision:#}");
    wait_for_record(&agent, "stuck.service", "action", "the escalation", |r| {
        r["action"] == "escalate" && r["outcome"] == "done"
    })?;
    let escalated = agent.unit("stuck.service")?["view"]["policy"]["escalated"].clone();
    assert!(escalated.is_string(), "not escalated: {escalated}");

    // Still hung a while later: reported, older than the threshold, and never restarted.
    Sandbox::wait_until("the hung stall to age past 2 thresholds", WAIT, || {
        let stall = stall_in_progress(&agent, "stuck.service", "hung")?;
        Ok(stall.is_some_and(|s| {
            s["reported"] == true
                && s["age_seconds"].as_f64() >= Some(2.0 * THRESHOLD.as_secs_f64())
        }))
    })
    .with_context(|| history_and_log(&agent, "stuck.service"))?;
    let actions = agent.records("stuck.service", "action")?;
    assert!(
        actions.iter().all(|a| a["action"] != "restart"),
        "a hung unit was restarted: {actions:#?}"
    );
    assert_eq!(sandbox.main_pid("stuck.service")?, pid);
    Ok(())
}

#[test]
fn units_squeezed_into_a_small_cpu_quota_are_starved_with_run_queue_and_throttling_evidence()
-> anyhow::Result<()> {
    require_root!();
    let _turn = cpu_turn();
    let sandbox = Sandbox::start("starved")?;
    // Below the sandbox's name, so its teardown removes the v1 cgroup.
    let sandbox_name = sandbox
        .cgroup()
        .file_name()
        .context("the sandbox's cgroup has a name")?
        .to_string_lossy()
        .into_owned();
    let squeeze = format!("squeeze {sandbox_name}/squeeze 10000 2");
    let units = ["first.service", "second.service"];
    let mut config = String::new();
    for unit in units {
        start_unit(&sandbox, unit, &squeeze)?;
        config += &unit_config(unit, "starved_for = \"3s\"");
    }
    let agent = Agent::start(&sandbox, &config, &[])?;

    for unit in units {
        let decision = wait_for_decision(&agent, unit, "starved")?;
        assert_evidence(
            &decision,
            &["run-queue latency p99 ", "its own CPU quota throttled it"],
        );
        assert!(
            !decision["evidence"].to_string().contains("p99 unknown"),
            "{decision:#}"
        );
        let sched = agent.unit(unit)?["view"]["sched"].clone();
        assert!(
            sched["runq_p99_ms"].as_f64() > Some(50.0) && sched["nr_throttled"].as_u64() > Some(0),
            "{unit}: {sched:#}"
        );
    }
    Ok(())
}

/// Thread ids of a process, from /proc/PID/task.
fn tids(pid: u32) -> anyhow::Result<Vec<u64>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|t| t.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// `kernel.tracked_tasks` of the status document.
fn tracked_tasks(agent: &Agent) -> anyhow::Result<Vec<u64>> {
    let status = agent.status()?;
    status["kernel"]["tracked_tasks"]
        .as_array()
        .map(|tids| tids.iter().filter_map(Value::as_u64).collect())
        .with_context(|| format!("no kernel.tracked_tasks in {status:#}"))
}

/// How many of the unit's tasks `view.sched.states` puts in `state`.
fn tasks_in(sched: &Value, state: &str) -> u64 {
    sched["states"]
        .as_array()
        .and_then(|states| states.iter().find(|s| s[0] == state))
        .and_then(|s| s[1].as_u64())
        .unwrap_or(0)
}

#[test]
fn only_monitored_units_have_kernel_state_and_status_shows_their_scheduler_picture()
-> anyhow::Result<()> {
    require_root!();
    let _turn = cpu_turn();
    let sandbox = Sandbox::start("tracked")?;
    let units = [
        // More spinners than CPUs: they wait for one in turn.
        ("busy.service", "spin 3"),
        ("idle.service", "sleep"),
        ("busy-other.service", "spin 1"),
        ("idle-other.service", "sleep"),
    ];
    for (unit, args) in units {
        start_unit(&sandbox, unit, args)?;
    }
    let config = unit_config("busy.service", "") + &unit_config("idle.service", "");
    let agent = Agent::start(&sandbox, &config, &[])?;
    let tids_of = |unit| -> anyhow::Result<Vec<u64>> { tids(sandbox.main_pid(unit)?) };
    let monitored = [tids_of("busy.service")?, tids_of("idle.service")?].concat();
    let unmonitored = [
        tids_of("busy-other.service")?,
        tids_of("idle-other.service")?,
    ]
    .concat();

    let mut tracked = Vec::new();
    Sandbox::wait_until("the monitored tasks in the kernel's map", WAIT, || {
        tracked = tracked_tasks(&agent)?;
        Ok(monitored.iter().all(|tid| tracked.contains(tid)))
    })
    .with_context(|| format!("monitored {monitored:?}, tracked {tracked:?}"))?;
    // A few ticks more: the unmonitored units keep running (and spinning) all along.
    for _ in 0..3 {
        let tracked = tracked_tasks(&agent)?;
        let leaked: Vec<_> = unmonitored.iter().filter(|t| tracked.contains(t)).collect();
        assert!(
            leaked.is_empty(),
            "unmonitored tasks {leaked:?} in the kernel's map {tracked:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    let busy = agent.unit("busy.service")?["view"]["sched"].clone();
    // Three spinners get a tenth of a CPU even on a busy shared host; a sleeper gets nothing.
    assert!(busy["oncpu_percent"].as_f64() > Some(10.0), "{busy:#}");
    assert_eq!(busy["tasks"], 4, "{busy:#}");
    assert_eq!(
        tasks_in(&busy, "running") + tasks_in(&busy, "runnable"),
        3,
        "{busy:#}"
    );
    assert_eq!(tasks_in(&busy, "sleeping"), 1, "{busy:#}");
    assert!(busy["runq_p99_ms"].is_f64(), "{busy:#}");
    let idle = agent.unit("idle.service")?["view"]["sched"].clone();
    assert!(idle["oncpu_percent"].as_f64() < Some(1.0), "{idle:#}");
    assert_eq!(tasks_in(&idle, "sleeping"), 1, "{idle:#}");
    assert!(idle["idle_seconds"].as_f64() > Some(0.0), "{idle:#}");
    Ok(())
}
