//! The restarts a unit received from us: the per-unit budget (at most N per sliding window) and
//! systemd's own start limit both count them.

use std::time::{Duration, Instant};

use super::action::StartLimit;

/// Times of our restarts of one unit, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartHistory {
    times: Vec<Instant>,
}

impl RestartHistory {
    pub fn from_times(mut times: Vec<Instant>) -> Self {
        times.sort();
        Self { times }
    }

    pub fn times(&self) -> &[Instant] {
        &self.times
    }

    pub fn record(&mut self, at: Instant) {
        self.times.push(at);
        self.times.sort();
    }

    pub fn clear(&mut self) {
        self.times.clear();
    }

    /// Drops restarts older than `keep`: nothing looks further back.
    pub fn prune(&mut self, now: Instant, keep: Duration) {
        self.times
            .retain(|t| now.saturating_duration_since(*t) < keep);
    }

    fn within(&self, now: Instant, window: Duration) -> &[Instant] {
        let first = self
            .times
            .partition_point(|t| now.saturating_duration_since(*t) >= window);
        &self.times[first..]
    }

    /// Restarts in the last `window`.
    pub fn used(&self, now: Instant, window: Duration) -> u32 {
        u32::try_from(self.within(now, window).len()).unwrap_or(u32::MAX)
    }

    pub fn left(&self, max: u32, now: Instant, window: Duration) -> u32 {
        max.saturating_sub(self.used(now, window))
    }

    /// When the budget has room again, if it has none now.
    pub fn next_free(&self, max: u32, now: Instant, window: Duration) -> Option<Instant> {
        let recent = self.within(now, window);
        let excess = recent.len().checked_sub(usize::try_from(max).ok()?)?;
        Some(recent[excess] + window)
    }

    /// The earliest time systemd would accept one more start: it refuses once `burst` starts
    /// fell within `interval`. Only our own restarts are known here.
    pub fn start_allowed_at(&self, limit: StartLimit, now: Instant) -> Instant {
        if !limit.is_limited() {
            return now;
        }
        let recent = self.within(now, limit.interval);
        let burst = usize::try_from(limit.burst).unwrap_or(usize::MAX);
        match recent.len().checked_sub(burst) {
            Some(excess) => recent[excess] + limit.interval,
            None => now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn history(now: Instant, ages: &[u64]) -> RestartHistory {
        RestartHistory::from_times(ages.iter().map(|a| now - Duration::from_secs(*a)).collect())
    }

    #[test]
    fn the_budget_counts_restarts_in_the_sliding_window() {
        let now = Instant::now() + HOUR * 2;
        let h = history(now, &[4000, 3000, 100, 10]);
        assert_eq!(h.used(now, HOUR), 3);
        assert_eq!(h.left(3, now, HOUR), 0);
        assert_eq!(h.left(5, now, HOUR), 2);
    }

    #[test]
    fn the_budget_frees_up_when_the_oldest_restart_leaves_the_window() {
        let now = Instant::now() + HOUR * 2;
        let h = history(now, &[3000, 100, 10]);
        assert_eq!(
            h.next_free(3, now, HOUR),
            Some(now + Duration::from_secs(600))
        );
        assert_eq!(h.next_free(4, now, HOUR), None);
    }

    #[test]
    fn systemd_start_limit_delays_a_start_until_the_window_allows() {
        let now = Instant::now() + HOUR;
        let limit = StartLimit {
            burst: 2,
            interval: Duration::from_secs(10),
        };
        let h = history(now, &[8, 3]);
        assert_eq!(h.start_allowed_at(limit, now), now + Duration::from_secs(2));
        let h = history(now, &[12, 3]);
        assert_eq!(h.start_allowed_at(limit, now), now);
    }

    #[test]
    fn no_start_limit_never_delays() {
        let now = Instant::now() + HOUR;
        let h = history(now, &[3, 2, 1]);
        for limit in [
            StartLimit::default(),
            StartLimit {
                burst: 0,
                interval: Duration::from_secs(10),
            },
            StartLimit {
                burst: 1,
                interval: Duration::ZERO,
            },
        ] {
            assert_eq!(h.start_allowed_at(limit, now), now);
        }
    }

    #[test]
    fn pruning_keeps_what_is_still_counted() {
        let now = Instant::now() + HOUR * 2;
        let mut h = history(now, &[5000, 30]);
        h.prune(now, HOUR);
        assert_eq!(h.times(), &[now - Duration::from_secs(30)]);
    }
}
