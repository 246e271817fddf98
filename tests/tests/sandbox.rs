//! The sandbox against a real systemd and the real kernel (root required).

use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, cgroupfs, service_unit, workload_bin};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A unit running `selfheal-workload <args>`.
fn workload_unit(description: &str, args: &str, extra: &[&str]) -> String {
    service_unit(
        description,
        &format!("{} {args}", workload_bin().display()),
        extra,
    )
}

fn start(label: &str) -> anyhow::Result<Sandbox> {
    let started = Instant::now();
    let sandbox = Sandbox::start(label)?;
    eprintln!("sandbox {label} started in {:?}", started.elapsed());
    Ok(sandbox)
}

fn start_unit(sandbox: &Sandbox, unit: &str, contents: &str) -> anyhow::Result<()> {
    sandbox.install_unit(unit, contents)?;
    sandbox.systemctl(&["start", unit])?;
    Ok(())
}

fn wait_for_state(sandbox: &Sandbox, unit: &str, state: &str) -> anyhow::Result<()> {
    Sandbox::wait_until(&format!("{unit} to be {state}"), TIMEOUT, || {
        Ok(sandbox.property(unit, "ActiveState")? == state)
    })
}

/// Alive means running: a zombie has already exited.
fn is_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn service_runs_in_its_own_cgroup_below_the_sandbox() -> anyhow::Result<()> {
    require_root!();
    let sandbox = start("active")?;
    start_unit(
        &sandbox,
        "sleeper.service",
        &workload_unit("sleeps", "sleep", &[]),
    )?;
    wait_for_state(&sandbox, "sleeper.service", "active")?;

    let pid = sandbox.main_pid("sleeper.service")?;
    let cgroup = sandbox.unit_cgroup("sleeper.service")?;
    ensure!(
        cgroup.starts_with(sandbox.cgroup()),
        "{} is outside the sandbox",
        cgroup.display()
    );
    ensure!(cgroup.is_dir(), "{} is not a directory", cgroup.display());
    ensure!(
        cgroupfs::read_procs(&cgroup)?.contains(&pid),
        "main pid {pid} is not in {}",
        cgroup.display()
    );
    Ok(())
}

#[test]
fn dropping_the_sandbox_leaves_nothing_behind() -> anyhow::Result<()> {
    require_root!();
    let sandbox = start("drop")?;
    start_unit(
        &sandbox,
        "tree.service",
        &workload_unit("a process tree", "spawn-then-sleep 3", &[]),
    )?;
    let cgroup = sandbox.cgroup().to_path_buf();
    let unit_cgroup = sandbox.unit_cgroup("tree.service")?;
    Sandbox::wait_until("tree.service to have 4 processes", TIMEOUT, || {
        Ok(cgroupfs::read_procs(&unit_cgroup)?.len() == 4)
    })?;
    let pids = cgroupfs::procs_in_tree(&cgroup)?;
    let systemd = sandbox.systemd_pid().context("systemd runs")?;
    let dbus = sandbox.dbus_pid()?;
    ensure!(
        pids.contains(&systemd) && pids.contains(&dbus),
        "{systemd} and {dbus} are not in {pids:?}"
    );
    let runtime_dir = sandbox.runtime_dir().to_path_buf();
    let name = cgroup
        .file_name()
        .context("the sandbox cgroup has a name")?
        .to_owned();
    let v1_mirrors: Vec<_> = cgroupfs::v1_hierarchies()
        .iter()
        .map(|root| root.join(&name))
        .collect();

    let started = Instant::now();
    drop(sandbox);
    eprintln!("sandbox drop took {:?}", started.elapsed());

    let alive: Vec<u32> = pids.into_iter().filter(|&pid| is_alive(pid)).collect();
    ensure!(alive.is_empty(), "processes {alive:?} survived the sandbox");
    for path in [&cgroup, &runtime_dir].into_iter().chain(&v1_mirrors) {
        ensure!(!path.exists(), "{} survived the sandbox", path.display());
    }
    Ok(())
}

#[test]
fn a_panicking_test_still_tears_its_sandbox_down() -> anyhow::Result<()> {
    require_root!();
    let mut left_behind = None;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let sandbox = start("panic").expect("the sandbox starts");
        left_behind = Some((
            sandbox.cgroup().to_path_buf(),
            sandbox.runtime_dir().to_path_buf(),
        ));
        panic!("a failing assertion");
    }));
    ensure!(outcome.is_err(), "the closure did not panic");
    let (cgroup, runtime_dir) = left_behind.context("the sandbox started")?;
    ensure!(!cgroup.exists(), "{} survived the panic", cgroup.display());
    ensure!(
        !runtime_dir.exists(),
        "{} survived the panic",
        runtime_dir.display()
    );
    Ok(())
}

