//! Probe detector (issue 7): probe results and custom findings in, problems out. Pure: time
//! comes from the results' `at` and from [`ProbeDetector::unit_started`]'s `now`.
//!
//! - `consecutive_failures`: `consecutive_failures` failed probes in a row.
//! - `performance_degradation`: the median latency of the last `baseline_ops` successful probes
//!   is at least `degradation_ratio` × the baseline (the median of the `baseline_ops` healthy
//!   latencies learned before), or more than `error_rate` of the last `error_window` probes
//!   failed. Judged on successes only: a unit that is down is `consecutive_failures`' business.
//! - `integration_failure`: a dependency's probe failed `consecutive_failures` times in a row.
//! - custom kinds, raised by operator-written detectors.
//!
//! Each is detected once per episode and cleared when healthy again. A (re)start of the unit
//! silently ends its open episodes, integration failures excepted (those are the dependency's):
//! the restart was the answer, and trouble that outlives it is a new episode. For `grace`
//! after a start the unit's own probes are not judged: failures do not count and latencies
//! are neither learned nor compared, so a slow start-up is neither a failure nor a baseline.

mod latency;
mod status;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use super::{Problem, ProblemKind};
use crate::sensors::probes::{CustomFinding, ProbeResult};
pub use latency::LATENCY_FLOOR;
use latency::{floored, median, ms, push_bounded};
pub use status::ProbeStatus;

/// How one probe's results are judged. The defaults are the seeds'.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeRules {
    /// Failures count as the unit's `integration_failure`; latency is not judged.
    pub dependency: bool,
    pub consecutive_failures: u32,
    pub degradation_ratio: f64,
    /// Probes in the baseline and in the window compared with it.
    pub baseline_ops: usize,
    pub error_rate: f64,
    /// Probes the error rate is counted over. Larger than `(consecutive_failures - 1) /
    /// error_rate` by default, so a short outage that heals by itself raises nothing.
    pub error_window: usize,
    pub grace: Duration,
}

