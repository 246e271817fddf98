//! The words of a leak problem: what grew, how fast, towards which limit, until when, and who.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Shape;
use crate::detect::LeakKind;

/// What the evidence is made of.
pub(super) struct Facts<'a> {
    pub kind: LeakKind,
    /// The oldest value in the window, and how long ago it was.
    pub from: f64,
    pub span: Duration,
    pub value: f64,
    pub shape: Shape,
    pub slope_per_minute: f64,
    pub limit: Option<f64>,
    /// Set when usage is at or above this share of the limit.
    pub over_percent: Option<u8>,
    pub exhaustion_in: Option<Duration>,
    pub top_process: Option<&'a (u32, String)>,
}

/// e.g. "fds grew from 120 to 480 in 6m (+60.0/min, steady); limit 1024 (47% used); exhaustion
/// in ~9m at 2025-06-01T12:04:10Z; top process 1234 (web)".
pub(super) fn describe(facts: &Facts<'_>, wall_now: SystemTime) -> String {
    let kind = facts.kind;
    let mut text = if facts.shape == Shape::Leak {
        format!(
            "{} grew from {} to {} in {} ({}, steady)",
            noun(kind),
            quantity(kind, facts.from),
            quantity(kind, facts.value),
            words(facts.span),
            rate(kind, facts.slope_per_minute),
        )
    } else if facts.shape == Shape::Unknown {
        format!("{} at {}", noun(kind), quantity(kind, facts.value))
    } else {
        format!(
            "{} at {} ({}, {})",
            noun(kind),
            quantity(kind, facts.value),
            facts.shape.name(),
            rate(kind, facts.slope_per_minute),
        )
    };
    if let Some(limit) = facts.limit {
        let used = 100.0 * facts.value / limit;
        let _ = write!(text, "; limit {} ({used:.0}% used", quantity(kind, limit));
        if let Some(percent) = facts.over_percent {
            let _ = write!(text, ", at or above {percent}%");
        }
        text.push(')');
    }
    if let Some(left) = facts.exhaustion_in {
        let _ = write!(text, "; exhaustion in ~{}", words(left));
        if let Some(clock) = rfc3339(wall_now + left) {
            let _ = write!(text, " at {clock}");
        }
    }
    if let Some((pid, comm)) = facts.top_process {
        let _ = write!(text, "; top process {pid} ({comm})");
    }
    text
}

/// What is counted, in the plural.
fn noun(kind: LeakKind) -> &'static str {
    match kind {
        LeakKind::Fd => "fds",
        LeakKind::Socket => "sockets",
        LeakKind::Connection => "connections",
        LeakKind::Thread => "threads",
        LeakKind::Memory => "memory",
    }
}

/// Counts as whole numbers, memory in binary units.
fn quantity(kind: LeakKind, value: f64) -> String {
    if kind != LeakKind::Memory {
        return format!("{value:.0}");
    }
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut scaled = value;
    let mut unit = 0;
    while scaled.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{scaled:.0} B")
    } else {
        format!("{scaled:.1} {}", UNITS[unit])
    }
}

fn rate(kind: LeakKind, per_minute: f64) -> String {
    let sign = if per_minute < 0.0 { "-" } else { "+" };
    let magnitude = per_minute.abs();
    if kind == LeakKind::Memory {
        format!("{sign}{}/min", quantity(kind, magnitude))
    } else {
        format!("{sign}{magnitude:.1}/min")
    }
}

/// "45s", "9m", "2h5m": the precision an operator plans with.
pub(super) fn words(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..120 => format!("{seconds}s"),
        120..7200 => format!("{}m", seconds / 60),
        _ => format!("{}h{}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// UTC, to the second; `None` before 1970.
fn rfc3339(at: SystemTime) -> Option<String> {
    let seconds = at.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    ))
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_is_rfc3339_utc() {
        let at = UNIX_EPOCH + Duration::from_secs(1_748_779_450);
        assert_eq!(rfc3339(at).as_deref(), Some("2025-06-01T12:04:10Z"));
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap).as_deref(), Some("2000-02-29T00:00:00Z"));
        assert_eq!(rfc3339(UNIX_EPOCH).as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn memory_reads_in_binary_units_and_counts_as_integers() {
        assert_eq!(
            quantity(LeakKind::Memory, 512.0 * 1024.0 * 1024.0),
            "512.0 MiB"
        );
        assert_eq!(
            quantity(LeakKind::Memory, 3.0 * 1024.0_f64.powi(3) / 2.0),
            "1.5 GiB"
        );
        assert_eq!(quantity(LeakKind::Memory, 800.0), "800 B");
        assert_eq!(quantity(LeakKind::Fd, 480.4), "480");
        assert_eq!(
            rate(LeakKind::Memory, 64.0 * 1024.0 * 1024.0),
            "+64.0 MiB/min"
        );
        assert_eq!(rate(LeakKind::Thread, -2.25), "-2.2/min");
    }

    #[test]
    fn durations_read_at_planning_precision() {
        assert_eq!(words(Duration::from_secs(45)), "45s");
        assert_eq!(words(Duration::from_secs(9 * 60 + 40)), "9m");
        assert_eq!(words(Duration::from_secs(2 * 3600 + 5 * 60 + 59)), "2h5m");
    }

    #[test]
    fn a_leak_reads_as_growth_towards_a_dated_exhaustion() {
        let top = (1234, "web".to_owned());
        let facts = Facts {
            kind: LeakKind::Fd,
            from: 120.0,
            span: Duration::from_secs(360),
            value: 480.0,
            shape: Shape::Leak,
            slope_per_minute: 60.0,
            limit: Some(1024.0),
            over_percent: None,
            exhaustion_in: Some(Duration::from_secs(544)),
            top_process: Some(&top),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_748_779_450 - 544);
        assert_eq!(
            describe(&facts, now),
            "fds grew from 120 to 480 in 6m (+60.0/min, steady); limit 1024 (47% used); \
             exhaustion in ~9m at 2025-06-01T12:04:10Z; top process 1234 (web)"
        );
    }

    #[test]
    fn usage_over_the_threshold_says_so_whatever_the_shape() {
        let facts = Facts {
            kind: LeakKind::Thread,
            from: 950.0,
            span: Duration::from_secs(600),
            value: 950.0,
            shape: Shape::Sawtooth,
            slope_per_minute: 0.0,
            limit: Some(1000.0),
            over_percent: Some(90),
            exhaustion_in: None,
            top_process: None,
        };
        assert_eq!(
            describe(&facts, UNIX_EPOCH),
            "threads at 950 (sawtooth, +0.0/min); limit 1000 (95% used, at or above 90%)"
        );
    }
}
