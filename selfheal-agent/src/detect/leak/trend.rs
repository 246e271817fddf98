//! The shape of a series: a Theil–Sen slope, a Mann–Kendall test of monotonic growth, and
//! the few facts that tell a leak from a pool's breathing, a warm-up and a burst.
//!
//! Both statistics use ranks and medians, not sums of squares, so a few wild samples (a burst
//! of connections, a GC pause) move them little, and growth of any steady form counts.

use serde::Serialize;

/// One bin of the window: mean time (seconds since the series began) and value, and the
/// extremes of the samples in it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Point {
    pub t: f64,
    pub v: f64,
    pub low: f64,
    pub high: f64,
}

/// What the window looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Too few samples, or too short a span, to judge yet.
    Unknown,
    /// Moves less than 5 % of the limit (of its highest value, without a limit).
    Flat,
    /// Grows monotonically, and still grows at the end of the window.
    Leak,
    /// Grew, then stopped: a warm-up, a cache filling.
    Plateau,
    /// One jump, then flat.
    Burst,
    /// Rises and falls without a trend: a pool that grows and shrinks.
    Sawtooth,
    /// Falls monotonically.
    Shrinking,
}

impl Shape {
    /// The word used in evidence and status, as serialized.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Unknown => "unknown",
            Shape::Flat => "flat",
            Shape::Leak => "leak",
            Shape::Plateau => "plateau",
            Shape::Burst => "burst",
            Shape::Sawtooth => "sawtooth",
            Shape::Shrinking => "shrinking",
        }
    }
}

/// One-sided 1 % significance of the Mann–Kendall statistic.
const Z_SIGNIFICANT: f64 = 2.33;
/// Kendall's tau at least this: three pairs in four agree on the direction. Noise reaches it
/// essentially never (tau's standard deviation is 0.09 with 60 points), slow random walks
/// rarely, a leak whose growth over the window is a few times the noise always.
const TAU_MONOTONIC: f64 = 0.5;
/// Growth is still going on when the last third of the window grows at least half as fast as
/// the whole and the first third; a warm-up levelling off does not.
const RECENT_SHARE: f64 = 0.5;
/// A range under 5 % of the scale (the limit, or the value without one) is flat.
const FLAT_SHARE: f64 = 0.05;
/// A move between neighbouring points of at least half the range is a jump, not a slope.
const JUMP_SHARE: f64 = 0.5;
/// The most the Mann–Kendall variance is inflated for persistent noise (z shrinks by up to 5).
const MOST_INFLATION: f64 = 25.0;
/// A line whose rise over the window is this many times what it leaves unexplained is not
/// made by its noise, however persistent the noise is.
const DOMINANT_RISE: f64 = 20.0;

/// The trend of a window of points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Trend {
    pub shape: Shape,
    /// Theil–Sen slope, per second.
    pub slope: f64,
    /// Where the fitted line crosses time 0 (the median of the points' intercepts).
    pub intercept: f64,
}

impl Trend {
    /// Where the fitted line is at `t` seconds.
    pub fn level_at(&self, t: f64) -> f64 {
        self.intercept + self.slope * t
    }
}

/// The trend of `points` (oldest first, at least three); `scale` is what a flat range is
/// measured against.
pub(super) fn judge(points: &[Point], scale: f64) -> Trend {
    // What the judgment below concludes for a series that never moved (every idle unit's),
    // without its pairs: every slope is 0, so is Mann–Kendall's S, and the range is 0.
    if let Some(first) = points.first()
        && points
            .iter()
            .all(|p| p.v == first.v && p.low == first.v && p.high == first.v)
    {
        return Trend {
            shape: Shape::Flat,
            slope: 0.0,
            intercept: first.v,
        };
    }
    judge_pairs(points, scale)
}

/// [`judge`] by every pair of points.
fn judge_pairs(points: &[Point], scale: f64) -> Trend {
    let slope = theil_sen(points);
    let intercept = median(points.iter().map(|p| p.v - slope * p.t).collect());
    let (tau, z) = mann_kendall(points);
    let rising = z >= Z_SIGNIFICANT && tau >= TAU_MONOTONIC && slope > 0.0;
    let shape = if rising && still_growing(points, slope) {
        // A leak must also stand out from persistent noise; a wander that happens to climb
        // is breathing, judged below like any other.
        if z / persistence(points, slope, intercept).sqrt() >= Z_SIGNIFICANT {
            Shape::Leak
        } else {
            breathing(points, scale)
        }
    } else if rising {
        if jumps(points) == (true, false) {
            Shape::Burst
        } else {
            Shape::Plateau
        }
    } else if z <= -Z_SIGNIFICANT && tau <= -TAU_MONOTONIC && slope < 0.0 {
        Shape::Shrinking
    } else {
        breathing(points, scale)
    };
    Trend {
        shape,
        slope,
        intercept,
    }
}

