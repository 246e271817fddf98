//! Pressure (PSI) and CPU throttling of a unit's cgroup, on pure v2 and hybrid hosts.

use std::path::Path;

use super::cgroup_v1::{Controller, V1Dirs};

/// `some avg10` of `<dir>/<resource>.pressure` ("cpu", "memory", "io"), in percent.
pub fn psi_some_avg10(v2_dir: &Path, resource: &str) -> Option<f64> {
    let text = std::fs::read_to_string(v2_dir.join(format!("{resource}.pressure"))).ok()?;
    parse_psi_some_avg10(&text)
}

/// The parser behind [`psi_some_avg10`], public for the fuzzer.
pub fn parse_psi_some_avg10(text: &str) -> Option<f64> {
    let some = text.lines().find(|l| l.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// Throttling by the cgroup's own CPU quota: (periods throttled, time throttled in ns).
/// v2 keeps it in the unit's `cpu.stat` when the cpu controller is enabled there; on hybrid
/// hosts the cpu controller is v1, found through the process's /proc/PID/cgroup.
pub fn cpu_throttling(v2_dir: &Path, pid: Option<u32>, v1: &mut V1Dirs) -> Option<(u64, u64)> {
    if let Ok(text) = std::fs::read_to_string(v2_dir.join("cpu.stat"))
        && let Some(t) = parse_throttling(&text, "throttled_usec", 1000)
    {
        return Some(t);
    }
    let dir = v1.dir(pid?, Controller::Cpu)?;
    let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    parse_throttling(&text, "throttled_time", 1)
}

/// The parser behind [`cpu_throttling`] (`to_ns`: nanoseconds per unit of `time_key`), public
/// for the fuzzer.
pub fn parse_throttling(text: &str, time_key: &str, to_ns: u64) -> Option<(u64, u64)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    // The kernel's counters are u64 too: saturate rather than overflow on absurd ones.
    Some((
        field("nr_throttled")?,
        field(time_key)?.saturating_mul(to_ns),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_some_avg10_is_read_from_the_some_line() {
        let text = "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=5\n";
        assert_eq!(parse_psi_some_avg10(text), Some(12.5));
    }

    #[test]
    fn throttling_is_read_in_nanoseconds_from_v1_and_v2_formats() {
        let v2 = "usage_usec 100\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2500\n";
        assert_eq!(
            parse_throttling(v2, "throttled_usec", 1000),
            Some((4, 2_500_000))
        );
        let v1 = "nr_periods 10\nnr_throttled 3\nthrottled_time 777\n";
        assert_eq!(parse_throttling(v1, "throttled_time", 1), Some((3, 777)));
        assert_eq!(
            parse_throttling("usage_usec 1\n", "throttled_usec", 1000),
            None
        );
    }

    /// Regression (found writing its fuzz target): microseconds beyond u64::MAX / 1000 overflowed
    /// the conversion.
    #[test]
    fn a_throttled_time_too_large_for_nanoseconds_saturates() {
        let v2 = "nr_throttled 1\nthrottled_usec 18446744073709552\n";
        assert_eq!(
            parse_throttling(v2, "throttled_usec", 1000),
            Some((1, u64::MAX))
        );
    }
}
