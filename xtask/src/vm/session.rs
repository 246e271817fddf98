//! Following a run from the guest's markers: whether it booted, which scenario runs and since
//! when, what each reported, and until when the host keeps waiting. Pure: lines and the time
//! come in as parameters.

use std::time::{Duration, Instant};

use super::scenarios::{Marker, Scenario, parse};

/// Longest pause between one scenario's result and the next one's start (or `done`).
const BETWEEN_SCENARIOS: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub passed: bool,
    pub detail: String,
    /// From the start marker to the result, as the host saw them.
    pub took: Option<Duration>,
}

pub struct Session {
    scenarios: Vec<&'static Scenario>,
    outcomes: Vec<Option<Outcome>>,
    booting_since: Instant,
    boot_timeout: Duration,
    /// How long the guest took from qemu's start to its `ready` marker.
    pub boot_time: Option<Duration>,
    running: Option<(usize, Instant)>,
    last_progress: Instant,
    done: bool,
}

impl Session {
    pub fn new(scenarios: Vec<&'static Scenario>, boot_timeout: Duration, now: Instant) -> Self {
        Session {
            outcomes: vec![None; scenarios.len()],
            scenarios,
            booting_since: now,
            boot_timeout,
            boot_time: None,
            running: None,
            last_progress: now,
            done: false,
        }
    }

    /// Takes one console line; returns what to tell the user, if the line was a marker.
    pub fn on_line(&mut self, line: &str, now: Instant) -> Option<String> {
        let marker = parse(line)?;
        self.last_progress = now;
        match marker {
            Marker::Ready(facts) => {
                let took = now - self.booting_since;
                self.boot_time = Some(took);
                Some(format!("guest ready after {}: {facts}", secs(took)))
            }
            Marker::Start(name) => {
                let Some(index) = self.index(name) else {
                    return Some(format!("the guest started an unknown scenario {name:?}"));
                };
                self.running = Some((index, now));
                None
            }
            Marker::Result {
                scenario,
                passed,
                detail,
            } => {
                let Some(index) = self.index(scenario) else {
                    return Some(format!("result for an unknown scenario: {line}"));
                };
                let took = match self.running.take() {
                    Some((running, since)) if running == index => Some(now - since),
                    other => {
                        self.running = other;
                        None
                    }
                };
                let outcome = Outcome {
                    passed,
                    detail: detail.to_owned(),
                    took,
                };
                let shown = show(scenario, &outcome);
                self.outcomes[index] = Some(outcome);
                Some(shown)
            }
            Marker::Done => {
                self.done = true;
                None
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Until when the host waits for the next line: the boot's, the running scenario's, or the
    /// pause between scenarios' timeout.
    pub fn deadline(&self) -> Instant {
        if self.boot_time.is_none() {
            self.booting_since + self.boot_timeout
        } else if let Some((index, since)) = self.running {
            since + self.scenarios[index].timeout
        } else {
            self.last_progress + BETWEEN_SCENARIOS
        }
    }

    /// What a timeout interrupted, for the error.
    pub fn waiting_for(&self) -> String {
        if self.boot_time.is_none() {
            format!("the guest to boot ({})", secs(self.boot_timeout))
        } else if let Some((index, _)) = self.running {
            let scenario = self.scenarios[index];
            format!("scenario {} ({})", scenario.name, secs(scenario.timeout))
        } else {
            format!("the guest's next step ({})", secs(BETWEEN_SCENARIOS))
        }
    }

    /// Every selected scenario with its outcome; those without a result failed because of
    /// `why` (a timeout, qemu exiting).
    pub fn finish(self, why: Option<&str>) -> Vec<(&'static str, Outcome)> {
        let running = self.running.map(|(index, _)| index);
        self.scenarios
            .iter()
            .zip(self.outcomes)
            .enumerate()
            .map(|(index, (scenario, outcome))| {
                let outcome = outcome.unwrap_or_else(|| Outcome {
                    passed: false,
                    detail: match (running == Some(index), why) {
                        (true, Some(why)) => format!("did not finish: {why}"),
                        (false, Some(why)) => format!("did not run: {why}"),
                        (_, None) => "the guest reported no result for it".to_owned(),
                    },
                    took: None,
                });
                (scenario.name, outcome)
            })
            .collect()
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.scenarios.iter().position(|s| s.name == name)
    }
}

/// The line printed for a scenario's outcome.
pub fn show(name: &str, outcome: &Outcome) -> String {
    let verdict = if outcome.passed { "PASS" } else { "FAIL" };
    let took = outcome
        .took
        .map(|t| format!(" ({})", secs(t)))
        .unwrap_or_default();
    format!("{verdict} {name}{took}: {}", outcome.detail)
}

pub fn secs(duration: Duration) -> String {
    super::seconds(duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{BETWEEN_SCENARIOS, Session};
    use crate::vm::scenarios::SCENARIOS;

    const BOOT: Duration = Duration::from_secs(300);

    fn session(start: Instant) -> Session {
        Session::new(SCENARIOS.iter().take(2).collect(), BOOT, start)
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn boot_time_is_measured_to_the_ready_marker_and_ends_the_boot_deadline() {
        let t0 = Instant::now();
        let mut s = session(t0);
        assert_eq!(s.deadline(), t0 + BOOT);
        assert_eq!(s.on_line("[  OK  ] Started dbus.service", at(t0, 5)), None);
        assert!(
            s.on_line("SELFHEAL-VM ready kernel 6.1", at(t0, 40))
                .is_some()
        );
        assert_eq!(s.boot_time, Some(Duration::from_secs(40)));
        assert_eq!(s.deadline(), at(t0, 40) + BETWEEN_SCENARIOS);
    }

    #[test]
    fn a_started_scenario_gets_its_own_timeout_and_is_timed_to_its_result() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let first = &SCENARIOS[0];
        s.on_line("SELFHEAL-VM ready x", at(t0, 40));
        s.on_line(&format!("SELFHEAL-VM start {}", first.name), at(t0, 41));
        assert_eq!(s.deadline(), at(t0, 41) + first.timeout);
        assert!(s.waiting_for().contains(first.name));
        let shown = s.on_line(
            &format!("SELFHEAL-SCENARIO {} PASS all good", first.name),
            at(t0, 44),
        );
        assert_eq!(shown, Some(format!("PASS {} (3.0s): all good", first.name)));
        let outcomes = s.finish(None);
        assert!(outcomes[0].1.passed);
        assert_eq!(outcomes[0].1.took, Some(Duration::from_secs(3)));
    }

    #[test]
    fn scenarios_without_a_result_fail_saying_why() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.on_line("SELFHEAL-VM ready x", at(t0, 40));
        s.on_line(
            &format!("SELFHEAL-VM start {}", SCENARIOS[0].name),
            at(t0, 41),
        );
        assert!(!s.is_done());
        let outcomes = s.finish(Some("timed out"));
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.iter().all(|(_, o)| !o.passed));
        assert_eq!(outcomes[0].1.detail, "did not finish: timed out");
        assert_eq!(outcomes[1].1.detail, "did not run: timed out");
    }

    #[test]
    fn results_for_unknown_scenarios_are_flagged_not_counted() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let shown = s.on_line("SELFHEAL-SCENARIO nope PASS x", t0);
        assert!(shown.is_some_and(|m| m.contains("unknown scenario")));
        s.on_line("SELFHEAL-VM done", t0);
        assert!(s.is_done());
        assert!(s.finish(None).iter().all(|(_, o)| !o.passed));
    }
}