/// A series without a trend: flat, one jump, or rising and falling.
fn breathing(points: &[Point], scale: f64) -> Shape {
    if range(points) <= FLAT_SHARE * scale.abs() {
        Shape::Flat
    } else if jumps(points) == (true, false) {
        Shape::Burst
    } else {
        Shape::Sawtooth
    }
}

/// Whether the last third of the window grows at least [`RECENT_SHARE`] as fast as the whole
/// and as the first third. Against the first third too: when a warm-up's rise is old news at
/// the start of the window, the whole window's slope is already small, and noise in the flat
/// rest can match half of it.
fn still_growing(points: &[Point], slope: f64) -> bool {
    let (start, end) = (points[0].t, points[points.len() - 1].t);
    let third = (end - start) / 3.0;
    let slope_of = |keep: &dyn Fn(f64) -> bool| {
        let part: Vec<Point> = points.iter().copied().filter(|p| keep(p.t)).collect();
        // Too few points to tell: the whole window speaks for them.
        if part.len() < 3 {
            slope
        } else {
            theil_sen(&part)
        }
    };
    let first = slope_of(&|t| t <= start + third);
    let recent = slope_of(&|t| t >= end - third);
    recent >= RECENT_SHARE * slope.max(first)
}

/// How much persistent noise inflates the Mann–Kendall variance (1 for independent noise).
///
/// The test assumes independent points; a pool that wanders (each minute like the last, a slow
/// random walk) makes runs that look like trends, and the window's z is then too confident.
/// Yue and Wang's correction for the lag-1 autocorrelation r of the detrended series,
/// (1 + r) / (1 − r), when r is significant (after correcting its estimate's bias). Skipped
/// when the line dwarfs the residuals (a clean leak's rounding makes patterns that mean
/// nothing); capped so that a long, clean leak stays significant.
fn persistence(points: &[Point], slope: f64, intercept: f64) -> f64 {
    let residuals: Vec<f64> = points
        .iter()
        .map(|p| p.v - (intercept + slope * p.t))
        .collect();
    let n = residuals.len() as f64;
    let energy: f64 = residuals.iter().map(|r| r * r).sum();
    let rise = slope.abs() * (points[points.len() - 1].t - points[0].t);
    if energy <= 0.0 || rise >= DOMINANT_RISE * (energy / n).sqrt() {
        return 1.0;
    }
    let estimate = residuals
        .windows(2)
        .map(|pair| pair[0] * pair[1])
        .sum::<f64>()
        / energy;
    // The estimate runs low by about (1 + 4r) / n in short series (Kendall, 1954).
    let lag1 = estimate + (1.0 + 4.0 * estimate) / n;
    // Two-sided 5 % significance of an autocorrelation of white noise.
    if lag1 <= 1.96 / n.sqrt() {
        return 1.0;
    }
    ((1.0 + lag1) / (1.0 - lag1).max(f64::EPSILON)).clamp(1.0, MOST_INFLATION)
}

/// Whether the series jumps up, and whether it falls, by at least [`JUMP_SHARE`] of its range
/// between points one or two apart (a step inside a bin splits across two).
fn jumps(points: &[Point]) -> (bool, bool) {
    let low = points.iter().map(|p| p.v).fold(f64::INFINITY, f64::min);
    let high = points.iter().map(|p| p.v).fold(f64::NEG_INFINITY, f64::max);
    let big = JUMP_SHARE * (high - low);
    let (mut up, mut down) = (false, false);
    for gap in 1..=2 {
        for pair in points.windows(gap + 1) {
            let step = pair[gap].v - pair[0].v;
            up |= step >= big;
            down |= -step >= big;
        }
    }
    (up, down)
}

/// From the lowest sample to the highest, not just the bins' means: a pool breathing faster
/// than a bin is still breathing.
fn range(points: &[Point]) -> f64 {
    let low = points.iter().map(|p| p.low).fold(f64::INFINITY, f64::min);
    let high = points
        .iter()
        .map(|p| p.high)
        .fold(f64::NEG_INFINITY, f64::max);
    high - low
}

/// The median of the slopes between every pair of points (Theil–Sen).
pub(super) fn theil_sen(points: &[Point]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.t > a.t {
                slopes.push((b.v - a.v) / (b.t - a.t));
            }
        }
    }
    median(slopes)
}

/// Kendall's tau between time and value, and the Mann–Kendall z score (with the variance
/// corrected for ties, and the continuity correction).
pub(super) fn mann_kendall(points: &[Point]) -> (f64, f64) {
    let n = points.len();
    let mut s: i64 = 0;
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            s += match b.v.partial_cmp(&a.v) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    let pairs = (n * n.saturating_sub(1) / 2) as f64;
    let tau = if pairs > 0.0 { s as f64 / pairs } else { 0.0 };
    let spread = |count: usize| {
        let c = count as f64;
        c * (c - 1.0) * (2.0 * c + 5.0)
    };
    let mut values: Vec<f64> = points.iter().map(|p| p.v).collect();
    values.sort_by(f64::total_cmp);
    let ties: f64 = values
        .chunk_by(|a, b| a == b)
        .map(|group| spread(group.len()))
        .sum();
    let variance = (spread(n) - ties) / 18.0;
    let z = if variance <= 0.0 || s == 0 {
        0.0
    } else {
        (s as f64 - s.signum() as f64) / variance.sqrt()
    };
    (tau, z)
}

