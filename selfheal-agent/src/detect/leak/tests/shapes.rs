//! Breathing is not leaking: pools, warm-ups, bursts and noise run for ten windows without a
//! single problem, and status names their shape.

use super::*;

/// Ten windows of the default config, sampled every second.
const TEN_WINDOWS: f64 = 6000.0;

/// Plays `value` for ten windows; asserts no problem and that no judgement called it a leak.
fn assert_never_a_leak(kind: LeakKind, limit: f64, mut value: impl FnMut(f64) -> f64) -> Run {
    let mut run = Run::new(kind, Some(limit));
    let mut second = 0.0;
    while second < TEN_WINDOWS {
        run.sample(second, value(second));
        assert_ne!(run.report(second).shape, Shape::Leak, "a leak at {second}s");
        second += 1.0;
    }
    assert!(run.events.is_empty(), "{:?}", run.events);
    run
}

#[test]
fn pool_that_opens_n_then_closes_them_all_never_fires() {
    // Opens 600 connections over a minute, closes them all at once, again and again.
    let mut noise = Noise::new(31);
    let run = assert_never_a_leak(LeakKind::Fd, FD_LIMIT, |t| {
        (40.0 + 10.0 * (t % 60.0) + 2.0 * noise.gauss()).round()
    });
    assert_eq!(run.report(TEN_WINDOWS - 1.0).shape, Shape::Sawtooth);
}

#[test]
fn pool_that_jumps_between_idle_and_busy_never_fires() {
    // 45 s idle at 50 fds, 45 s busy at 650: opens N at once, closes N at once.
    let mut noise = Noise::new(32);
    let run = assert_never_a_leak(LeakKind::Socket, FD_LIMIT, |t| {
        let busy = (t % 90.0) >= 45.0;
        (if busy { 650.0 } else { 50.0 } + 3.0 * noise.gauss()).round()
    });
    assert_eq!(run.report(TEN_WINDOWS - 1.0).shape, Shape::Sawtooth);
}

#[test]
fn pool_that_grows_and_shrinks_slowly_never_fires() {
    // A five-minute triangle between 100 and 700: half the window rising, half falling.
    let mut noise = Noise::new(33);
    let run = assert_never_a_leak(LeakKind::Connection, FD_LIMIT, |t| {
        let phase = (t % 300.0) / 150.0;
        let up = if phase < 1.0 { phase } else { 2.0 - phase };
        (100.0 + 600.0 * up + 3.0 * noise.gauss()).round()
    });
    assert_eq!(run.report(TEN_WINDOWS - 1.0).shape, Shape::Sawtooth);
}

#[test]
fn warm_up_that_levels_off_never_fires() {
    // A logistic from 150 to 800 fds (78 % of the limit), steepest at two minutes.
    let mut noise = Noise::new(34);
    let mut run = assert_never_a_leak(LeakKind::Fd, FD_LIMIT, |t| {
        let filled = 1.0 / (1.0 + (-(t - 120.0) / 25.0).exp());
        (150.0 + 650.0 * filled + 3.0 * noise.gauss()).round()
    });
    assert_eq!(run.report(TEN_WINDOWS - 1.0).shape, Shape::Flat);
    // Replayed: once judged, the warm-up reads as a plateau while it is in the window.
    let mut noise = Noise::new(34);
    run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    run.play(0.0, 301.0, 1.0, |t| {
        let filled = 1.0 / (1.0 + (-(t - 120.0) / 25.0).exp());
        (150.0 + 650.0 * filled + 3.0 * noise.gauss()).round()
    });
    assert_eq!(run.report(300.0).shape, Shape::Plateau);
}

#[test]
fn cache_filling_memory_never_fires() {
    // Page cache filling towards 1.4 of 2 GiB, exponentially, sampled every 5 s.
    let mut noise = Noise::new(35);
    let mut run = Run::new(LeakKind::Memory, Some(2048.0 * MIB));
    run.play(0.0, TEN_WINDOWS, 5.0, |t| {
        (300.0 + 1100.0 * (1.0 - (-t / 60.0).exp())) * MIB + 4.0 * MIB * noise.gauss()
    });
    assert!(run.events.is_empty(), "{:?}", run.events);
}

