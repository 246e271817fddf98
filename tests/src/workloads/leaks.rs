//! Workloads for the leak tests: a resource taken at a steady rate and never given back (fds,
//! sockets, threads, memory), a pool that breathes, a warm-up that levels off, and a service
//! that holds known amounts of each resource.
//!
//! The leakers print one line a test can read (with `StandardOutput=file:`) to know the real
//! exhaustion time without asking the agent: `leaking KIND from BASE at RATE/s since UNIX_MS`,
//! where BASE is the count that runs into the limit (open fds for fds and sockets, tasks of the
//! pids cgroup, bytes charged to the memory cgroup) when the leak started.

use std::{
    fs::{self, File},
    io::Write as _,
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::ExitCode,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const MIB: usize = 1 << 20;
/// Leaked threads only park: the smallest stack keeps a few hundred of them cheap.
const THREAD_STACK: usize = 64 * 1024;
/// How long the accept loop waits after a failed accept (EMFILE once the fds are exhausted).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The CGROUP argument that means "no v1 cgroup: the unit's own limits apply".
const UNIT_CGROUP: &str = "-";

pub fn run(mode: &str, args: &[String]) -> Option<Result<ExitCode, String>> {
    Some(match (mode, args) {
        ("leak-fds", [rate]) => leak_fds(rate, None),
        ("leak-fds", [rate, once_file]) => leak_fds(rate, Some(Path::new(once_file))),
        ("leak-sockets", [rate]) => leak_sockets(rate),
        ("leak-threads", [rate, cgroup, max]) => leak_threads(rate, cgroup, max),
        ("leak-memory", [mib_per_s, cgroup, limit_mib]) => {
            leak_memory(mib_per_s, cgroup, limit_mib)
        }
        ("fd-sawtooth", [n, period_ms]) => fd_sawtooth(n, period_ms),
        ("fd-warm-up", [n, ramp_ms]) => fd_warm_up(n, ramp_ms),
        ("hold", [fds, threads, sockets]) => hold(fds, threads, sockets),
        _ => return None,
    })
}

/// Opens /dev/null RATE times a second and never closes it. With ONCE_FILE, only the first run
/// leaks (it creates the file); later runs just sleep, like a service whose restart cured it.
fn leak_fds(rate: &str, once_file: Option<&Path>) -> Result<ExitCode, String> {
    let rate: f64 = parse(rate, "RATE")?;
    if let Some(path) = once_file {
        if path.exists() {
            println!("{} exists: not leaking this time", path.display());
            flush();
            park_forever();
        }
        fs::write(path, "leaked once").map_err(|err| format!("{}: {err}", path.display()))?;
    }
    let mut held = Vec::new();
    leak("fds", own_fds()?, (1.0, rate), || {
        held.push(File::open("/dev/null").map_err(|err| err.to_string())?);
        Ok(())
    })
}

/// Connects to our own listener RATE times a second and never closes the client side. The
/// listener accepts and closes at once, so each leaked connection is one inet socket (waiting
/// in CLOSE_WAIT) and one fd.
fn leak_sockets(rate: &str) -> Result<ExitCode, String> {
    let rate: f64 = parse(rate, "RATE")?;
    let port = listen_and_drop()?;
    let mut held = Vec::new();
    leak("sockets", own_fds()?, (1.0, rate), || {
        held.push(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|err| err.to_string())?);
        Ok(())
    })
}

/// Joins the v1 pids cgroup CGROUP (relative to the controller's root) limited to MAX tasks,
/// then starts RATE parked threads a second. CGROUP `-` stays in the unit's own cgroup, for
/// pure v2 hosts where the unit's TasksMax= is the limit.
fn leak_threads(rate: &str, cgroup: &str, max: &str) -> Result<ExitCode, String> {
    let rate: f64 = parse(rate, "RATE")?;
    let max: u64 = parse(max, "MAX")?;
    let base = if cgroup == UNIT_CGROUP {
        read_number(&own_v2_cgroup()?.join("pids.current"))?
    } else {
        let dir = join_v1_cgroup("pids", cgroup, &[("pids.max", max.to_string())])?;
        read_number(&dir.join("pids.current"))?
    };
    leak("threads", base, (1.0, rate), || {
        thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(|| {
                park_forever();
            })
            .map(drop)
            .map_err(|err| err.to_string())
    })
}

