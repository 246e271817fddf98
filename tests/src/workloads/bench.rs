//! Workloads for `cargo xtask bench`: micro-benchmarks that time themselves (so unit start-up
//! never counts), load generators, and faults whose start they date on CLOCK_MONOTONIC, the
//! clock of the kernel's `bpf_ktime_get_ns()` and of systemd's `*TimestampMonotonic`.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    path::Path,
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

/// The `bench-*` modes (usage in `workloads::USAGE`):
///   bench-pingpong ROUND_TRIPS OUT   two threads on one CPU over pipes; ns per round trip to OUT
///   bench-syscalls CALLS OUT         a getppid(2) loop; ns per call to OUT
///   bench-switcher RATE              RATE ping-pong round trips per second, forever
///   bench-exit-children INTERVAL_MS  a child process exits every INTERVAL_MS, forever
///   bench-exit-burst COUNT OUT       COUNT children exit back to back; "COUNT NS" to OUT
///   bench-spin AFTER_MS OUT          sleep, date the start to OUT, then spin forever (once per OUT)
///   bench-fd-leak PER_SECOND OUT     open fds at a steady rate; date running out of them to OUT
///   bench-idle TAG                   sleep forever (TAG tells processes apart, e.g. for monit)
pub fn run(mode: &str, args: &[String]) -> Option<Result<ExitCode, String>> {
    let result = match (mode, args) {
        ("bench-pingpong", [n, out]) => pingpong(n, out),
        ("bench-syscalls", [n, out]) => syscalls(n, out),
        ("bench-switcher", [rate]) => switcher(rate),
        ("bench-exit-children", [ms]) => exit_children(ms),
        ("bench-exit-burst", [n, out]) => exit_burst(n, out),
        ("bench-spin", [ms, out]) => spin(ms, out),
        ("bench-fd-leak", [rate, out]) => fd_leak(rate, out),
        ("bench-idle", [_tag]) => idle(),
        _ => return None,
    };
    Some(result)
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Every round trip is two context switches (and two wakeups) on the same CPU: the cost the
/// scheduler probes add is the most visible here.
fn pingpong(n: &str, out: &str) -> Result<ExitCode, String> {
    let n: u64 = parse(n, "ROUND_TRIPS")?;
    pin_to_last_cpu()?;
    let elapsed = ping_pong(n, None)?;
    write_result(out, &format!("{}", elapsed.as_nanos() as f64 / n as f64))
}

/// Runs `n` round trips between this thread and a partner; with `per_second`, paced in 10 ms
/// slices. The partner inherits this thread's CPU affinity.
fn ping_pong(n: u64, per_second: Option<u64>) -> Result<Duration, String> {
    let (mut ping_r, mut ping_w) = pipe()?;
    let (mut pong_r, mut pong_w) = pipe()?;
    let partner = thread::spawn(move || {
        let mut byte = [0u8; 1];
        while ping_r.read_exact(&mut byte).is_ok() {
            if pong_w.write_all(&byte).is_err() {
                break;
            }
        }
    });
    let slice = Duration::from_millis(10);
    let per_slice = per_second.map(|rate| (rate / 100).max(1));
    let start = Instant::now();
    let mut byte = [0u8; 1];
    let mut done = 0u64;
    let mut next_slice = Instant::now();
    while done < n {
        ping_w.write_all(&byte).map_err(|e| format!("ping: {e}"))?;
        pong_r
            .read_exact(&mut byte)
            .map_err(|e| format!("pong: {e}"))?;
        done += 1;
        if let Some(per_slice) = per_slice
            && done.is_multiple_of(per_slice)
        {
            next_slice += slice;
            thread::sleep(next_slice.saturating_duration_since(Instant::now()));
        }
    }
    let elapsed = start.elapsed();
    drop(ping_w);
    let _ = partner.join();
    Ok(elapsed)
}

/// getppid(2) enters the kernel every time (glibc does not cache it) and touches nothing the
/// probes watch: what any syscall-heavy program pays.
fn syscalls(n: &str, out: &str) -> Result<ExitCode, String> {
    let n: u64 = parse(n, "CALLS")?;
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    let elapsed = start.elapsed();
    write_result(out, &format!("{}", elapsed.as_nanos() as f64 / n as f64))
}

fn switcher(rate: &str) -> Result<ExitCode, String> {
    let rate: u64 = parse(rate, "RATE")?;
    loop {
        ping_pong(rate * 60, Some(rate))?;
    }
}

fn exit_children(ms: &str) -> Result<ExitCode, String> {
    let interval = Duration::from_millis(parse(ms, "INTERVAL_MS")?);
    loop {
        fork_and_exit()?;
        reap(true);
        thread::sleep(interval);
    }
}

fn exit_burst(n: &str, out: &str) -> Result<ExitCode, String> {
    let n: u64 = parse(n, "COUNT")?;
    let start = Instant::now();
    for i in 0..n {
        fork_and_exit()?;
        // Reaping as we go keeps the number of zombies (and pids in use) small.
        if i.is_multiple_of(64) {
            reap(false);
        }
    }
    let elapsed = start.elapsed();
    reap(true);
    write_result(out, &format!("{n} {}", elapsed.as_nanos()))?;
    idle()
}

/// A child that exits at once with status 1: the kernel sends a record for a child's exit only
/// when it failed (a clean one is only counted), and the bench times records. This process is
/// single-threaded, so fork is safe.
fn fork_and_exit() -> Result<(), String> {
    // SAFETY: the child only calls _exit, which is async-signal-safe.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        // SAFETY: _exit has no preconditions.
        0 => unsafe { libc::_exit(1) },
        _ => Ok(()),
    }
}

