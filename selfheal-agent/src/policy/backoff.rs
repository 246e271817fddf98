//! Exponential backoff with jitter. The random source is seeded by the caller, so tests see the
//! same delays every run and units that failed together still spread out in production.

use std::time::Duration;

use super::config::BackoffConfig;

/// SplitMix64: tiny, fast, and good enough to spread restarts; not for anything secret.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn signed_unit(&mut self) -> f64 {
        // The top 53 bits make an exact f64 in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit * 2.0 - 1.0
    }
}

/// The delay before recovery attempt `level` (0 for the first since the unit was last stable):
/// `initial × multiplier^level`, at most `max`, moved by up to ± `jitter` of itself, and never
/// above `max`.
pub fn delay(config: &BackoffConfig, level: u32, jitter: &mut Jitter) -> Duration {
    let max = config.max.as_secs_f64();
    let exponent = i32::try_from(level).unwrap_or(i32::MAX);
    let base = (config.initial.as_secs_f64() * config.multiplier.powi(exponent)).min(max);
    let moved = base * (1.0 + config.jitter * jitter.signed_unit());
    Duration::from_secs_f64(moved.clamp(0.0, max))
}

/// The wait before restart attempt `attempt` (0-based) of an incident. The first attempt is
/// immediate: a crashed service should be back faster than systemd's own `Restart=` would
/// bring it. From the second attempt on, [`delay`] applies at one level below `level` (the
/// first attempt already raised it), so a crash loop waits 1 s, 2 s, 4 s… with the defaults,
/// and a new incident soon after an earlier one starts higher. With `immediate_first = false`
/// every attempt waits [`delay`] at `level`.
pub fn before_attempt(
    config: &BackoffConfig,
    attempt: u32,
    level: u32,
    jitter: &mut Jitter,
) -> Duration {
    match (attempt, config.immediate_first) {
        (0, true) => Duration::ZERO,
        (_, true) => delay(config, level.saturating_sub(1), jitter),
        (_, false) => delay(config, level, jitter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn delays_double_from_one_second_within_ten_percent() {
        let config = BackoffConfig::default();
        let mut jitter = Jitter::new(7);
        for (level, expected) in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0)] {
            let d = secs(delay(&config, level, &mut jitter));
            assert!(
                (expected * 0.9..=expected * 1.1).contains(&d),
                "level {level}: {d} s, expected {expected} s ± 10 %"
            );
        }
    }

    #[test]
    fn delays_never_exceed_the_maximum() {
        let config = BackoffConfig::default();
        let mut jitter = Jitter::new(1);
        for level in [9, 20, 1000, u32::MAX] {
            let d = delay(&config, level, &mut jitter);
            assert!(d <= Duration::from_secs(300), "level {level}: {d:?}");
            assert!(d >= Duration::from_secs(270), "level {level}: {d:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_another_seed_others() {
        let config = BackoffConfig::default();
        let run = |seed| {
            let mut jitter = Jitter::new(seed);
            (0..4)
                .map(|l| delay(&config, l, &mut jitter))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn zero_jitter_gives_exact_delays() {
        let config = BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        };
        let mut jitter = Jitter::new(3);
        assert_eq!(delay(&config, 2, &mut jitter), Duration::from_secs(4));
    }

    #[test]
    fn the_first_attempt_of_an_incident_is_immediate_and_the_next_back_off() {
        let config = BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        };
        let mut jitter = Jitter::new(5);
        let waits: Vec<Duration> = [(0, 0), (1, 1), (2, 2)]
            .iter()
            .map(|&(attempt, level)| before_attempt(&config, attempt, level, &mut jitter))
            .collect();
        assert_eq!(
            waits,
            [
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(2)
            ]
        );
        // A new incident while the backoff is still raised: first attempt immediate anyway.
        assert_eq!(before_attempt(&config, 0, 4, &mut jitter), Duration::ZERO);
        assert_eq!(
            before_attempt(&config, 1, 5, &mut jitter),
            Duration::from_secs(16)
        );
        let waiting = BackoffConfig {
            immediate_first: false,
            ..config
        };
        assert_eq!(
            before_attempt(&waiting, 0, 0, &mut jitter),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn jitter_spreads_both_ways() {
        let mut jitter = Jitter::new(99);
        let draws: Vec<f64> = (0..1000).map(|_| jitter.signed_unit()).collect();
        assert!(draws.iter().all(|d| (-1.0..1.0).contains(d)));
        assert!(draws.iter().any(|d| *d < -0.5) && draws.iter().any(|d| *d > 0.5));
    }
}