/// Joins the v1 memory cgroup CGROUP limited to LIMIT_MIB, then allocates and touches
/// MIB_PER_S MiB a second until the kernel stops it. CGROUP `-` stays in the unit's own
/// cgroup, for pure v2 hosts where the unit's MemoryMax= is the limit.
fn leak_memory(mib_per_s: &str, cgroup: &str, limit_mib: &str) -> Result<ExitCode, String> {
    let rate: f64 = parse(mib_per_s, "MIB_PER_S")?;
    let limit = parse::<usize>(limit_mib, "LIMIT_MIB")? * MIB;
    let base = if cgroup == UNIT_CGROUP {
        read_number(&own_v2_cgroup()?.join("memory.current"))?
    } else {
        let mut limits = vec![("memory.limit_in_bytes", limit.to_string())];
        // memsw (memory + swap) must be >= the memory limit, so it is set second; it only
        // exists with swap accounting, and without it swap would stretch the leak.
        if v1_root("memory").is_some_and(|root| root.join("memory.memsw.limit_in_bytes").exists()) {
            limits.push(("memory.memsw.limit_in_bytes", limit.to_string()));
        }
        let dir = join_v1_cgroup("memory", cgroup, &limits)?;
        read_number(&dir.join("memory.usage_in_bytes"))?
    };
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    // One MiB at a time; a non-zero fill touches every page, so it is really charged.
    leak("bytes", base, (MIB as f64, rate), || {
        hoard.push(std::hint::black_box(vec![0xa5; MIB]));
        Ok(())
    })
}

/// A pool: opens N fds evenly over PERIOD_MS, closes them all at once, and again.
fn fd_sawtooth(n: &str, period_ms: &str) -> Result<ExitCode, String> {
    let n: u32 = parse(n, "N")?;
    let period = Duration::from_millis(parse(period_ms, "PERIOD_MS")?);
    let start = Instant::now();
    for cycle in 0_u32.. {
        let cycle_start = start + period * cycle;
        let mut pool = Vec::new();
        for i in 0..n {
            sleep_until(cycle_start + period * i / n);
            pool.push(open_null()?);
        }
        sleep_until(cycle_start + period);
        drop(pool);
    }
    unreachable!("the cycles never end")
}

/// A warm-up: opens N fds evenly over RAMP_MS, then keeps them.
fn fd_warm_up(n: &str, ramp_ms: &str) -> Result<ExitCode, String> {
    let n: u32 = parse(n, "N")?;
    let ramp = Duration::from_millis(parse(ramp_ms, "RAMP_MS")?);
    let start = Instant::now();
    let mut held = Vec::new();
    for i in 0..n {
        sleep_until(start + ramp * i / n);
        held.push(open_null()?);
    }
    println!("warmed up with {n} fds");
    flush();
    park_forever()
}

/// Opens FDS fds, starts THREADS parked threads and SOCKETS connections to our own listener,
/// then holds them all. The listener's side of each connection is accepted and closed at once,
/// by the main thread: a thread blocked in accept() holds a reserved fd that /proc/PID/fd does
/// not list, and this workload's counts must be exact.
fn hold(fds: &str, threads: &str, sockets: &str) -> Result<ExitCode, String> {
    let fds: u32 = parse(fds, "FDS")?;
    let threads: u32 = parse(threads, "THREADS")?;
    let sockets: u32 = parse(sockets, "SOCKETS")?;
    let files = (0..fds)
        .map(|_| open_null())
        .collect::<Result<Vec<_>, _>>()?;
    for _ in 0..threads {
        thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(|| {
                park_forever();
            })
            .map_err(|err| format!("starting a thread: {err}"))?;
    }
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|err| format!("binding: {err}"))?;
    let address = listener.local_addr().map_err(|err| err.to_string())?;
    let mut streams = Vec::new();
    for _ in 0..sockets {
        streams.push(TcpStream::connect(address).map_err(|err| format!("connecting: {err}"))?);
        drop(
            listener
                .accept()
                .map_err(|err| format!("accepting: {err}"))?,
        );
    }
    println!(
        "holding {} fds, {threads} threads, {} sockets",
        files.len(),
        streams.len()
    );
    flush();
    park_forever()
}

