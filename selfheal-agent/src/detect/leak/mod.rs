//! Leak detector (issue 4): resource series per unit → leak problems with time to exhaustion.
//!
//! Each (unit, resource) keeps a sliding window of samples. Once the window is half covered,
//! its trend is judged ([`Shape`]): a leak is significant, monotonic growth that still goes on
//! at the end of the window; a pool's breathing (sawtooth), a warm-up that levelled off
//! (plateau) and a one-off jump (burst) are not. A leak becomes a problem when the fitted line
//! reaches the limit within `horizon`; usage at `limit_percent` of the limit is a problem
//! whatever the shape. One problem per episode; the episode ends once neither holds, with
//! margin, for a quarter of the window. Pure: no I/O, time comes in with the samples.
//!
//! A resource without a limit never raises a problem: without a limit there is no time to
//! exhaustion, and steady growth alone does not tell a leak from a workload that grows. Status
//! still shows its shape. Sensors should pass the limit that will actually bite (RLIMIT_NOFILE
//! for sockets, MemTotal when there is no `memory.max`).
//!
//! A warm-up that keeps growing for longer than half the window cannot be told from a leak by
//! the numbers; a unit that warms up that slowly needs a longer `window`.

mod config;
mod evidence;
mod series;
#[cfg(test)]
mod tests;
mod trend;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant, SystemTime};

pub use config::{ALL_KINDS, LeakConfig, LeakOverrides};
pub use trend::Shape;

use super::{LeakKind, Problem, ProblemKind};
use evidence::Facts;
use series::Series;
use trend::Trend;

/// The window must span this share of `window` before its trend is judged, so the first
/// minutes of a unit (a warm-up, a pool filling) are seen whole.
const JUDGE_AFTER_SHARE: u32 = 2;
/// An episode ends when usage is this far (a share of the limit) under `limit_percent`...
const CLEAR_MARGIN: f64 = 0.05;
/// ...and the predicted exhaustion is beyond this many horizons...
const CLEAR_HORIZONS: u32 = 2;
/// ...for a quarter of the window: a leak's trend flickers in noise, its problem must not.
const CALM_SHARE: u32 = 4;

