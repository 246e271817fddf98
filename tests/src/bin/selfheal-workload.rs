//! Small, predictable services for selfheal's tests, run as systemd units.
//!
//! Usage: selfheal-workload <mode> [args]
//!   sleep                      sleep forever (a healthy service)
//!   exit CODE [AFTER_MS]       sleep AFTER_MS (default 0), then exit with CODE
//!   child-exit CODE [AFTER_MS] a child process exits with CODE after AFTER_MS; we keep sleeping
//!   oom CGROUP_NAME            get OOM-killed by the kernel in a 64 MiB memory cgroup
//!   spawn-then-sleep N         start N children that sleep forever, then sleep forever
//!   http PORT STATEFILE        serve HTTP on 127.0.0.1:PORT, answering each request as
//!                              STATEFILE says at that moment: "STATUS DELAY_MS [BODY]"

use std::{
    fs,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    thread,
    time::Duration,
};

use selfheal_tests::cgroupfs;

const USAGE: &str = "usage: selfheal-workload sleep | exit CODE [AFTER_MS] | child-exit CODE [AFTER_MS] \
                     | oom CGROUP_NAME | spawn-then-sleep N | http PORT STATEFILE";
const MIB: usize = 1 << 20;
/// The limit `oom` puts on its v1 memory cgroup.
const OOM_LIMIT: usize = 64 * MIB;
/// `oom` gives up (and fails) if it is still alive after allocating this much: no limit applied.
const OOM_GIVE_UP: usize = 1024 * MIB;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    // Tests read this line from the journal or a pipe to know the workload started.
    println!("selfheal-workload {mode} pid={}", std::process::id());
    let _ = std::io::stdout().flush();

    let result = match (mode.as_str(), &args[1..]) {
        ("sleep", []) => sleep_forever(),
        ("exit", [code, rest @ ..]) if rest.len() <= 1 => exit(code, rest.first()),
        ("child-exit", [code, rest @ ..]) if rest.len() <= 1 => child_exit(code, rest.first()),
        ("oom", [name]) => oom(name),
        ("spawn-then-sleep", [count]) => spawn_then_sleep(count),
        ("http", [port, state_file]) => http(port, state_file),
        (mode, rest) => match selfheal_tests::workloads::run(mode, rest) {
            Some(result) => result,
            None => Err(format!(
                "unexpected arguments {args:?}\n{USAGE}\n{}",
                selfheal_tests::workloads::USAGE
            )),
        },
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("selfheal-workload {mode}: {err}");
            ExitCode::from(2)
        }
    }
}

fn sleep_forever() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn exit(code: &str, after_ms: Option<&String>) -> Result<ExitCode, String> {
    let code: u8 = parse(code, "CODE")?;
    thread::sleep(Duration::from_millis(
        after_ms.map_or(Ok(0), |ms| parse(ms, "AFTER_MS"))?,
    ));
    Ok(ExitCode::from(code))
}

/// The child is a fresh `selfheal-workload exit` process: same cgroup, its own pid and exit code.
fn child_exit(code: &str, after_ms: Option<&String>) -> Result<ExitCode, String> {
    let code: u8 = parse(code, "CODE")?;
    let after_ms: u64 = after_ms.map_or(Ok(0), |ms| parse(ms, "AFTER_MS"))?;
    let mut child = Command::new(self_exe()?)
        .args(["exit", &code.to_string(), &after_ms.to_string()])
        .spawn()
        .map_err(|err| format!("spawning the child: {err}"))?;
    child
        .wait()
        .map_err(|err| format!("reaping the child: {err}"))?;
    sleep_forever()
}

fn spawn_then_sleep(count: &str) -> Result<ExitCode, String> {
    let count: u32 = parse(count, "N")?;
    let exe = self_exe()?;
    for _ in 0..count {
        Command::new(&exe)
            .arg("sleep")
            .spawn()
            .map_err(|err| format!("spawning a child: {err}"))?;
    }
    sleep_forever()
}

