//! One problem per episode; an episode ends when the leak does; units and resources are apart.

use super::*;

fn detected(events: &[(f64, LeakEvent)]) -> usize {
    events
        .iter()
        .filter(|(_, event)| matches!(event, LeakEvent::Detected(_)))
        .count()
}

#[test]
fn a_leak_is_reported_once_then_cleared_then_reported_again() {
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    // Leaks for 10 minutes (reported at 5), then the process is replaced: back to 100.
    run.play(0.0, 600.0, 1.0, |t| 100.0 + t);
    assert_eq!(detected(&run.events), 1);
    assert!(run.report(599.0).reported);
    run.play(600.0, 2400.0, 1.0, |_| 100.0);
    // Leaks again.
    run.play(2400.0, 3300.0, 1.0, |t| 100.0 + (t - 2400.0));

    let kinds: Vec<&str> = run
        .events
        .iter()
        .map(|(_, event)| match event {
            LeakEvent::Detected(_) => "detected",
            LeakEvent::Cleared { .. } => "cleared",
        })
        .collect();
    assert_eq!(kinds, ["detected", "cleared", "detected"]);
    let cleared_at = run.events[1].0;
    assert!(
        (600.0..=1200.0).contains(&cleared_at),
        "cleared at {cleared_at}s"
    );
    assert_eq!(
        run.events[1].1,
        LeakEvent::Cleared {
            unit: 7,
            kind: LeakKind::Fd
        }
    );
}

#[test]
fn an_episode_survives_the_trend_flickering() {
    // A leak that pauses for a minute now and then: the problem stays open.
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    let mut level = 100.0;
    run.play(0.0, 800.0, 1.0, |t| {
        if (t % 180.0) < 120.0 {
            level += 1.0;
        }
        level
    });
    assert_eq!(detected(&run.events), 1);
    assert_eq!(run.events.len(), 1, "{:?}", run.events);
}

#[test]
fn usage_must_fall_clearly_under_the_limit_percent_to_clear() {
    let mut run = Run::new(LeakKind::Thread, Some(1000.0));
    run.play(0.0, 10.0, 1.0, |_| 910.0);
    // Hovering just under 90 %: still the same episode.
    run.play(10.0, 1000.0, 1.0, |t| {
        if (t as u64).is_multiple_of(2) {
            880.0
        } else {
            895.0
        }
    });
    assert_eq!(run.events.len(), 1, "{:?}", run.events);
    // Well under: cleared after a quarter of the window.
    run.play(1000.0, 1200.0, 1.0, |_| 500.0);
    assert_eq!(run.events.len(), 2);
    assert!(matches!(run.events[1], (second, LeakEvent::Cleared { .. }) if second >= 1150.0));
}

#[test]
fn units_are_judged_apart() {
    let mut detector = LeakDetector::new();
    let config = LeakConfig::default();
    let start = Instant::now();
    let mut events = Vec::new();
    for second in 0..900_u64 {
        for (unit, value) in [(1, 100.0 + second as f64), (2, 100.0)] {
            let sample = ResourceSample {
                at: start + Duration::from_secs(second),
                kind: LeakKind::Fd,
                value,
                limit: Some(FD_LIMIT),
                top_process: None,
            };
            events.extend(detector.observe(unit, &config, &sample, UNIX_EPOCH));
        }
    }
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0], LeakEvent::Detected(problem) if problem.unit == 1));
    let now = start + Duration::from_secs(899);
    assert_eq!(detector.trends(2, now)[0].shape, Shape::Flat);
    detector.forget(1);
    assert!(detector.trends(1, now).is_empty());
    assert_eq!(detector.trends(2, now).len(), 1);
}

#[test]
fn resources_of_one_unit_are_judged_apart_and_listed_in_order() {
    let mut detector = LeakDetector::new();
    let config = LeakConfig::default();
    let start = Instant::now();
    let mut events = Vec::new();
    for second in 0..400_u64 {
        for (kind, value) in [
            (LeakKind::Memory, 1e8),
            (LeakKind::Fd, 100.0 + second as f64),
        ] {
            let sample = ResourceSample {
                at: start + Duration::from_secs(second),
                kind,
                value,
                limit: Some(if kind == LeakKind::Memory {
                    1e9
                } else {
                    FD_LIMIT
                }),
                top_process: None,
            };
            events.extend(detector.observe(3, &config, &sample, UNIX_EPOCH));
        }
    }
    assert!(matches!(&events[..], [LeakEvent::Detected(problem)]
        if problem.kind == ProblemKind::Leak(LeakKind::Fd)));
    let kinds: Vec<LeakKind> = detector
        .trends(3, start + Duration::from_secs(399))
        .iter()
        .map(|report| report.kind)
        .collect();
    assert_eq!(kinds, [LeakKind::Fd, LeakKind::Memory]);
}

#[test]
fn a_resource_not_watched_raises_nothing_and_switching_it_off_ends_its_episode() {
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    run.config.kinds = vec![LeakKind::Memory];
    run.play(0.0, 100.0, 1.0, |_| 1000.0);
    assert!(run.events.is_empty());
    assert!(run.detector.trends(7, run.at(99.0)).is_empty());

    run.config = LeakConfig::default();
    run.sample(100.0, 1000.0);
    assert_eq!(detected(&run.events), 1);
    run.config.kinds.clear();
    run.sample(101.0, 1000.0);
    assert!(matches!(run.events[1].1, LeakEvent::Cleared { .. }));
}

#[test]
fn a_resource_not_sampled_for_a_window_leaves_status() {
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    run.play(0.0, 100.0, 1.0, |_| 100.0);
    assert_eq!(run.detector.trends(7, run.at(600.0)).len(), 1);
    assert!(run.detector.trends(7, run.at(700.0)).is_empty());
}

#[test]
fn predicted_exhaustion_counts_down_between_samples() {
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    run.play(0.0, 301.0, 1.0, |t| 100.0 + t);
    let at_sample = run.report(300.0).exhaustion_in.expect("a leak");
    let later = run.report(330.0).exhaustion_in.expect("a leak");
    assert_eq!(at_sample - later, Duration::from_secs(30));
    // 400 + 1/s towards 1024: 624 s.
    assert!(
        (at_sample.as_secs_f64() - 624.0).abs() < 5.0,
        "{at_sample:?}"
    );
}

#[test]
fn a_changed_window_starts_the_series_again() {
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    run.play(0.0, 400.0, 1.0, |t| 100.0 + t);
    assert_eq!(run.report(399.0).shape, Shape::Leak);
    run.config.window = Duration::from_secs(1200);
    run.sample(400.0, 500.0);
    assert_eq!(run.report(400.0).shape, Shape::Unknown);
    assert_eq!(detected(&run.events), 1, "the episode goes on");
}

#[test]
fn samples_out_of_order_or_not_a_number_are_ignored() {
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    run.play(0.0, 400.0, 1.0, |_| 100.0);
    run.sample(400.0, f64::NAN);
    run.sample(200.0, 1000.0);
    assert!(run.events.is_empty(), "{:?}", run.events);
    let report = run.report(400.0);
    assert_eq!((report.value, report.shape), (100.0, Shape::Flat));
}
