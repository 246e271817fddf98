//! What the bench reads from the system: clocks, a process's memory and CPU time, the machine.

use std::{path::Path, process::Command, time::Duration};

use anyhow::Context as _;

use crate::cmd;

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC: the clock of `bpf_ktime_get_ns()`, systemd's `*TimestampMonotonic` and the
/// workloads' dates.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Wall-clock milliseconds (the agent's history records) of a CLOCK_MONOTONIC instant.
pub fn wall_ms_of(monotonic: u64) -> f64 {
    let (wall, mono) = (clock_ns(libc::CLOCK_REALTIME), monotonic_ns());
    (wall as f64 - (mono as f64 - monotonic as f64)) / 1e6
}

/// Memory and CPU time of one process.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub rss_kib: u64,
    /// Peak RSS since the process started.
    pub hwm_kib: u64,
    /// user + system CPU time.
    pub cpu: Duration,
    pub at_ns: u64,
}

pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    let dir = Path::new("/proc").join(pid.to_string());
    let status = std::fs::read_to_string(dir.join("status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(dir.join("stat"))?;
    // Fields after the parenthesised comm: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Usage {
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        cpu: Duration::from_nanos(ticks * 1_000_000_000 / hz),
        at_ns: monotonic_ns(),
    })
}

/// Share of one CPU used between two samples, in percent.
pub fn cpu_percent(before: &Usage, after: &Usage) -> f64 {
    let wall = after.at_ns.saturating_sub(before.at_ns).max(1) as f64;
    100.0 * after.cpu.saturating_sub(before.cpu).as_nanos() as f64 / wall
}

/// Context switches on the whole machine so far (`ctxt` in /proc/stat).
pub fn context_switches() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("ctxt ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Load averages, as /proc/loadavg says them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One line naming the machine: CPU model, cores, memory, kernel, distribution.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU".into(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = cmd::output(Command::new("uname").args(["-r", "-v"])).unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_default();
    let virt = cmd::output(&mut Command::new("systemd-detect-virt"))
        .map(|v| format!(", virtualization: {}", v.trim()))
        .unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB RAM{virt}; kernel {}; {os}",
        kernel.trim()
    )
}

/// Private memory (heap, anonymous mappings, stacks) process `pid` touches over `window`: the
/// `Referenced` pages of its non-file mappings after their accessed bits are cleared
/// (`/proc/PID/clear_refs`). An idle agent's pass touches the same pages pass after pass, so a
/// window of a tick or two is its working set. Unlike CPU time, it does not depend on what the
/// machine charges for memory that went cold (see [`cold_page_ns`]).
pub fn touched_private_kib(pid: u32, window: Duration) -> anyhow::Result<u64> {
    let dir = Path::new("/proc").join(pid.to_string());
    std::fs::write(dir.join("clear_refs"), "1")
        .with_context(|| format!("clearing /proc/{pid}/clear_refs"))?;
    std::thread::sleep(window);
    let smaps = std::fs::read_to_string(dir.join("smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    let mut private = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, perms, offset, dev, inode, then the path if any.
            let path = fields.nth(4);
            private = path.is_none_or(|p| p.starts_with('['));
        } else if first == "Referenced:" && private {
            kib += fields
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(kib)
}

/// What touching one page costs this process after it slept through a tick: the median over a
/// few rounds of one write per page to 4 MiB written before. On bare metal a cache miss (well
/// under 1 µs); on some virtual machines tens of µs, when the host reclaims or tracks guest
/// memory that was not touched for a while. An idle agent's CPU time is its pass's working set
/// times this, which is why its CPU figure moves from run to run on such a machine.
pub fn cold_page_ns() -> f64 {
    const PAGES: usize = 1024;
    let mut buffer = vec![0u8; PAGES * 4096];
    let mut rounds: Vec<f64> = (0..5)
        .map(|round| {
            for page in buffer.chunks_mut(4096) {
                page[0] = page[0].wrapping_add(round);
            }
            std::thread::sleep(Duration::from_secs(1));
            let start = std::time::Instant::now();
            for page in buffer.chunks_mut(4096) {
                // Volatile: the write must reach the page, not be folded away.
                // SAFETY: `page` is a valid, exclusively borrowed slice of at least one byte.
                unsafe { std::ptr::write_volatile(&mut page[0], page[0].wrapping_add(1)) };
            }
            start.elapsed().as_nanos() as f64 / PAGES as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}