/// One reading of one resource of a unit.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceSample {
    pub at: Instant,
    pub kind: LeakKind,
    /// Current usage: open fds, live sockets, TCP connections, tasks, bytes of memory.
    pub value: f64,
    /// The limit usage runs into (RLIMIT_NOFILE, TasksMax/pids.max, MemoryMax/memory.max...),
    /// when there is one.
    pub limit: Option<f64>,
    /// The process responsible for most of the usage (pid, comm), when known.
    pub top_process: Option<(u32, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LeakEvent {
    /// A leak episode began; its kind is `ProblemKind::Leak`.
    Detected(Problem),
    /// The episode of this resource is over.
    Cleared { unit: u32, kind: LeakKind },
}

/// What status shows about one resource of a unit.
#[derive(Clone, Debug, PartialEq)]
pub struct TrendReport {
    pub kind: LeakKind,
    pub value: f64,
    pub limit: Option<f64>,
    pub shape: Shape,
    /// Theil–Sen slope over the window; 0 until the shape is known.
    pub slope_per_minute: f64,
    /// When the fitted line reaches the limit; only for a leak with a limit.
    pub exhaustion_in: Option<Duration>,
    pub top_process: Option<(u32, String)>,
    /// A problem was raised and its episode is not over.
    pub reported: bool,
}

#[derive(Debug, Default)]
pub struct LeakDetector {
    watches: HashMap<(u32, LeakKind), Watch>,
}

#[derive(Debug)]
struct Watch {
    series: Series,
    /// The trend as of the newest bin at the time; `None` while it cannot be judged yet.
    /// Theil–Sen and Mann–Kendall look at every pair of bins: once per bin is enough, once per
    /// sample would be wasteful.
    trend: Option<Trend>,
    judged_bin: Option<u32>,
    report: TrendReport,
    open: bool,
    /// Since when neither condition has held, in an open episode.
    calm_since: Option<Instant>,
}

impl LeakDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample of `unit` and judges its resource; `sample.at` is the time and `wall_now`
    /// only dates the predicted exhaustion in the evidence. At most one event per sample; a
    /// sample older than the newest, or whose value is not a number, is ignored.
    pub fn observe(
        &mut self,
        unit: u32,
        config: &LeakConfig,
        sample: &ResourceSample,
        wall_now: SystemTime,
    ) -> Option<LeakEvent> {
        let kind = sample.kind;
        if !sample.value.is_finite() {
            return None;
        }
        if !config.watches(kind) {
            let watch = self.watches.remove(&(unit, kind))?;
            return watch.open.then_some(LeakEvent::Cleared { unit, kind });
        }
        let watch = match self.watches.entry((unit, kind)) {
            Entry::Occupied(entry) => {
                let watch = entry.into_mut();
                if watch.series.window() != config.window {
                    // A reloaded config: the old bins are the wrong size. The episode stays.
                    watch.series = Series::new(sample, config.window);
                    watch.judged_bin = None;
                } else if !watch.series.push(sample) {
                    return None;
                }
                watch
            }
            Entry::Vacant(entry) => entry.insert(Watch {
                series: Series::new(sample, config.window),
                trend: None,
                judged_bin: None,
                report: unknown(sample),
                open: false,
                calm_since: None,
            }),
        };
        if watch.series.newest_bin() != watch.judged_bin {
            watch.trend = judge(&watch.series, config);
            watch.judged_bin = watch.series.newest_bin();
        }
        watch.report = report(&watch.series, watch.trend.as_ref());
        watch.report.reported = watch.open;
        watch.episode(unit, config, wall_now)
    }

    /// The unit's resources as last judged, in [`ALL_KINDS`] order; `now` ages the predicted
    /// exhaustion, and a resource not sampled for a whole window is left out.
    pub fn trends(&self, unit: u32, now: Instant) -> Vec<TrendReport> {
        ALL_KINDS
            .iter()
            .filter_map(|kind| self.watches.get(&(unit, *kind)))
            .filter_map(|watch| {
                let age = now.saturating_duration_since(watch.series.last.at);
                (age <= watch.series.window()).then(|| TrendReport {
                    exhaustion_in: watch
                        .report
                        .exhaustion_in
                        .map(|left| left.saturating_sub(age)),
                    ..watch.report.clone()
                })
            })
            .collect()
    }

    /// The unit was still (none of its tasks ran, so none of its resources changed) from its
    /// last samples until `until`: its series hold their last values over that time, and are
    /// judged with them at the next sample.
    pub fn hold(&mut self, unit: u32, until: Instant) {
        for kind in ALL_KINDS {
            if let Some(watch) = self.watches.get_mut(&(unit, kind)) {
                watch.series.hold(until);
            }
        }
    }

    /// Whether a leak of the unit is reported and not yet over.
    pub fn open(&self, unit: u32) -> bool {
        ALL_KINDS
            .iter()
            .any(|kind| self.watches.get(&(unit, *kind)).is_some_and(|w| w.open))
    }

    /// Drops everything about `unit`, without events: for a unit no longer supervised, or whose
    /// processes were replaced (a restart), since the old series describes processes that are
    /// gone.
    pub fn forget(&mut self, unit: u32) {
        self.watches.retain(|(owner, _), _| *owner != unit);
    }
}

