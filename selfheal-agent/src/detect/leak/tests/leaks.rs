//! Leaks of each kind are reported before they exhaust their limit, with a predicted
//! exhaustion within ±25 % of the real one.

use super::*;

/// A resource growing at `rate` per second from `base`, with Gaussian noise of `sigma`,
/// rounded like a count unless it is memory.
struct Leak {
    kind: LeakKind,
    base: f64,
    rate: f64,
    sigma: f64,
    limit: f64,
    /// Seconds between samples.
    every: f64,
}

impl Leak {
    /// When the noiseless line reaches the limit.
    fn exhausts_at(&self) -> f64 {
        (self.limit - self.base) / self.rate
    }

    /// The sensor's readings: the line, noise, rounding for counts.
    fn values(&self, seed: u64) -> impl FnMut(f64) -> f64 {
        let mut noise = Noise::new(seed);
        let (base, rate, sigma) = (self.base, self.rate, self.sigma);
        let round = self.kind != LeakKind::Memory;
        move |t| {
            let v = (base + rate * t + sigma * noise.gauss()).max(0.0);
            if round { v.round() } else { v }
        }
    }

    /// Plays the leak until it is reported or exhausts its limit.
    fn play(&self, seed: u64) -> Run {
        let mut run = Run::new(self.kind, Some(self.limit));
        let mut values = self.values(seed);
        let mut second = 0.0;
        while second < self.exhausts_at() && run.events.is_empty() {
            run.sample(second, values(second));
            second += self.every;
        }
        run
    }

    /// Reported by the trend, before exhaustion, with a predicted exhaustion within ±25 %.
    fn assert_caught(&self, seed: u64) -> Run {
        let run = self.play(seed);
        let (second, problem) = run.first_problem().expect("the leak is reported");
        let real = self.exhausts_at() - second;
        assert!(
            real > 0.0,
            "{:?} reported at {second}s, after exhaustion",
            self.kind
        );
        let predicted = run
            .report(second)
            .exhaustion_in
            .expect("a predicted exhaustion");
        let error = (predicted.as_secs_f64() - real).abs() / real;
        assert!(
            error <= 0.25,
            "{:?}: predicted {predicted:?}, real {real:.0}s ({:.0} % off)",
            self.kind,
            error * 100.0
        );
        assert_eq!(problem.kind, ProblemKind::Leak(self.kind));
        assert_eq!(problem.pid, Some(TOP));
        assert_eq!(problem.detected_at, run.at(second));
        assert!(
            problem.evidence.contains(" grew from "),
            "{}",
            problem.evidence
        );
        assert!(
            problem.evidence.contains("exhaustion in ~"),
            "{}",
            problem.evidence
        );
        assert!(problem.evidence.ends_with("top process 4321 (leaky)"));
        run
    }
}

#[test]
fn steady_fd_leak_is_reported_before_the_limit_with_a_good_exhaustion_estimate() {
    let leak = Leak {
        kind: LeakKind::Fd,
        base: 100.0,
        rate: 2.0,
        sigma: 3.0,
        limit: FD_LIMIT,
        every: 1.0,
    };
    for seed in 1..=5 {
        let run = leak.assert_caught(seed);
        let (second, _) = run.first_problem().expect("reported");
        // As soon as half the window is seen: the leak exhausts in under 8 minutes.
        assert!(
            second <= run.window_secs() / 2.0 + 10.0,
            "reported at {second}s"
        );
    }
}

#[test]
fn socket_leak_is_reported_before_the_limit() {
    Leak {
        kind: LeakKind::Socket,
        base: 50.0,
        rate: 0.5,
        sigma: 5.0,
        limit: FD_LIMIT,
        every: 1.0,
    }
    .assert_caught(11);
}

#[test]
fn connection_leak_is_reported_once_exhaustion_is_within_the_horizon() {
    let leak = Leak {
        kind: LeakKind::Connection,
        base: 10.0,
        rate: 0.2,
        sigma: 2.0,
        limit: FD_LIMIT,
        every: 2.0,
    };
    let run = leak.assert_caught(12);
    let (second, _) = run.first_problem().expect("reported");
    let real_left = leak.exhausts_at() - second;
    // Not before the horizon (with the estimate's slack), not much after.
    assert!(
        (2700.0..=3700.0).contains(&real_left),
        "{real_left:.0}s left at report"
    );
}