#[test]
fn a_step_up_is_a_burst_not_a_leak() {
    let mut noise = Noise::new(36);
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    let mut step = |t: f64| (if t < 420.0 { 100.0 } else { 500.0 } + 2.0 * noise.gauss()).round();
    run.play(0.0, 601.0, 1.0, &mut step);
    assert_eq!(run.report(600.0).shape, Shape::Burst);
    run.play(601.0, 901.0, 1.0, &mut step);
    assert_eq!(run.report(900.0).shape, Shape::Burst);
    run.play(901.0, 1800.0, 1.0, &mut step);
    assert_eq!(
        run.report(1799.0).shape,
        Shape::Flat,
        "the step left the window"
    );
    assert!(run.events.is_empty(), "{:?}", run.events);
}

#[test]
fn noise_around_a_constant_never_fires() {
    let mut noise = Noise::new(37);
    let quiet = assert_never_a_leak(LeakKind::Thread, 512.0, |_| {
        (60.0 + 2.0 * noise.gauss()).round()
    });
    assert_eq!(quiet.report(TEN_WINDOWS - 1.0).shape, Shape::Flat);
    let mut noise = Noise::new(38);
    assert_never_a_leak(LeakKind::Fd, FD_LIMIT, |_| {
        (300.0 + 25.0 * noise.gauss()).round()
    });
}

#[test]
fn a_shrinking_resource_is_named_so() {
    let mut run = Run::new(LeakKind::Memory, Some(2048.0 * MIB));
    run.play(0.0, 600.0, 5.0, |t| (1500.0 - t) * MIB);
    assert_eq!(run.report(595.0).shape, Shape::Shrinking);
    assert!(run.report(595.0).slope_per_minute < 0.0);
}

#[test]
fn judging_waits_for_half_the_window_and_enough_samples() {
    // Growth that would be a leak, seen for less than half the window.
    let mut run = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    run.play(0.0, 299.0, 1.0, |t| 100.0 + t);
    assert_eq!(run.report(298.0).shape, Shape::Unknown);
    run.play(299.0, 302.0, 1.0, |t| 100.0 + t);
    assert_eq!(run.report(301.0).shape, Shape::Leak);

    // A sensor reading once a minute reaches `min_samples` after ten minutes, not five.
    let mut sparse = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    sparse.play(0.0, 481.0, 60.0, |t| 100.0 + t);
    assert_eq!(sparse.report(480.0).shape, Shape::Unknown, "9 samples");
    sparse.sample(540.0, 640.0);
    assert_eq!(sparse.report(540.0).shape, Shape::Leak, "10 samples");
}

#[test]
fn pool_that_wanders_slowly_never_fires() {
    // Connections wandering around 400 like a slow random walk (AR(1), time constant ~3
    // minutes, ±30): stretches of a few minutes climb steadily, then fall back.
    for seed in 1..=3 {
        let mut noise = Noise::new(seed * 31_337);
        let mut run = Run::new(LeakKind::Connection, Some(FD_LIMIT));
        let mut wander = 0.0;
        run.play(0.0, TEN_WINDOWS, 1.0, |_| {
            wander = 0.995 * wander + 3.0 * noise.gauss();
            (400.0 + wander).round()
        });
        assert!(run.events.is_empty(), "seed {seed}: {:?}", run.events);
    }
}

/// A unit that warms up, then goes to sleep and is left unsampled while still
/// (`SchedSensor::still`): its next sample, minutes later, is judged with the time it slept held
/// at its value, as if it had been sampled all along, not from the warm-up alone.
#[test]
fn a_still_sleep_after_a_warm_up_is_judged_as_if_it_had_been_sampled() {
    let warm_up = |t: f64| (150.0 + 650.0 / (1.0 + (-(t - 60.0) / 15.0).exp())).round();
    let asleep = warm_up(120.0);
    // Sampled every second throughout.
    let mut sampled = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    sampled.play(0.0, 120.0, 1.0, warm_up);
    sampled.play(120.0, 421.0, 1.0, |_| asleep);
    // Asleep from 120 s and left unsampled until its full read at 420 s.
    let mut held = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    held.play(0.0, 120.0, 1.0, warm_up);
    held.detector.hold(held.unit, held.at(420.0));
    held.sample(420.0, asleep);
    // Neither held nor sampled: the warm-up is all the window holds, and looks like growth.
    let mut unheld = Run::new(LeakKind::Fd, Some(FD_LIMIT));
    unheld.play(0.0, 120.0, 1.0, warm_up);
    unheld.sample(420.0, asleep);

    let shape = sampled.report(420.0).shape;
    assert!(!matches!(shape, Shape::Leak | Shape::Unknown), "{shape:?}");
    assert_eq!(held.report(420.0).shape, shape);
    assert_eq!(unheld.report(420.0).shape, Shape::Leak);
    assert!(held.events.is_empty(), "{:?}", held.events);
}