/// The median; 0 for no values.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if !values.len().is_multiple_of(2) {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(values: &[f64]) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| Point {
                t: i as f64 * 10.0,
                v,
                low: v,
                high: v,
            })
            .collect()
    }

    #[test]
    fn a_series_that_never_moved_is_judged_as_the_pairs_judge_it() {
        for (value, scale) in [(0.0, 0.0), (0.0, 1024.0), (42.0, 0.0), (7.5e8, 1.0e9)] {
            let constant = points(&[value; 60]);
            assert_eq!(
                judge(&constant, scale),
                judge_pairs(&constant, scale),
                "{value}"
            );
        }
        // One point off the line: judged by the pairs.
        let mut almost = [5.0; 60];
        almost[30] = 6.0;
        assert_eq!(
            judge(&points(&almost), 0.0),
            judge_pairs(&points(&almost), 0.0)
        );
    }

    #[test]
    fn theil_sen_recovers_a_line_despite_wild_points() {
        let mut values: Vec<f64> = (0..30).map(|i| 5.0 + 2.0 * i as f64).collect();
        values[7] = 1000.0;
        values[20] = -500.0;
        // 2 per point, points 10 s apart.
        assert!((theil_sen(&points(&values)) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn mann_kendall_sees_strict_growth_as_certain() {
        let values: Vec<f64> = (0..40).map(|i| (i * i) as f64).collect();
        let (tau, z) = mann_kendall(&points(&values));
        assert_eq!(tau, 1.0);
        assert!(z > 8.0, "z {z}");
    }

    #[test]
    fn mann_kendall_finds_no_trend_in_a_constant() {
        assert_eq!(mann_kendall(&points(&[7.0; 30])), (0.0, 0.0));
    }

    #[test]
    fn ties_shrink_the_variance() {
        // A staircase of 6 steps of 5 equal values: S = 375 (15 pairs of steps, 25 pairs of
        // values each),
        // variance (30·29·65 − 6·5·4·15) / 18 = 3041.67 instead of 3141.67 without ties.
        let stairs: Vec<f64> = (0..30).map(|i| (i / 5) as f64).collect();
        let (tau, z) = mann_kendall(&points(&stairs));
        assert!((tau - 375.0 / 435.0).abs() < 1e-12);
        assert!(
            (z - 374.0 / 3_041.666_666_666_667_f64.sqrt()).abs() < 1e-9,
            "z {z}"
        );
    }

    #[test]
    fn a_climbing_wander_is_not_a_leak_but_a_line_with_white_noise_is() {
        // Same rise, a similar spread around it: once wandering (a slow oscillation), once
        // independent noise.
        let wander: Vec<f64> = (0..60)
            .map(|i| 100.0 + i as f64 + 12.0 * (i as f64 / 6.0).sin())
            .collect();
        let mut seed = 7_u64;
        let noisy: Vec<f64> = (0..60)
            .map(|i| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let uniform = (seed >> 11) as f64 / (1_u64 << 53) as f64;
                100.0 + i as f64 + 16.0 * (uniform - 0.5)
            })
            .collect();
        assert_ne!(judge(&points(&wander), 1000.0).shape, Shape::Leak);
        assert_eq!(judge(&points(&noisy), 1000.0).shape, Shape::Leak);
    }

    #[test]
    fn a_leveling_off_rise_is_a_plateau_and_a_straight_one_a_leak() {
        let straight: Vec<f64> = (0..40).map(|i| 100.0 + 3.0 * i as f64).collect();
        let levelled: Vec<f64> = (0..40).map(|i| 100.0 + 3.0 * i.min(20) as f64).collect();
        assert_eq!(judge(&points(&straight), 1000.0).shape, Shape::Leak);
        assert_eq!(judge(&points(&levelled), 1000.0).shape, Shape::Plateau);
    }

    #[test]
    fn a_step_is_a_burst() {
        let step: Vec<f64> = (0..40)
            .map(|i| if i < 25 { 100.0 } else { 400.0 })
            .collect();
        assert_eq!(judge(&points(&step), 1000.0).shape, Shape::Burst);
    }

    #[test]
    fn the_fitted_line_goes_through_the_points() {
        let line: Vec<f64> = (0..40).map(|i| 100.0 + 3.0 * i as f64).collect();
        let trend = judge(&points(&line), 1000.0);
        assert!((trend.slope - 0.3).abs() < 1e-9);
        assert!((trend.level_at(500.0) - 250.0).abs() < 1e-9);
    }
}
