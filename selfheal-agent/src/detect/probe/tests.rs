//! The probe detector's behaviour, driven with synthetic results and an injected clock.

use super::*;

const UNIT: u32 = 3;
const INTERVAL: Duration = Duration::from_secs(1);

/// One unit with one probe named "http", probed every second.
struct Harness {
    detector: ProbeDetector,
    t0: Instant,
    elapsed: Duration,
    dependency: bool,
}

impl Harness {
    fn new(rules: ProbeRules) -> Self {
        let mut detector = ProbeDetector::default();
        let dependency = rules.dependency;
        detector.add_probe(UNIT, "http", rules);
        Self {
            detector,
            t0: Instant::now(),
            elapsed: Duration::ZERO,
            dependency,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    /// `n` results one interval apart; all the events they raised.
    fn probe(&mut self, n: usize, ok: bool, latency_ms: u64) -> Vec<ProbeEvent> {
        let mut events = Vec::new();
        for _ in 0..n {
            self.elapsed += INTERVAL;
            events.extend(
                self.detector.on_result(&ProbeResult {
                    unit: UNIT,
                    probe: "http".into(),
                    ok,
                    latency: Duration::from_millis(latency_ms),
                    detail: if ok {
                        "HTTP 200"
                    } else {
                        "HTTP 500, expected 2xx"
                    }
                    .into(),
                    at: self.now(),
                    dependency: self.dependency,
                }),
            );
        }
        events
    }

    /// Healthy results at `latency_ms` until the baseline is learned.
    fn learn(&mut self, latency_ms: u64) {
        let events = self.probe(10, true, latency_ms);
        assert_eq!(events, []);
    }

    /// Results one at a time until one raises an event: how many it took, and the event.
    fn until_event(&mut self, ok: bool, latency_ms: u64, limit: usize) -> (usize, ProbeEvent) {
        for n in 1..=limit {
            if let Some(event) = self.probe(1, ok, latency_ms).pop() {
                return (n, event);
            }
        }
        panic!("no event after {limit} results");
    }

    fn restart(&mut self) {
        self.detector.unit_started(UNIT, self.now());
    }
}

fn rules() -> ProbeRules {
    ProbeRules::default()
}

fn detected(event: &ProbeEvent) -> &Problem {
    match event {
        ProbeEvent::Detected(problem) => problem,
        other => panic!("expected a detection, got {other:?}"),
    }
}

fn kinds(events: &[ProbeEvent]) -> Vec<(bool, ProblemKind)> {
    events
        .iter()
        .map(|event| match event {
            ProbeEvent::Detected(problem) => (true, problem.kind.clone()),
            ProbeEvent::Cleared { kind, .. } => (false, kind.clone()),
        })
        .collect()
}

#[test]
fn five_failures_in_a_row_are_consecutive_failures_detected_once() {
    let mut h = Harness::new(rules());
    h.learn(50);
    let first_failure = h.now() + INTERVAL;
    let events = h.probe(4, false, 50);
    assert_eq!(events, []);
    let events = h.probe(1, false, 50);
    let problem = detected(&events[0]);
    assert_eq!(problem.kind, ProblemKind::ConsecutiveFailures);
    assert_eq!(problem.unit, UNIT);
    assert_eq!(problem.detected_at, first_failure);
    assert!(
        problem.evidence.contains("failed 5 times in a row")
            && problem.evidence.contains("HTTP 500"),
        "{}",
        problem.evidence
    );
    assert_eq!(h.probe(10, false, 50), [], "one detection per episode");
}

#[test]
fn a_unit_that_recovers_after_three_failures_raises_nothing() {
    let mut h = Harness::new(rules());
    h.learn(50);
    let mut events = h.probe(3, false, 50);
    events.extend(h.probe(60, true, 50));
    assert_eq!(events, []);
}

#[test]
fn the_failure_threshold_is_configurable() {
    let mut h = Harness::new(ProbeRules {
        consecutive_failures: 2,
        ..rules()
    });
    let (n, event) = h.until_event(false, 5, 10);
    assert_eq!(
        (n, &detected(&event).kind),
        (2, &ProblemKind::ConsecutiveFailures)
    );
}

#[test]
fn a_success_clears_the_episode_and_a_new_streak_is_a_new_episode() {
    let mut h = Harness::new(rules());
    assert_eq!(h.probe(5, false, 5).len(), 1);
    let events = h.probe(1, true, 5);
    assert_eq!(kinds(&events), [(false, ProblemKind::ConsecutiveFailures)]);
    let ProbeEvent::Cleared { evidence, .. } = &events[0] else {
        unreachable!()
    };
    assert!(evidence.contains("succeeds again"), "{evidence}");
    assert_eq!(
        kinds(&h.probe(5, false, 5)),
        [(true, ProblemKind::ConsecutiveFailures)]
    );
}

#[test]
fn answers_three_times_slower_are_degradation_with_the_ratio_as_evidence() {
    let mut h = Harness::new(rules());
    h.learn(100);
    let (n, event) = h.until_event(true, 300, 20);
    // The median of the last 10 reaches 2× once half of them are slow.
    assert!(n <= 6, "took {n} slow probes");
    let problem = detected(&event);
    assert_eq!(problem.kind, ProblemKind::PerformanceDegradation);
    assert!(
        problem
            .evidence
            .contains("median latency 300 ms over the last 10 probes")
            && problem
                .evidence
                .contains("baseline 100 ms (3.0×, threshold 2×)"),
        "{}",
        problem.evidence
    );
}

#[test]
fn degradation_clears_once_latency_is_back_to_the_baseline() {
    let mut h = Harness::new(rules());
    h.learn(100);
    h.until_event(true, 300, 20);
    let (n, event) = h.until_event(true, 100, 20);
    assert!(n <= 6, "took {n} fast probes");
    assert_eq!(
        kinds(&[event]),
        [(false, ProblemKind::PerformanceDegradation)]
    );
}

#[test]
fn a_slowdown_below_the_ratio_is_not_degradation() {
    let mut h = Harness::new(rules());
    h.learn(100);
    assert_eq!(h.probe(100, true, 190), []);
}

#[test]
fn a_lasting_slowdown_does_not_become_the_baseline() {
    let mut h = Harness::new(rules());
    h.learn(100);
    h.until_event(true, 300, 20);
    h.probe(200, true, 300);
    let status = &h.detector.probe_status(UNIT)[0];
    assert_eq!(status.baseline, Some(Duration::from_millis(100)));
    assert!(status.degraded);
}

#[test]
fn nothing_is_judged_slow_before_the_baseline_is_learned() {
    let mut h = Harness::new(rules());
    let mut events = h.probe(5, true, 10);
    events.extend(h.probe(4, true, 900));
    assert_eq!(events, []);
}

#[test]
fn sub_millisecond_jitter_is_not_degradation() {
    let mut h = Harness::new(rules());
    h.learn(0);
    assert_eq!(h.probe(20, true, 8), []);
    let (_, event) = h.until_event(true, 25, 20);
    let evidence = &detected(&event).evidence;
    assert!(evidence.contains("count as 10 ms"), "{evidence}");
}

#[test]
fn a_slow_start_up_within_the_grace_period_raises_nothing() {
    let mut h = Harness::new(ProbeRules {
        grace: Duration::from_secs(30),
        ..rules()
    });
    h.learn(100);
    h.restart();
    // 29 slow results and some failures, all within the 30 s of grace.
    let mut events = h.probe(25, true, 400);
    events.extend(h.probe(4, false, 400));
    // After the grace period the unit is fast: the slow start-up left no trace.
    events.extend(h.probe(30, true, 100));
    assert_eq!(events, []);
    // And the same slowdown after the grace period is detected.
    let (_, event) = h.until_event(true, 400, 20);
    assert_eq!(detected(&event).kind, ProblemKind::PerformanceDegradation);
}

#[test]
fn failures_within_the_grace_period_do_not_count_towards_the_threshold() {
    let mut h = Harness::new(ProbeRules {
        grace: Duration::from_secs(10),
        ..rules()
    });
    h.restart();
    assert_eq!(h.probe(9, false, 5), []);
    let (n, event) = h.until_event(false, 5, 10);
    assert_eq!(
        (n, &detected(&event).kind),
        (5, &ProblemKind::ConsecutiveFailures)
    );
}

#[test]
fn a_restart_ends_the_episode_so_trouble_that_persists_is_detected_again() {
    let mut h = Harness::new(ProbeRules {
        grace: Duration::from_secs(5),
        ..rules()
    });
    assert_eq!(h.probe(5, false, 5).len(), 1);
    h.restart();
    // No "cleared" at the restart: nothing says the unit is healthy.
    let events = h.probe(10, false, 5);
    assert_eq!(kinds(&events), [(true, ProblemKind::ConsecutiveFailures)]);
}

#[test]
fn an_error_rate_above_the_threshold_is_degradation() {
    let mut h = Harness::new(rules());
    h.learn(50);
    let mut events = Vec::new();
    // One failure in four: never two in a row, but 25 % of them.
    for _ in 0..6 {
        events.extend(h.probe(1, false, 50));
        events.extend(h.probe(3, true, 50));
    }
    assert_eq!(events.len(), 1, "{events:?}");
    let problem = detected(&events[0]);
    assert_eq!(problem.kind, ProblemKind::PerformanceDegradation);
    assert!(
        problem
            .evidence
            .contains("6 failures in the last 50 probes (12 %, threshold 10 %)"),
        "{}",
        problem.evidence
    );
}

#[test]
fn a_failing_dependency_is_an_integration_failure_until_it_answers() {
    let mut h = Harness::new(ProbeRules {
        dependency: true,
        ..rules()
    });
    let (n, event) = h.until_event(false, 5, 10);
    let problem = detected(&event);
    assert_eq!((n, &problem.kind), (5, &ProblemKind::IntegrationFailure));
    assert!(
        problem
            .evidence
            .starts_with("dependency probe \"http\" failed"),
        "{}",
        problem.evidence
    );
    assert_eq!(
        kinds(&h.probe(1, true, 5)),
        [(false, ProblemKind::IntegrationFailure)]
    );
}

#[test]
fn a_dependency_is_judged_regardless_of_the_units_restarts_and_grace() {
    let mut h = Harness::new(ProbeRules {
        dependency: true,
        grace: Duration::from_secs(60),
        ..rules()
    });
    h.restart();
    assert_eq!(h.probe(5, false, 5).len(), 1, "grace does not apply");
    h.restart();
    assert_eq!(h.probe(5, false, 5), [], "the episode outlives the restart");
    assert_eq!(h.probe(1, true, 5).len(), 1);
}

#[test]
fn a_slow_dependency_is_not_degradation() {
    let mut h = Harness::new(ProbeRules {
        dependency: true,
        ..rules()
    });
    h.learn(100);
    assert_eq!(h.probe(30, true, 900), []);
}

fn finding(detector: &str, kind: &str, ok: bool) -> CustomFinding {
    CustomFinding {
        unit: UNIT,
        detector: detector.into(),
        kind: kind.into(),
        evidence: "depth 9000".into(),
        at: Instant::now(),
        ok,
    }
}

#[test]
fn a_custom_finding_raises_its_named_kind_once_and_clears_when_ok() {
    let mut detector = ProbeDetector::default();
    let events = detector.on_finding(&finding("queue-depth", "queue_backlog", false));
    let problem = detected(&events[0]);
    assert_eq!(problem.kind, ProblemKind::Custom("queue_backlog".into()));
    assert_eq!(problem.evidence, "detector \"queue-depth\": depth 9000");
    assert_eq!(
        detector.on_finding(&finding("queue-depth", "queue_backlog", false)),
        []
    );
    assert_eq!(
        kinds(&detector.on_finding(&finding("queue-depth", "queue_backlog", true))),
        [(false, ProblemKind::Custom("queue_backlog".into()))]
    );
    assert_eq!(
        detector.on_finding(&finding("queue-depth", "queue_backlog", true)),
        []
    );
}

#[test]
fn a_custom_finding_may_name_a_builtin_kind_and_change_kind_mid_episode() {
    let mut detector = ProbeDetector::default();
    detector.on_finding(&finding("mem", "memory_leak", false));
    assert_eq!(
        kinds(&detector.on_finding(&finding("mem", "fd_leak", false))),
        [
            (false, ProblemKind::Leak(crate::detect::LeakKind::Memory)),
            (true, ProblemKind::Leak(crate::detect::LeakKind::Fd)),
        ]
    );
}

#[test]
fn status_shows_declared_probes_their_last_result_and_baseline() {
    let mut h = Harness::new(rules());
    let before = &h.detector.probe_status(UNIT)[0];
    assert_eq!((before.up, before.checks), (None, 0));
    h.learn(100);
    h.probe(2, false, 7);
    let status = &h.detector.probe_status(UNIT)[0];
    assert_eq!(status.name, "http");
    assert_eq!(status.up, Some(false));
    assert_eq!(status.last_latency, Some(Duration::from_millis(7)));
    assert_eq!(status.detail, "HTTP 500, expected 2xx");
    assert_eq!(status.consecutive_failures, 2);
    assert_eq!(status.baseline, Some(Duration::from_millis(100)));
    assert_eq!((status.checks, status.failures), (12, 2));
    let json = serde_json::to_value(status).unwrap();
    assert_eq!(json["latency_ms"], 7.0);
    assert_eq!(
        serde_json::from_value::<ProbeStatus>(json).unwrap(),
        *status
    );
}

/// A result sent before a reload replaced the probe arrives after it: it is neither judged nor
/// shown, and the probe that replaced it is.
#[test]
fn a_result_from_a_probe_no_longer_declared_is_ignored() {
    let mut detector = ProbeDetector::default();
    detector.add_probe(UNIT, "ready", ProbeRules::default());
    let result = ProbeResult {
        unit: UNIT,
        probe: "alive".into(),
        ok: false,
        latency: Duration::from_millis(1),
        detail: "cannot connect".into(),
        at: Instant::now(),
        dependency: false,
    };
    for _ in 0..10 {
        assert_eq!(detector.on_result(&result), []);
    }
    let names: Vec<String> = detector
        .probe_status(UNIT)
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["ready"]);
    let other_unit = ProbeResult {
        unit: UNIT + 1,
        ..result
    };
    assert_eq!(detector.on_result(&other_unit), []);
    assert!(detector.probe_status(UNIT + 1).is_empty());
}

/// A reload that keeps the probe (with new rules) and adds another: the kept one's streak goes
/// on under its new threshold, the added one starts fresh, a removed one goes.
#[test]
fn a_new_set_keeps_the_state_of_the_probes_it_keeps() {
    let mut h = Harness::new(ProbeRules {
        consecutive_failures: 5,
        grace: Duration::ZERO,
        ..ProbeRules::default()
    });
    h.detector.add_probe(UNIT, "gone", ProbeRules::default());
    assert_eq!(h.probe(3, false, 1), []);
    let stricter = ProbeRules {
        consecutive_failures: 4,
        grace: Duration::ZERO,
        ..ProbeRules::default()
    };
    let at = h.now();
    let events = h.detector.set_probes(
        UNIT,
        [
            ("http".to_owned(), stricter),
            ("tcp".to_owned(), ProbeRules::default()),
        ],
        &[],
        at,
    );
    assert_eq!(events, [], "nothing was open on the probe removed");
    let names: Vec<String> = h
        .detector
        .probe_status(UNIT)
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["http", "tcp"]);
    assert_eq!(h.detector.probe_status(UNIT)[0].consecutive_failures, 3);
    // The fourth failure in a row crosses the new threshold.
    assert_eq!(
        kinds(&h.probe(1, false, 1)),
        [(true, ProblemKind::ConsecutiveFailures)]
    );
    assert_eq!(h.detector.probe_status(UNIT)[1].checks, 0);
}