/// Reaps exited children; with `all`, waits until none is left.
fn reap(all: bool) {
    let flags = if all { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: waitpid with a null status pointer is allowed.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), flags) };
        if pid <= 0 {
            return;
        }
    }
}

/// Spins once per OUT file: a restarted unit whose OUT already exists only idles, so a fault
/// injected once is seen once.
fn spin(ms: &str, out: &str) -> Result<ExitCode, String> {
    if Path::new(out).exists() {
        return idle();
    }
    thread::sleep(Duration::from_millis(parse(ms, "AFTER_MS")?));
    write_result(out, &monotonic_ns().to_string())?;
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Opens /dev/null at an even pace and keeps every fd; at EMFILE it dates the exhaustion and
/// then just sleeps, as a leaking server would stay up unable to accept.
fn fd_leak(rate: &str, out: &str) -> Result<ExitCode, String> {
    let rate: u64 = parse(rate, "PER_SECOND")?;
    let step = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut kept = Vec::new();
    let mut next = Instant::now();
    loop {
        match File::open("/dev/null") {
            Ok(file) => kept.push(file),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                let at = monotonic_ns();
                // Writing the date needs an fd of its own.
                kept.pop();
                write_result(out, &at.to_string())?;
                return idle();
            }
            Err(e) => return Err(format!("opening /dev/null: {e}")),
        }
        next += step;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn idle() -> Result<ExitCode, String> {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn pin_to_last_cpu() -> Result<(), String> {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpus - 1 < CPU_SETSIZE on any machine this runs on.
    unsafe { libc::CPU_SET(cpus - 1, &mut set) };
    // SAFETY: set is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn pipe() -> Result<(File, File), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array we own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    use std::os::fd::FromRawFd as _;
    // SAFETY: both fds were just opened and are owned by nothing else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Writes beside `out` and renames, so a reader never sees half a result.
fn write_result(out: &str, text: &str) -> Result<ExitCode, String> {
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("writing {tmp}: {e}"))?;
    std::fs::rename(&tmp, Path::new(out)).map_err(|e| format!("renaming to {out}: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

fn parse<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{what} {value:?} is not a valid number"))
}
