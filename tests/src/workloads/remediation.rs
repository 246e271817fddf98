//! Workloads for the remediation tests: a service that fails its first runs and then stays up,
//! one that probes a TCP address and writes down whether it got through, and one stuck in
//! uninterruptible sleep.

use std::{
    fs,
    io::Write as _,
    net::{SocketAddr, TcpStream},
    path::Path,
    process::ExitCode,
    thread,
    time::Duration,
};

/// How often `connect-loop` tries, and how long one try may take.
const CONNECT_EVERY: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The stack of the `vfork-hang` child, which only calls pause().
const CHILD_STACK: usize = 64 * 1024;

pub fn run(mode: &str, args: &[String]) -> Option<Result<ExitCode, String>> {
    Some(match (mode, args) {
        ("fail-first", [count_file, n, after_ms]) => fail_first(count_file, n, after_ms),
        ("connect-loop", [address, out_file]) => connect_loop(address, out_file),
        ("vfork-hang", []) => vfork_hang(),
        _ => return None,
    })
}

/// A service that is broken for its first N runs, then fixed: the run count lives in a file
/// so it survives the restarts.
fn fail_first(count_file: &str, n: &str, after_ms: &str) -> Result<ExitCode, String> {
    let n: u32 = parse(n, "N")?;
    let after = Duration::from_millis(parse(after_ms, "AFTER_MS")?);
    let path = Path::new(count_file);
    let runs = match fs::read_to_string(path) {
        Ok(text) => parse::<u32>(text.trim(), "the run count")?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
        Err(err) => return Err(format!("reading {}: {err}", path.display())),
    } + 1;
    fs::write(path, runs.to_string())
        .map_err(|err| format!("writing {}: {err}", path.display()))?;
    println!("run {runs} of a service that fails its first {n}");
    let _ = std::io::stdout().flush();
    if runs <= n {
        thread::sleep(after);
        return Ok(ExitCode::from(3));
    }
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Tries to reach ADDR over and over; the file says how the last try went and counts tries, so
/// a test can wait for a try that started after something changed.
fn connect_loop(address: &str, out_file: &str) -> Result<ExitCode, String> {
    let address: SocketAddr = address
        .parse()
        .map_err(|err| format!("ADDR {address:?}: {err}"))?;
    let tmp = format!("{out_file}.tmp");
    for attempt in 1u64.. {
        let verdict = match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(_) => "ok",
            Err(_) => "fail",
        };
        // Written then renamed: a reader never sees half a line.
        fs::write(&tmp, format!("{verdict} {attempt}\n"))
            .and_then(|()| fs::rename(&tmp, out_file))
            .map_err(|err| format!("writing {out_file}: {err}"))?;
        thread::sleep(CONNECT_EVERY);
    }
    Err("ran out of attempts".into())
}

/// The parent of a vfork child is in uninterruptible sleep until the child execs or exits. The
/// child (sharing our memory, on a stack of its own) only ever calls pause(), so we stay in D
/// state until the unit is stopped.
fn vfork_hang() -> Result<ExitCode, String> {
    extern "C" fn child(_: *mut libc::c_void) -> libc::c_int {
        loop {
            // SAFETY: pause has no preconditions; it touches no memory we share.
            unsafe { libc::pause() };
        }
    }
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack grows down, so the child starts at its top; it stays allocated for as
    // long as the child runs, since we cannot return before the child execs or exits.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK);
        libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    if pid < 0 {
        return Err(format!(
            "clone(CLONE_VM | CLONE_VFORK): {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(stack);
    Err(format!("the vfork child {pid} let go of us"))
}

fn parse<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{what} {value:?} is not a valid number"))
}