/// A reload removes a probe (and a detector) whose problem is open: nothing would ever end it
/// otherwise, so the new set ends it, and a probe or detector kept keeps its episode.
#[test]
fn removing_a_probe_or_detector_ends_the_episodes_it_had_open() {
    let mut h = Harness::new(ProbeRules {
        consecutive_failures: 3,
        grace: Duration::ZERO,
        ..ProbeRules::default()
    });
    assert_eq!(
        kinds(&h.probe(3, false, 1)),
        [(true, ProblemKind::ConsecutiveFailures)]
    );
    h.detector
        .on_finding(&finding("queue-depth", "queue_backlog", false));
    h.detector.on_finding(&finding("mem", "memory_leak", false));
    let at = h.now();
    let events = h.detector.set_probes(
        UNIT,
        [("tcp".to_owned(), ProbeRules::default())],
        &["mem".to_owned()],
        at,
    );
    assert_eq!(
        kinds(&events),
        [
            (false, ProblemKind::ConsecutiveFailures),
            (false, ProblemKind::Custom("queue_backlog".into())),
        ]
    );
    let evidence: Vec<&str> = events
        .iter()
        .map(|e| match e {
            ProbeEvent::Cleared {
                evidence, at: when, ..
            } => {
                assert_eq!(*when, at);
                evidence.as_str()
            }
            ProbeEvent::Detected(p) => panic!("raised {p:?}"),
        })
        .collect();
    assert_eq!(
        evidence,
        [
            "probe \"http\" was removed from the config",
            "detector \"queue-depth\" was removed from the config",
        ]
    );
    // The kept detector's episode goes on: its next healthy finding ends it.
    assert_eq!(
        kinds(&h.detector.on_finding(&finding("mem", "memory_leak", true))),
        [(false, ProblemKind::from_name("memory_leak"))]
    );
}
