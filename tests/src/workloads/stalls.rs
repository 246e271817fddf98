//! Workloads for the stall tests: threads that compute without ever making a system call, a
//! server that stops accepting connections, and spinners squeezed into a small CPU quota. (The
//! task stuck in uninterruptible sleep is `vfork-hang`, in the remediation family.)

use std::{
    io::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::ExitCode,
    thread,
    time::Duration,
};

use crate::cgroupfs;

/// The CFS period `squeeze` sets next to its quota (the kernel's default).
const CFS_PERIOD_US: u64 = 100_000;

pub fn run(mode: &str, args: &[String]) -> Option<Result<ExitCode, String>> {
    Some(match (mode, args) {
        ("spin", [threads]) => parse(threads, "THREADS").and_then(spin),
        ("no-accept", [port]) => no_accept(port),
        ("squeeze", [name, quota_us, threads]) => squeeze(name, quota_us, threads),
        _ => return None,
    })
}

/// THREADS threads in a loop without system calls (so without voluntary context switches);
/// the main thread sleeps.
fn spin(threads: u32) -> Result<ExitCode, String> {
    for i in 0..threads {
        thread::Builder::new()
            .name(format!("spinner-{i}"))
            .spawn(spin_forever)
            .map_err(|err| format!("spawning a spinner: {err}"))?;
    }
    announce(&format!("{threads} thread(s) spinning"));
    sleep_forever()
}

fn spin_forever() {
    let mut n = 0u64;
    loop {
        // black_box keeps the loop from being optimized away; it makes no call at all.
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Listens on 127.0.0.1:PORT and never calls accept(): connections complete their handshake in
/// the kernel and wait in the accept queue, while the only thread sleeps.
fn no_accept(port: &str) -> Result<ExitCode, String> {
    let port: u16 = parse(port, "PORT")?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|err| format!("binding 127.0.0.1:{port}: {err}"))?;
    let local = listener.local_addr().map_err(|err| err.to_string())?;
    announce(&format!("listening on {local}, never accepting"));
    let _keep = listener;
    sleep_forever()
}

/// Joins the v1 cpu cgroup NAME (created if needed, below the cpu controller's root) limited to
/// QUOTA_US of every 100 ms, then spins THREADS threads in it. Units that name the same cgroup
/// share the quota: they starve each other. Our v2 cgroup, the unit's, stays.
fn squeeze(name: &str, quota_us: &str, threads: &str) -> Result<ExitCode, String> {
    let quota_us: u64 = parse(quota_us, "QUOTA_US")?;
    let threads: u32 = parse(threads, "THREADS")?;
    let root = v1_cpu_root().ok_or("this host has no v1 cpu controller")?;
    let cgroup = root.join(cgroupfs::relative_name(name).map_err(|err| err.to_string())?);
    std::fs::create_dir_all(&cgroup)
        .map_err(|err| format!("creating {}: {err}", cgroup.display()))?;
    write(
        &cgroup.join("cpu.cfs_period_us"),
        &CFS_PERIOD_US.to_string(),
    )?;
    write(&cgroup.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
    // Before the threads exist: they are born in the cgroup.
    write(
        &cgroup.join("cgroup.procs"),
        &std::process::id().to_string(),
    )?;
    spin(threads)
}

/// The v1 hierarchy that holds the cpu controller (`/sys/fs/cgroup/cpu` or `cpu,cpuacct`).
fn v1_cpu_root() -> Option<PathBuf> {
    cgroupfs::v1_hierarchies()
        .into_iter()
        .find(|root| root.join("cpu.cfs_quota_us").exists())
}

/// Tests read this line from the journal to know the workload is ready.
fn announce(what: &str) {
    println!("{what}");
    let _ = std::io::stdout().flush();
}

fn sleep_forever() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value)
        .map_err(|err| format!("writing {value} to {}: {err}", path.display()))
}

fn parse<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{what} {value:?} is not a valid number"))
}