/// A health endpoint whose behaviour a test changes by rewriting STATEFILE: "200 0" answers
/// 200 at once, "500 0" answers 500, "200 300" answers 200 after 300 ms, "200 0 ready" sends
/// the body "ready" (default "ok"). Unreadable or malformed state answers 500. Any path, any
/// method; one thread per connection so a slow answer does not hold up the next.
fn http(port: &str, state_file: &str) -> Result<ExitCode, String> {
    let port: u16 = parse(port, "PORT")?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|err| format!("binding 127.0.0.1:{port}: {err}"))?;
    let local = listener.local_addr().map_err(|err| err.to_string())?;
    println!("listening on {local}");
    let _ = std::io::stdout().flush();
    let state_file = PathBuf::from(state_file);
    for stream in listener.incoming().flatten() {
        let state_file = state_file.clone();
        thread::spawn(move || answer(stream, &state_file));
    }
    Err("the listener stopped".into())
}

fn answer(mut stream: TcpStream, state_file: &Path) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (status, delay_ms, body) = match fs::read_to_string(state_file) {
        Ok(text) => http_state(&text).unwrap_or((500, 0, format!("bad state {text:?}"))),
        Err(err) => (
            500,
            0,
            format!("cannot read {}: {err}", state_file.display()),
        ),
    };
    thread::sleep(Duration::from_millis(delay_ms));
    let reason = if (200..300).contains(&status) {
        "OK"
    } else {
        "Error"
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// "STATUS DELAY_MS [BODY]" → (status, delay, body).
fn http_state(text: &str) -> Option<(u16, u64, String)> {
    let mut words = text.split_whitespace();
    let status = words.next()?.parse().ok()?;
    let delay_ms = words.next().map_or(Some(0), |word| word.parse().ok())?;
    let body = words.collect::<Vec<_>>().join(" ");
    Some((
        status,
        delay_ms,
        if body.is_empty() { "ok".into() } else { body },
    ))
}

/// Allocates and touches memory until the kernel OOM-kills us. On hosts with the v1 memory
/// controller (where the unit's v2 cgroup has no memory controller, so MemoryMax= does nothing)
/// we move ourselves into a v1 memory cgroup limited to 64 MiB; our v2 cgroup, the unit's, stays.
/// On pure v2 hosts the unit's MemoryMax= must provide the limit.
fn oom(name: &str) -> Result<ExitCode, String> {
    match cgroupfs::v1_memory_root() {
        Some(root) => enter_v1_memory_cgroup(&root, name)?,
        None => require_v2_memory_limit()?,
    }
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    while hoard.len() * MIB < OOM_GIVE_UP {
        // Filling with a non-zero byte touches every page, so it is really charged.
        hoard.push(std::hint::black_box(vec![0xa5; MIB]));
    }
    Err(format!(
        "allocated {} MiB and was not OOM-killed",
        hoard.len()
    ))
}

fn enter_v1_memory_cgroup(root: &Path, name: &str) -> Result<(), String> {
    let cgroup = root.join(cgroupfs::relative_name(name).map_err(|err| err.to_string())?);
    fs::create_dir_all(&cgroup).map_err(|err| format!("creating {}: {err}", cgroup.display()))?;
    // memsw (memory + swap) must be >= the memory limit, so set it second; it only exists with
    // swap accounting, and without it swap would let us dodge the OOM killer.
    write(
        &cgroup.join("memory.limit_in_bytes"),
        &OOM_LIMIT.to_string(),
    )?;
    let memsw = cgroup.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        write(&memsw, &OOM_LIMIT.to_string())?;
    }
    write(
        &cgroup.join("cgroup.procs"),
        &std::process::id().to_string(),
    )
}

fn require_v2_memory_limit() -> Result<(), String> {
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|err| err.to_string())?;
    let relative = own
        .lines()
        .find_map(|line| line.strip_prefix("0::/"))
        .ok_or("not in a v2 cgroup")?;
    let max_file = cgroupfs::v2_root().join(relative).join("memory.max");
    let max = fs::read_to_string(&max_file).unwrap_or_else(|_| "max".into());
    if max.trim() == "max" {
        return Err(format!(
            "{} has no limit: give the unit MemoryMax=",
            max_file.display()
        ));
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|err| format!("writing {value} to {}: {err}", path.display()))
}

fn self_exe() -> Result<std::path::PathBuf, String> {
    std::env::current_exe().map_err(|err| format!("finding our own executable: {err}"))
}

fn parse<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{what} {value:?} is not a valid number"))
}