#[test]
fn thread_leak_in_single_steps_is_reported_before_the_limit() {
    // One thread every 4 s, exactly: a staircase, no noise.
    Leak {
        kind: LeakKind::Thread,
        base: 20.0,
        rate: 0.25,
        sigma: 0.0,
        limit: 512.0,
        every: 1.0,
    }
    .assert_caught(13);
}

#[test]
fn memory_leak_in_bytes_is_reported_before_the_limit() {
    // 1 MiB/s towards a 2 GiB memory.max, with page cache coming and going by ~8 MiB.
    let run = Leak {
        kind: LeakKind::Memory,
        base: 200.0 * MIB,
        rate: MIB,
        sigma: 8.0 * MIB,
        limit: 2048.0 * MIB,
        every: 5.0,
    }
    .assert_caught(14);
    let (_, problem) = run.first_problem().expect("reported");
    assert!(problem.evidence.contains("MiB/min"), "{}", problem.evidence);
    assert!(
        problem.evidence.contains("limit 2.0 GiB"),
        "{}",
        problem.evidence
    );
}

#[test]
fn memory_leak_under_a_garbage_collector_sawtooth_is_reported() {
    // 0.3 MiB/s of leak under a collector that frees 50 MiB every 40 s.
    let mut run = Run::new(LeakKind::Memory, Some(1024.0 * MIB));
    let mut noise = Noise::new(15);
    let mut second = 0.0;
    while run.events.is_empty() && second < 3000.0 {
        let heap = 200.0 + 0.3 * second + 50.0 * ((second % 40.0) / 40.0) + 2.0 * noise.gauss();
        run.sample(second, heap * MIB);
        second += 1.0;
    }
    let (reported, problem) = run.first_problem().expect("reported");
    // The heap's mean (floor + 25 MiB) reaches the limit at...
    let real = (1024.0 - 225.0) / 0.3 - reported;
    let predicted = run.report(reported).exhaustion_in.expect("a leak");
    assert!(
        (predicted.as_secs_f64() - real).abs() <= 0.25 * real,
        "{predicted:?} vs {real:.0}s"
    );
    assert!(
        problem.evidence.starts_with("memory grew from "),
        "{}",
        problem.evidence
    );
}

#[test]
fn slow_leak_exhaustion_estimate_stays_within_25_percent_until_the_end() {
    // 6 fds a minute from 500 of 1024: the limit is 87 minutes away.
    let leak = Leak {
        kind: LeakKind::Fd,
        base: 500.0,
        rate: 0.1,
        sigma: 4.0,
        limit: FD_LIMIT,
        every: 1.0,
    };
    let run = leak.assert_caught(21);
    let (reported, _) = run.first_problem().expect("reported");
    // Reported when the limit comes within the hour, not earlier.
    assert!(leak.exhausts_at() - reported <= 3600.0 * 1.25);

    // Replayed minute by minute, the estimate holds until the last ten minutes.
    let mut run = Run::new(leak.kind, Some(leak.limit));
    let mut values = leak.values(21);
    let mut checked = 0;
    let mut second = 0.0;
    while second < leak.exhausts_at() - 600.0 {
        run.play(second, second + 60.0, leak.every, &mut values);
        second += 60.0;
        if second <= reported {
            continue;
        }
        let now = second - leak.every;
        let real = leak.exhausts_at() - now;
        let predicted = run.report(now).exhaustion_in.expect("still a leak");
        let error = (predicted.as_secs_f64() - real).abs() / real;
        assert!(
            error <= 0.25,
            "at {now}s: predicted {predicted:?}, real {real:.0}s"
        );
        checked += 1;
    }
    assert!(checked >= 40, "{checked} minutes checked");
}

#[test]
fn usage_over_the_limit_percent_is_a_problem_without_any_trend() {
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    run.sample(0.0, 950.0);
    let (second, problem) = run.first_problem().expect("reported at once");
    assert_eq!(second, 0.0);
    assert_eq!(
        problem.evidence,
        "fds at 950; limit 1024 (93% used, at or above 90%); top process 4321 (leaky)"
    );
    assert_eq!(run.report(0.0).shape, Shape::Unknown);
}

#[test]
fn growth_without_a_limit_shows_in_status_but_is_no_problem() {
    let mut run = Run::new(LeakKind::Connection, None);
    run.play(0.0, 1800.0, 1.0, |t| 10.0 + t);
    assert!(run.events.is_empty(), "{:?}", run.events);
    let report = run.report(1799.0);
    assert_eq!(report.shape, Shape::Leak);
    assert!((report.slope_per_minute - 60.0).abs() < 0.5);
    assert_eq!(report.exhaustion_in, None);
}
