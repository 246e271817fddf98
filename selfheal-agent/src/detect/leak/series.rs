//! One resource's samples over the sliding window, folded into a bounded number of time bins.
//!
//! A tick's cost must not grow with the sampling rate: Theil–Sen and Mann–Kendall look at
//! every pair of points, so the window keeps at most [`BINS`] of them whatever the rate, each
//! the mean of the samples that fell into its slice of the window. Averaging also damps the
//! noise the trend tests would otherwise have to see through.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ResourceSample;
use super::trend::Point;

/// 60 bins: 1,770 pairs per test, a few microseconds; a 10-minute window gets 10-second bins.
pub(super) const BINS: u32 = 60;

/// The samples that fell into one slice of the window. 48 bytes: a unit keeps up to
/// `BINS + 1` of them for each resource it is watched for.
#[derive(Clone, Debug)]
struct Bin {
    /// Which slice: whole bin widths since the series began.
    index: u32,
    count: u32,
    /// When its first sample was taken, in seconds since the series began.
    first_t: f64,
    /// Sums of the samples' times (seconds since the series began) and values.
    sum_t: f64,
    sum_v: f64,
    low: f64,
    high: f64,
}

#[derive(Clone, Debug)]
pub(super) struct Series {
    /// Where the series' time axis starts; times are kept as seconds since then.
    origin: Instant,
    window: Duration,
    width: Duration,
    bins: VecDeque<Bin>,
    /// The newest sample, as the sensor reported it.
    pub(super) last: ResourceSample,
}

impl Series {
    pub(super) fn new(sample: &ResourceSample, window: Duration) -> Self {
        let mut series = Self {
            origin: sample.at,
            window,
            width: (window / BINS).max(Duration::from_nanos(1)),
            // Grown as bins come: a sleeping unit's series gets one bin per full read (see
            // `SchedSensor::still`), and 1,000 of them would otherwise hold 15 MiB of empty
            // bins.
            bins: VecDeque::new(),
            last: sample.clone(),
        };
        series.add(sample);
        series
    }

    pub(super) fn window(&self) -> Duration {
        self.window
    }

    /// Adds a sample; one older than the newest is a sensor glitch and is ignored (false).
    pub(super) fn push(&mut self, sample: &ResourceSample) -> bool {
        if sample.at < self.last.at {
            return false;
        }
        self.last = sample.clone();
        self.add(sample);
        true
    }

    /// The value did not change from the newest sample until `until` (the unit was still:
    /// none of its tasks ran): one sample of it per bin width in between, a window's worth at
    /// most, so the time it slept counts like time it was sampled.
    pub(super) fn hold(&mut self, until: Instant) {
        let mut at = self.last.at + self.width;
        if let Some(oldest) = until.checked_sub(self.window) {
            at = at.max(oldest);
        }
        while at < until {
            let sample = ResourceSample {
                at,
                ..self.last.clone()
            };
            self.push(&sample);
            at += self.width;
        }
    }

    fn add(&mut self, sample: &ResourceSample) {
        let since = sample.at.duration_since(self.origin);
        // Saturates after 2^32 bins (136 years of 1 s bins): the newest bin then takes it all.
        let index = u32::try_from(since.as_nanos() / self.width.as_nanos()).unwrap_or(u32::MAX);
        let t = since.as_secs_f64();
        match self.bins.back_mut() {
            Some(bin) if bin.index == index => {
                bin.count += 1;
                bin.sum_t += t;
                bin.sum_v += sample.value;
                bin.low = bin.low.min(sample.value);
                bin.high = bin.high.max(sample.value);
            }
            _ => self.bins.push_back(Bin {
                index,
                count: 1,
                first_t: t,
                sum_t: t,
                sum_v: sample.value,
                low: sample.value,
                high: sample.value,
            }),
        }
        // The current bin and the BINS - 1 before it all start after `sample.at - window`.
        let oldest = index.saturating_sub(BINS - 1);
        while self.bins.front().is_some_and(|bin| bin.index < oldest) {
            self.bins.pop_front();
        }
    }

    /// Which slice of time the newest bin covers; a new one means the trend may have changed.
    pub(super) fn newest_bin(&self) -> Option<u32> {
        self.bins.back().map(|bin| bin.index)
    }

    /// Samples in the window.
    pub(super) fn samples(&self) -> usize {
        self.bins.iter().map(|bin| bin.count as usize).sum()
    }

    /// From the oldest sample in the window to the newest.
    pub(super) fn span(&self) -> Duration {
        self.bins.front().map_or(Duration::ZERO, |bin| {
            Duration::from_secs_f64((self.seconds(self.last.at) - bin.first_t).max(0.0))
        })
    }

    /// Seconds since the series began.
    pub(super) fn seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64()
    }

    /// One point per bin, oldest first.
    pub(super) fn points(&self) -> Vec<Point> {
        self.bins
            .iter()
            .map(|bin| {
                let count = f64::from(bin.count);
                Point {
                    t: bin.sum_t / count,
                    v: bin.sum_v / count,
                    low: bin.low,
                    high: bin.high,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::LeakKind;

    fn sample(at: Instant, value: f64) -> ResourceSample {
        ResourceSample {
            at,
            kind: LeakKind::Fd,
            value,
            limit: None,
            top_process: None,
        }
    }

    #[test]
    fn a_bin_stays_small() {
        // 1,000 units × 5 resources × 61 bins: every byte here is 300 kB of the agent's heap.
        assert_eq!(std::mem::size_of::<Bin>(), 48);
    }

    #[test]
    fn samples_older_than_the_window_are_dropped() {
        let start = Instant::now();
        let window = Duration::from_secs(600);
        let mut series = Series::new(&sample(start, 0.0), window);
        let mut now = start;
        for second in 1..=1800 {
            now = start + Duration::from_secs(second);
            series.push(&sample(now, second as f64));
        }
        assert!(series.span() <= window);
        assert!(series.span() >= window - window / BINS);
        assert!(series.samples() <= 601);
        assert!(series.points().len() <= BINS as usize);
        let oldest = series.points()[0].low;
        assert!(oldest >= 1800.0 - 600.0, "oldest value {oldest}");
        assert_eq!(series.last.at, now);
    }

    #[test]
    fn many_samples_per_bin_become_their_mean() {
        let start = Instant::now();
        let mut series = Series::new(&sample(start, 10.0), Duration::from_secs(600));
        series.push(&sample(start + Duration::from_secs(2), 20.0));
        series.push(&sample(start + Duration::from_secs(4), 60.0));
        let points = series.points();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].v, 30.0);
        assert_eq!(points[0].t, 2.0);
        assert_eq!((points[0].low, points[0].high), (10.0, 60.0));
        assert_eq!(series.samples(), 3);
    }

    #[test]
    fn a_sample_older_than_the_newest_is_ignored() {
        let start = Instant::now();
        let mut series = Series::new(
            &sample(start + Duration::from_secs(5), 1.0),
            Duration::from_secs(60),
        );
        assert!(!series.push(&sample(start, 100.0)));
        assert_eq!(series.samples(), 1);
        assert_eq!(series.last.value, 1.0);
    }
}