#[test]
fn failing_service_stays_failed_with_its_exit_status() -> anyhow::Result<()> {
    require_root!();
    let sandbox = start("exit")?;
    start_unit(
        &sandbox,
        "crasher.service",
        &workload_unit("exits with 3", "exit 3 100", &[]),
    )?;
    wait_for_state(&sandbox, "crasher.service", "failed")?;
    assert_eq!(sandbox.property("crasher.service", "ExecMainStatus")?, "3");
    assert_eq!(sandbox.property("crasher.service", "Result")?, "exit-code");

    // Restarting is the agent's job: systemd must not do it, however long we look.
    let watch_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < watch_until {
        assert_eq!(
            sandbox.property("crasher.service", "ActiveState")?,
            "failed"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sandbox.property("crasher.service", "NRestarts")?, "0");
    Ok(())
}

#[test]
fn two_sandboxes_run_side_by_side() -> anyhow::Result<()> {
    require_root!();
    let (first, second) = thread::scope(|scope| {
        let first = scope.spawn(|| start("twin-a"));
        let second = start("twin-b");
        (first.join().expect("starting twin-a panicked"), second)
    });
    let (first, second) = (first?, second?);
    ensure!(first.cgroup() != second.cgroup() && first.runtime_dir() != second.runtime_dir());

    let unit = workload_unit("sleeps", "sleep", &[]);
    for sandbox in [&first, &second] {
        start_unit(sandbox, "twin.service", &unit)?;
        wait_for_state(sandbox, "twin.service", "active")?;
        let cgroup = sandbox.unit_cgroup("twin.service")?;
        ensure!(
            cgroup.starts_with(sandbox.cgroup()),
            "{} is outside its sandbox",
            cgroup.display()
        );
    }
    ensure!(first.main_pid("twin.service")? != second.main_pid("twin.service")?);

    first.install_unit("only-first.service", &unit)?;
    assert_eq!(
        second.property("only-first.service", "LoadState")?,
        "not-found"
    );
    first.remove_unit("twin.service")?;
    assert_eq!(second.property("twin.service", "ActiveState")?, "active");
    Ok(())
}

#[test]
fn child_exit_leaves_the_parent_running() -> anyhow::Result<()> {
    require_root!();
    let sandbox = start("child-exit")?;
    start_unit(
        &sandbox,
        "parent.service",
        &workload_unit("child exits", "child-exit 7 200", &[]),
    )?;
    let cgroup = sandbox.unit_cgroup("parent.service")?;
    Sandbox::wait_until("the child to start", TIMEOUT, || {
        Ok(cgroupfs::read_procs(&cgroup)?.len() == 2)
    })?;
    Sandbox::wait_until("the child to exit", TIMEOUT, || {
        Ok(cgroupfs::read_procs(&cgroup)?.len() == 1)
    })?;
    assert_eq!(sandbox.property("parent.service", "ActiveState")?, "active");
    assert_eq!(
        cgroupfs::read_procs(&cgroup)?,
        [sandbox.main_pid("parent.service")?]
    );
    Ok(())
}

#[test]
fn oom_workload_is_killed_by_the_kernel() -> anyhow::Result<()> {
    require_root!();
    let sandbox = start("oom")?;
    let name = sandbox
        .cgroup()
        .file_name()
        .context("sandbox cgroup name")?
        .to_string_lossy()
        .into_owned();
    let memory_cgroup = format!("{name}/oom");
    let unit = workload_unit(
        "hoards memory",
        &format!("oom {memory_cgroup}"),
        &["MemoryMax=64M"],
    );
    start_unit(&sandbox, "hog.service", &unit)?;
    wait_for_state(&sandbox, "hog.service", "failed")?;
    // The OOM killer sends SIGKILL (9); ExecMainCode 2 is CLD_KILLED.
    assert_eq!(sandbox.property("hog.service", "ExecMainCode")?, "2");
    assert_eq!(sandbox.property("hog.service", "ExecMainStatus")?, "9");
    if let Some(memory) = cgroupfs::v1_memory_root() {
        let oom_control =
            fs::read_to_string(memory.join(&memory_cgroup).join("memory.oom_control"))?;
        ensure!(
            oom_control.contains("oom_kill 1"),
            "no OOM kill recorded: {oom_control}"
        );
        cgroupfs::remove_v1_memory_cgroup(&memory_cgroup)?;
        ensure!(!Path::new(&memory).join(&memory_cgroup).exists());
    }
    Ok(())
}

#[test]
fn sweep_removes_leftovers_of_dead_creators_only() -> anyhow::Result<()> {
    require_root!();
    // A pid that belonged to a process which has exited and been reaped: a crashed test run.
    let mut creator = std::process::Command::new("true").spawn()?;
    let dead_pid = creator.id();
    creator.wait()?;
    let stale = cgroupfs::v2_root().join(format!("selfheal-sandbox-stale-{dead_pid}-0"));
    let live =
        cgroupfs::v2_root().join(format!("selfheal-sandbox-live-{}-999", std::process::id()));
    let stale_runtime = Path::new("/run/selfheal-sandbox").join(format!("stale-{dead_pid}-0"));
    for dir in [&stale.join("app.slice"), &live, &stale_runtime] {
        fs::create_dir_all(dir)?;
    }

    selfheal_tests::sandbox::sweep_stale();
    let live_survived = live.exists();
    cgroupfs::remove_tree(&live)?;
    ensure!(
        !stale.exists() && !stale_runtime.exists(),
        "stale leftovers survived the sweep"
    );
    ensure!(live_survived, "the sweep removed a live process's sandbox");
    Ok(())
}