/// Runs `take`, which takes `each` more of the resource, `per_second` times a second from now
/// on (the n-th at n / per_second, so a late wake-up catches up instead of slowing the leak),
/// after printing the line tests read. When `take` fails (the limit is reached) the service
/// stays up, exhausted, like a real leaker.
fn leak(
    what: &str,
    base: u64,
    (each, per_second): (f64, f64),
    mut take: impl FnMut() -> Result<(), String>,
) -> Result<ExitCode, String> {
    if per_second.is_nan() || per_second <= 0.0 {
        return Err(format!("a leak rate must be positive, not {per_second}"));
    }
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|err| err.to_string())?;
    let start = Instant::now();
    println!(
        "leaking {what} from {base} at {}/s since {}",
        each * per_second,
        since.as_millis()
    );
    flush();
    for n in 1_u64.. {
        sleep_until(start + Duration::from_secs_f64(n as f64 / per_second));
        if let Err(err) = take() {
            println!("exhausted after {n}: {err}");
            flush();
            park_forever();
        }
    }
    unreachable!("the leak never ends")
}

/// A listener on a free loopback port whose connections are accepted and closed at once, from
/// a thread of its own. Returns the port.
fn listen_and_drop() -> Result<u16, String> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|err| format!("binding: {err}"))?;
    let port = listener.local_addr().map_err(|err| err.to_string())?.port();
    thread::spawn(move || {
        loop {
            match listener.accept() {
                Ok((stream, _)) => drop(stream),
                Err(_) => thread::sleep(ACCEPT_RETRY),
            }
        }
    });
    Ok(port)
}

/// Moves this process (all its threads) into the v1 cgroup `name` of `controller`, after
/// writing `limits` into it. Returns the cgroup's directory.
fn join_v1_cgroup(
    controller: &str,
    name: &str,
    limits: &[(&str, String)],
) -> Result<PathBuf, String> {
    let root = v1_root(controller)
        .ok_or_else(|| format!("this host has no v1 {controller} controller"))?;
    let dir = root.join(crate::cgroupfs::relative_name(name).map_err(|err| err.to_string())?);
    fs::create_dir_all(&dir).map_err(|err| format!("creating {}: {err}", dir.display()))?;
    for (file, value) in limits {
        write(&dir.join(file), value)?;
    }
    write(&dir.join("cgroup.procs"), &std::process::id().to_string())?;
    Ok(dir)
}

/// The mount point of the v1 hierarchy holding `controller`, from /proc/self/mountinfo.
fn v1_root(controller: &str) -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        let is_controller =
            after.next()? == "cgroup" && after.nth(1)?.split(',').any(|o| o == controller);
        let mount_point = before.split_whitespace().nth(4)?;
        is_controller.then(|| PathBuf::from(mount_point))
    })
}

/// Our cgroup in the unified hierarchy.
fn own_v2_cgroup() -> Result<PathBuf, String> {
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|err| err.to_string())?;
    let relative = own
        .lines()
        .find_map(|line| line.strip_prefix("0::/"))
        .ok_or("not in a v2 cgroup")?;
    Ok(crate::cgroupfs::v2_root().join(relative))
}

fn own_fds() -> Result<u64, String> {
    fs::read_dir("/proc/self/fd")
        // read_dir holds one fd of its own while listing.
        .map(|entries| (entries.count() as u64).saturating_sub(1))
        .map_err(|err| format!("listing /proc/self/fd: {err}"))
}

fn open_null() -> Result<File, String> {
    File::open("/dev/null").map_err(|err| format!("opening /dev/null: {err}"))
}

fn read_number(path: &Path) -> Result<u64, String> {
    let text = fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
    parse(text.trim(), &path.display().to_string())
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|err| format!("writing {value} to {}: {err}", path.display()))
}

fn sleep_until(at: Instant) {
    thread::sleep(at.saturating_duration_since(Instant::now()));
}

fn park_forever() -> ! {
    loop {
        thread::park();
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

fn parse<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{what} {value:?} is not a valid number"))
}