impl Default for ProbeRules {
    fn default() -> Self {
        Self {
            dependency: false,
            consecutive_failures: 5,
            degradation_ratio: 2.0,
            baseline_ops: 10,
            error_rate: 0.1,
            error_window: 50,
            grace: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeEvent {
    Detected(Problem),
    /// The episode of `kind` on `unit` is over: the unit (or its dependency) is healthy again.
    Cleared {
        unit: u32,
        kind: ProblemKind,
        at: Instant,
        evidence: String,
    },
}

#[derive(Debug, Default)]
pub struct ProbeDetector {
    units: HashMap<u32, UnitProbes>,
}

#[derive(Debug, Default)]
struct UnitProbes {
    started: Option<Instant>,
    /// In registration (config) order.
    probes: Vec<ProbeState>,
    /// Open custom episodes: detector name → kind.
    custom: Vec<(String, ProblemKind)>,
}

impl ProbeDetector {
    /// Declares a probe, so it shows in status before its first result. Results of a probe not
    /// declared are ignored.
    pub fn add_probe(&mut self, unit: u32, name: &str, rules: ProbeRules) {
        let probes = &mut self.units.entry(unit).or_default().probes;
        match probes.iter_mut().find(|p| p.name == name) {
            Some(probe) => probe.rules = rules,
            None => probes.push(ProbeState::new(name, rules)),
        }
    }

    /// The unit's probes and custom detectors from now on (at start, or a reload changed
    /// them): a probe kept keeps its state (an open episode goes on) under its new rules, one
    /// added starts fresh, one removed goes. The episodes open on a probe or detector that
    /// went are over, said at `at`: nothing would ever end them otherwise, and the policy
    /// would go on treating the unit for a problem nobody watches any more.
    pub fn set_probes(
        &mut self,
        unit: u32,
        probes: impl IntoIterator<Item = (String, ProbeRules)>,
        detectors: &[String],
        at: Instant,
    ) -> Vec<ProbeEvent> {
        let entry = self.units.entry(unit).or_default();
        let mut old = std::mem::take(&mut entry.probes);
        for (name, rules) in probes {
            let state = match old.iter().position(|p| p.name == name) {
                Some(index) => {
                    let mut kept = old.swap_remove(index);
                    kept.rules = rules;
                    kept
                }
                None => ProbeState::new(&name, rules),
            };
            entry.probes.push(state);
        }
        let cleared = |kind, what: &str, name: &str| ProbeEvent::Cleared {
            unit,
            kind,
            at,
            evidence: format!("{what} {name:?} was removed from the config"),
        };
        let mut events = Vec::new();
        for gone in old {
            if gone.failing {
                let kind = if gone.rules.dependency {
                    ProblemKind::IntegrationFailure
                } else {
                    ProblemKind::ConsecutiveFailures
                };
                events.push(cleared(kind, "probe", &gone.name));
            }
            if gone.degraded {
                events.push(cleared(
                    ProblemKind::PerformanceDegradation,
                    "probe",
                    &gone.name,
                ));
            }
        }
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut entry.custom)
            .into_iter()
            .partition(|(detector, _)| detectors.contains(detector));
        entry.custom = kept;
        for (detector, kind) in gone {
            events.push(cleared(kind, "detector", &detector));
        }
        events
    }

    /// Whether the unit has the probe `name` (now).
    pub fn declares(&self, unit: u32, name: &str) -> bool {
        self.units
            .get(&unit)
            .is_some_and(|u| u.probes.iter().any(|p| p.name == name))
    }

    /// The unit is no longer monitored: its probes' state goes.
    pub fn forget(&mut self, unit: u32) {
        self.units.remove(&unit);
    }

    /// The unit (re)started at `now`: its grace period begins and its episodes end.
    pub fn unit_started(&mut self, unit: u32, now: Instant) {
        let unit = self.units.entry(unit).or_default();
        unit.started = Some(now);
        for probe in unit.probes.iter_mut().filter(|p| !p.rules.dependency) {
            probe.restart();
        }
        unit.custom.clear();
    }

    pub fn on_result(&mut self, result: &ProbeResult) -> Vec<ProbeEvent> {
        // A probe the unit does not declare (any more): a result sent before a reload replaced
        // it, not one to judge or show.
        let Some(unit) = self.units.get_mut(&result.unit) else {
            return Vec::new();
        };
        let Some(probe) = unit.probes.iter_mut().find(|p| p.name == result.probe) else {
            return Vec::new();
        };
        let in_grace = unit.started.is_some_and(|started| {
            result.at.saturating_duration_since(started) < probe.rules.grace
        });
        probe.observe(result.unit, result, in_grace)
    }

    pub fn on_finding(&mut self, finding: &CustomFinding) -> Vec<ProbeEvent> {
        let open = &mut self.units.entry(finding.unit).or_default().custom;
        let evidence = format!("detector {:?}: {}", finding.detector, finding.evidence);
        let new_kind = (!finding.ok).then(|| ProblemKind::from_name(&finding.kind));
        let mut events = Vec::new();
        if let Some(index) = open.iter().position(|(name, _)| *name == finding.detector) {
            if new_kind.as_ref() == Some(&open[index].1) {
                return events;
            }
            let (_, kind) = open.remove(index);
            events.push(ProbeEvent::Cleared {
                unit: finding.unit,
                kind,
                at: finding.at,
                evidence: evidence.clone(),
            });
        }
        if let Some(kind) = new_kind {
            open.push((finding.detector.clone(), kind.clone()));
            events.push(detected(finding.unit, kind, finding.at, evidence));
        }
        events
    }

    pub fn probe_status(&self, unit: u32) -> Vec<ProbeStatus> {
        let Some(unit) = self.units.get(&unit) else {
            return Vec::new();
        };
        unit.probes.iter().map(ProbeState::status).collect()
    }
}

#[derive(Debug)]
struct ProbeState {
    name: String,
    rules: ProbeRules,
    /// Judged failures in a row, and when the first of them ended.
    streak: u32,
    streak_since: Option<Instant>,
    /// A `consecutive_failures` (or `integration_failure`) episode is open.
    failing: bool,
    /// A `performance_degradation` episode is open.
    degraded: bool,
    /// The last `baseline_ops` healthy latencies: the baseline is their median.
    learned: VecDeque<Duration>,
    /// The last `baseline_ops` successful latencies since the unit started.
    recent: VecDeque<Duration>,
    /// The last `error_window` outcomes since the unit started, `true` for a failure.
    outcomes: VecDeque<bool>,
    last: Option<(bool, Duration, String)>,
    checks: u64,
    failures: u64,
}

impl ProbeState {
    fn new(name: &str, rules: ProbeRules) -> Self {
        Self {
            name: name.to_owned(),
            rules,
            streak: 0,
            streak_since: None,
            failing: false,
            degraded: false,
            learned: VecDeque::new(),
            recent: VecDeque::new(),
            outcomes: VecDeque::new(),
            last: None,
            checks: 0,
            failures: 0,
        }
    }

    /// The unit restarted: a new episode begins; what healthy looks like (`learned`) stays.
    fn restart(&mut self) {
        self.streak = 0;
        self.streak_since = None;
        self.failing = false;
        self.degraded = false;
        self.recent.clear();
        self.outcomes.clear();
    }

    fn observe(&mut self, unit: u32, result: &ProbeResult, in_grace: bool) -> Vec<ProbeEvent> {
        self.checks += 1;
        self.failures += u64::from(!result.ok);
        self.last = Some((result.ok, result.latency, result.detail.clone()));
        let judged = self.rules.dependency || !in_grace;
        let mut events = Vec::new();
        self.judge_streak(unit, result, judged, &mut events);
        if judged && !self.rules.dependency {
            self.judge_performance(unit, result, &mut events);
        }
        events
    }

    fn judge_streak(
        &mut self,
        unit: u32,
        result: &ProbeResult,
        judged: bool,
        events: &mut Vec<ProbeEvent>,
    ) {
        let (kind, what) = if self.rules.dependency {
            (ProblemKind::IntegrationFailure, "dependency probe")
        } else {
            (ProblemKind::ConsecutiveFailures, "probe")
        };
        if result.ok {
            if self.failing {
                self.failing = false;
                events.push(ProbeEvent::Cleared {
                    unit,
                    kind,
                    at: result.at,
                    evidence: format!("{what} {:?} succeeds again: {}", self.name, result.detail),
                });
            }
            self.streak = 0;
            self.streak_since = None;
        } else if judged {
            self.streak += 1;
            let since = *self.streak_since.get_or_insert(result.at);
            if !self.failing && self.streak >= self.rules.consecutive_failures {
                self.failing = true;
                let evidence = format!(
                    "{what} {:?} failed {} times in a row (threshold {}); last: {}",
                    self.name, self.streak, self.rules.consecutive_failures, result.detail
                );
                events.push(detected(unit, kind, since, evidence));
            }
        }
    }

    fn judge_performance(&mut self, unit: u32, result: &ProbeResult, events: &mut Vec<ProbeEvent>) {
        push_bounded(&mut self.outcomes, !result.ok, self.rules.error_window);
        if !result.ok {
            return;
        }
        let baseline = self.baseline();
        push_bounded(&mut self.recent, result.latency, self.rules.baseline_ops);
        let mut reasons = Vec::new();
        if let (Some(baseline), Some(current)) = (baseline, self.current()) {
            let ratio = floored(current).as_secs_f64() / floored(baseline).as_secs_f64();
            if ratio >= self.rules.degradation_ratio {
                let floor_note = if baseline < LATENCY_FLOOR {
                    format!(" (latencies under {} count as {0})", ms(LATENCY_FLOOR))
                } else {
                    String::new()
                };
                reasons.push(format!(
                    "median latency {} over the last {} probes vs baseline {} ({ratio:.1}×, \
                     threshold {}×){floor_note}",
                    ms(current),
                    self.recent.len(),
                    ms(baseline),
                    self.rules.degradation_ratio,
                ));
            }
        }
        let failed = self.outcomes.iter().filter(|failed| **failed).count();
        let window = self.rules.error_window;
        if failed as f64 > self.rules.error_rate * window as f64 {
            reasons.push(format!(
                "{failed} failures in the last {window} probes ({:.0} %, threshold {:.0} %)",
                100.0 * failed as f64 / window as f64,
                100.0 * self.rules.error_rate,
            ));
        }
        match (reasons.is_empty(), self.degraded) {
            (false, false) => {
                self.degraded = true;
                let evidence = format!("probe {:?}: {}", self.name, reasons.join("; "));
                let kind = ProblemKind::PerformanceDegradation;
                events.push(detected(unit, kind, result.at, evidence));
            }
            (true, true) => {
                self.degraded = false;
                events.push(ProbeEvent::Cleared {
                    unit,
                    kind: ProblemKind::PerformanceDegradation,
                    at: result.at,
                    evidence: format!(
                        "probe {:?} is back to normal: {}",
                        self.name,
                        self.summary()
                    ),
                });
            }
            _ => {}
        }
        // Only healthy latencies teach the baseline, so a slowdown cannot become the norm.
        let slow = baseline.is_some_and(|baseline| {
            floored(result.latency) >= floored(baseline).mul_f64(self.rules.degradation_ratio)
        });
        if !self.degraded && !slow {
            push_bounded(&mut self.learned, result.latency, self.rules.baseline_ops);
        }
    }

    /// The median of the learned latencies, once there are `baseline_ops` of them.
    fn baseline(&self) -> Option<Duration> {
        (self.learned.len() >= self.rules.baseline_ops).then(|| median(&self.learned))
    }

    /// The median of the recent latencies, once there are `baseline_ops` of them.
    fn current(&self) -> Option<Duration> {
        (self.recent.len() >= self.rules.baseline_ops).then(|| median(&self.recent))
    }

    fn summary(&self) -> String {
        let failed = self.outcomes.iter().filter(|failed| **failed).count();
        let errors = format!(
            "{failed} failures in the last {} probes",
            self.rules.error_window
        );
        match (self.current(), self.baseline()) {
            (Some(current), Some(baseline)) => format!(
                "median latency {} vs baseline {}, {errors}",
                ms(current),
                ms(baseline)
            ),
            _ => errors,
        }
    }

    fn status(&self) -> ProbeStatus {
        let (up, last_latency, detail) = match &self.last {
            Some((ok, latency, detail)) => (Some(*ok), Some(*latency), detail.clone()),
            None => (None, None, String::new()),
        };
        ProbeStatus {
            name: self.name.clone(),
            dependency: self.rules.dependency,
            up,
            last_latency,
            detail,
            consecutive_failures: self.streak,
            baseline: self.baseline(),
            degraded: self.degraded,
            checks: self.checks,
            failures: self.failures,
        }
    }
}

fn detected(unit: u32, kind: ProblemKind, at: Instant, evidence: String) -> ProbeEvent {
    ProbeEvent::Detected(Problem {
        unit,
        kind,
        detected_at: at,
        evidence,
        pid: None,
        unkillable: false,
    })
}