impl Watch {
    /// Opens or closes the episode after the report was updated.
    fn episode(
        &mut self,
        unit: u32,
        config: &LeakConfig,
        wall_now: SystemTime,
    ) -> Option<LeakEvent> {
        let report = &self.report;
        let now = self.series.last.at;
        let limit = positive_limit(&self.series.last);
        let value = report.value;
        let exhaustion_in = report.exhaustion_in;
        let usage_at = |fraction: f64| limit.is_some_and(|limit| value >= fraction * limit);
        let exhausts_within = |horizon: Duration| exhaustion_in.is_some_and(|left| left <= horizon);
        let over_limit_percent = usage_at(config.limit_fraction());
        let due = over_limit_percent || exhausts_within(config.horizon);
        if !self.open {
            if !due {
                return None;
            }
            self.open = true;
            self.calm_since = None;
            self.report.reported = true;
            return Some(LeakEvent::Detected(self.problem(
                unit,
                config,
                over_limit_percent,
                wall_now,
            )));
        }
        let holds = usage_at(config.limit_fraction() - CLEAR_MARGIN)
            || exhausts_within(config.horizon * CLEAR_HORIZONS);
        if holds {
            self.calm_since = None;
            return None;
        }
        let calm_since = *self.calm_since.get_or_insert(now);
        if now.duration_since(calm_since) < config.window / CALM_SHARE {
            return None;
        }
        self.open = false;
        self.calm_since = None;
        self.report.reported = false;
        Some(LeakEvent::Cleared {
            unit,
            kind: self.report.kind,
        })
    }

    fn problem(
        &self,
        unit: u32,
        config: &LeakConfig,
        over_limit_percent: bool,
        wall_now: SystemTime,
    ) -> Problem {
        let report = &self.report;
        let from = self
            .series
            .points()
            .first()
            .map_or(report.value, |point| point.v);
        let facts = Facts {
            kind: report.kind,
            from,
            span: self.series.span(),
            value: report.value,
            shape: report.shape,
            slope_per_minute: report.slope_per_minute,
            limit: report.limit,
            over_percent: over_limit_percent.then_some(config.limit_percent),
            exhaustion_in: report.exhaustion_in,
            top_process: report.top_process.as_ref(),
        };
        Problem {
            unit,
            kind: ProblemKind::Leak(report.kind),
            detected_at: self.series.last.at,
            evidence: evidence::describe(&facts, wall_now),
            pid: report.top_process.as_ref().map(|(pid, _)| *pid),
            unkillable: false,
        }
    }
}

/// The report of a resource whose trend is not known yet.
fn unknown(sample: &ResourceSample) -> TrendReport {
    TrendReport {
        kind: sample.kind,
        value: sample.value,
        limit: sample.limit,
        shape: Shape::Unknown,
        slope_per_minute: 0.0,
        exhaustion_in: None,
        top_process: sample.top_process.clone(),
        reported: false,
    }
}

/// The series' trend, once it holds enough samples over enough time.
fn judge(series: &Series, config: &LeakConfig) -> Option<Trend> {
    let points = series.points();
    let ready = series.samples() >= config.min_samples
        && series.span() >= config.window / JUDGE_AFTER_SHARE
        && points.len() >= 3;
    if !ready {
        return None;
    }
    let scale = positive_limit(&series.last)
        .unwrap_or_else(|| points.iter().map(|p| p.high.abs()).fold(0.0, f64::max));
    Some(trend::judge(&points, scale))
}

/// The newest sample, seen through the trend.
fn report(series: &Series, trend: Option<&Trend>) -> TrendReport {
    let last = &series.last;
    let mut report = unknown(last);
    let Some(trend) = trend else {
        return report;
    };
    report.shape = trend.shape;
    report.slope_per_minute = trend.slope * 60.0;
    if trend.shape == Shape::Leak && trend.slope > 0.0 {
        let level = trend.level_at(series.seconds(last.at));
        report.exhaustion_in = positive_limit(last).and_then(|limit| {
            let left = (limit - level).max(0.0) / trend.slope;
            // Growth so slow that its end is beyond a Duration is not in sight.
            Duration::try_from_secs_f64(left).ok()
        });
    }
    report
}

/// A limit of zero or less is no limit a resource can run into.
fn positive_limit(sample: &ResourceSample) -> Option<f64> {
    sample.limit.filter(|limit| *limit > 0.0)
}
