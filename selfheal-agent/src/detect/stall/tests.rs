//! The detector's behaviour over time: thresholds, hysteresis, episodes, units. Samples come one
//! per second from a fixed base instant; scenarios are what a real unit looks like to the sensor.

use std::ops::RangeInclusive;

use super::*;
use crate::detect::ProblemKind;

mod config;
mod kinds;

const TICK: Duration = Duration::from_secs(1);
/// Tests use thresholds of a few seconds; the logic does not care about the scale.
const THRESHOLD_SECS: u64 = 5;
const STARVED_FOR_SECS: u64 = 3;

fn config() -> StallConfig {
    StallConfig {
        threshold: Duration::from_secs(THRESHOLD_SECS),
        starved_for: Duration::from_secs(STARVED_FOR_SECS),
        ..StallConfig::default()
    }
}

/// A thread of process 100 going about its business: short sleeps, many switches.
fn task(pid: u32, comm: &str) -> TaskSample {
    TaskSample {
        pid,
        tgid: 100,
        comm: comm.to_owned(),
        state: TaskState::Sleeping,
        state_for: Duration::from_millis(3),
        on_cpu: Duration::from_millis(20),
        run_delay: Duration::from_millis(1),
        voluntary_switches: 40,
        involuntary_switches: 1,
        wchan: None,
        kernel_stack: None,
    }
}

fn sample(at: Instant, tasks: Vec<TaskSample>) -> SchedSample {
    SchedSample {
        at,
        window: TICK,
        tasks,
        idle_for: None,
        idle_since_ns: None,
        pending: PendingWork::default(),
        contention: CpuContention::default(),
    }
}

/// A unit's sample at `at`, its condition having lasted `lasted` (0 at the first sample).
type Scenario = fn(Instant, Duration) -> SchedSample;

fn healthy(at: Instant, _: Duration) -> SchedSample {
    sample(at, vec![task(100, "web"), task(101, "worker")])
}

/// SIGSTOP: every thread in T, since a moment before the first sample.
/// Stopped `lasted` ago: the kernel's `state_for` says so, and the detector counts from then.
fn stopped(at: Instant, lasted: Duration) -> SchedSample {
    let mut tasks = vec![task(100, "web"), task(101, "worker")];
    for task in &mut tasks {
        task.state = TaskState::Stopped;
        task.state_for = lasted;
        task.on_cpu = Duration::ZERO;
        task.voluntary_switches = 0;
    }
    sample(at, tasks)
}

/// A worker stuck reading from a dead NFS server; the main thread still polls.
fn hung(at: Instant, lasted: Duration) -> SchedSample {
    let mut worker = task(101, "worker");
    worker.state = TaskState::DiskSleep;
    worker.state_for = lasted;
    worker.on_cpu = Duration::ZERO;
    worker.voluntary_switches = 0;
    worker.wchan = Some("rpc_wait_bit_killable".to_owned());
    worker.kernel_stack = Some(
        "[<0>] rpc_wait_bit_killable+0x1e/0xa0\n[<0>] nfs_file_read+0x6b/0xa0\n\
         [<0>] vfs_read+0x251/0x2e0\n"
            .to_owned(),
    );
    sample(at, vec![task(100, "web"), worker])
}

/// A worker in an infinite loop: on a CPU all the time, preempted now and then. The loop
/// starts in the middle of the first window (the worker blocked once before it), so the first
/// window that shows it spinning throughout is the next one, which dates it from its start.
fn spinning(at: Instant, lasted: Duration) -> SchedSample {
    let mut worker = task(101, "worker");
    worker.state = TaskState::Running;
    worker.state_for = Duration::from_millis(4);
    worker.on_cpu = Duration::from_millis(990);
    worker.run_delay = Duration::from_millis(10);
    worker.voluntary_switches = 0;
    worker.involuntary_switches = 25;
    if lasted.is_zero() {
        worker.on_cpu = Duration::from_millis(400);
        worker.voluntary_switches = 1;
    }
    sample(at, vec![task(100, "web"), worker])
}

/// A server that stopped calling accept() (a deadlock between its threads) with clients queued.
fn wedged(at: Instant, lasted: Duration) -> SchedSample {
    let mut sample = sample(at, vec![task(100, "web"), task(101, "worker")]);
    for task in &mut sample.tasks {
        task.state_for = lasted + TICK;
        task.on_cpu = Duration::ZERO;
        task.voluntary_switches = 0;
        task.involuntary_switches = 0;
    }
    sample.idle_for = Some(lasted + TICK);
    sample.pending = PendingWork {
        accept_queue: 12,
        recv_queue: 4096,
        draining: false,
    };
    sample
}

/// Runnable threads queued behind other work, and capped by its own CPU quota.
fn starved(at: Instant, _: Duration) -> SchedSample {
    let mut sample = sample(at, vec![task(100, "web"), task(101, "worker")]);
    for task in &mut sample.tasks {
        task.state = TaskState::Runnable;
    }
    sample.contention = CpuContention {
        runq_p99: Some(Duration::from_millis(80)),
        psi_some_avg10: Some(35.0),
        nr_throttled: 40,
        throttled_time: Duration::from_millis(1200),
    };
    sample
}

const EVERY_KIND: [(StallKind, Scenario, u64); 5] = [
    (StallKind::Stopped, stopped, THRESHOLD_SECS),
    (StallKind::Hung, hung, THRESHOLD_SECS),
    (StallKind::Spinning, spinning, THRESHOLD_SECS),
    (StallKind::Wedged, wedged, THRESHOLD_SECS),
    (StallKind::Starved, starved, STARVED_FOR_SECS),
];

struct Harness {
    detector: StallDetector,
    config: StallConfig,
    base: Instant,
    /// Per unit, the scenario fed last, the second it began and the last second fed: a run
    /// fed in several calls keeps counting from its real start.
    running: HashMap<u32, (usize, u64, u64)>,
}

impl Harness {
    fn new() -> Self {
        Self {
            detector: StallDetector::new(),
            config: config(),
            base: Instant::now(),
            running: HashMap::new(),
        }
    }

    fn at(&self, second: u64) -> Instant {
        self.base + Duration::from_secs(second)
    }

    /// Feeds `scenario` for `unit` at each second of `seconds`, its condition starting with the
    /// range; returns the events with the second each came at.
    fn feed(
        &mut self,
        unit: u32,
        scenario: Scenario,
        seconds: RangeInclusive<u64>,
    ) -> Vec<(u64, StallEvent)> {
        let id = scenario as usize;
        let start = match self.running.get(&unit) {
            Some(&(last, began, until)) if last == id && until + 1 == *seconds.start() => began,
            _ => *seconds.start(),
        };
        self.running.insert(unit, (id, start, *seconds.end()));
        let mut events = Vec::new();
        for second in seconds {
            let sample = scenario(self.at(second), Duration::from_secs(second - start));
            for event in self.detector.observe(unit, &self.config, &sample) {
                events.push((second, event));
            }
        }
        events
    }
}

/// The one problem in `events`, and the second it was reported at.
fn only_detection(events: &[(u64, StallEvent)]) -> (u64, &Problem) {
    match events {
        [(second, StallEvent::Detected(problem))] => (*second, problem),
        other => panic!("expected one detection, got {other:?}"),
    }
}

#[test]
fn every_kind_is_reported_exactly_at_its_threshold_and_not_a_sample_before() {
    for (kind, scenario, threshold) in EVERY_KIND {
        let mut harness = Harness::new();
        let early = harness.feed(1, scenario, 0..=threshold - 1);
        assert_eq!(early, [], "{kind:?} reported before its threshold");
        let at_threshold = harness.feed(1, scenario, threshold..=threshold);
        let (_, problem) = only_detection(&at_threshold);
        assert_eq!(problem.kind, ProblemKind::Stall(kind));
        assert_eq!(problem.unit, 1);
    }
}

#[test]
fn detected_at_is_the_first_sample_of_the_run_not_the_threshold_crossing() {
    for (kind, scenario, threshold) in EVERY_KIND {
        let mut harness = Harness::new();
        harness.feed(1, healthy, 0..=2);
        let events = harness.feed(1, scenario, 3..=3 + threshold);
        let (second, problem) = only_detection(&events);
        assert_eq!(second, 3 + threshold, "{kind:?}");
        assert_eq!(problem.detected_at, harness.at(3), "{kind:?}");
    }
}

#[test]
fn one_healthy_sample_in_the_middle_restarts_the_run() {
    for (kind, scenario, threshold) in EVERY_KIND {
        let mut harness = Harness::new();
        let mut events = harness.feed(1, scenario, 0..=threshold - 1);
        events.extend(harness.feed(1, healthy, threshold..=threshold));
        events.extend(harness.feed(1, scenario, threshold + 1..=2 * threshold));
        assert_eq!(events, [], "{kind:?} survived a healthy sample");
        let events = harness.feed(1, scenario, 2 * threshold + 1..=2 * threshold + 1);
        let (_, problem) = only_detection(&events);
        assert_eq!(problem.detected_at, harness.at(threshold + 1), "{kind:?}");
    }
}

#[test]
fn a_stall_is_reported_once_and_cleared_when_activity_resumes() {
    for (kind, scenario, threshold) in EVERY_KIND {
        let mut harness = Harness::new();
        let events = harness.feed(1, scenario, 0..=3 * threshold);
        let (second, _) = only_detection(&events);
        assert_eq!(second, threshold, "{kind:?}");
        let events = harness.feed(1, healthy, 3 * threshold + 1..=3 * threshold + 2);
        let lasted = Duration::from_secs(3 * threshold + 1);
        assert_eq!(
            events,
            [(
                3 * threshold + 1,
                StallEvent::Cleared {
                    unit: 1,
                    kind,
                    lasted
                }
            )],
            "{kind:?}"
        );
    }
}

#[test]
fn after_clearing_a_new_episode_is_reported_again() {
    let mut harness = Harness::new();
    harness.feed(1, hung, 0..=6);
    harness.feed(1, healthy, 7..=7);
    let events = harness.feed(1, hung, 8..=8 + THRESHOLD_SECS);
    let (second, problem) = only_detection(&events);
    assert_eq!(second, 8 + THRESHOLD_SECS);
    assert_eq!(problem.detected_at, harness.at(8));
}

#[test]
fn units_are_judged_independently() {
    let mut harness = Harness::new();
    let mut unit_2 = Vec::new();
    let mut unit_1 = Vec::new();
    for second in 0..=8 {
        unit_1.extend(harness.feed(1, spinning, second..=second));
        // Unit 2 starts spinning 3 s later: same sample times, its own run.
        let scenario = if second < 3 { healthy } else { spinning };
        unit_2.extend(harness.feed(2, scenario, second..=second));
    }
    let (second, problem) = only_detection(&unit_1);
    assert_eq!((second, problem.unit), (THRESHOLD_SECS, 1));
    let (second, problem) = only_detection(&unit_2);
    assert_eq!((second, problem.unit), (3 + THRESHOLD_SECS, 2));
    assert_eq!(problem.detected_at, harness.at(3));
}

#[test]
fn forget_drops_the_run_and_the_episode_without_clearing() {
    let mut harness = Harness::new();
    harness.feed(1, hung, 0..=THRESHOLD_SECS);
    harness.detector.forget(1);
    assert_eq!(harness.detector.in_progress(1, harness.at(6)), []);
    // A new incarnation: its task has been stuck only since second 6.
    harness.running.clear();
    let events = harness.feed(1, hung, 6..=6 + THRESHOLD_SECS);
    let (second, problem) = only_detection(&events);
    assert_eq!(second, 6 + THRESHOLD_SECS, "a forgotten unit starts over");
    assert_eq!(problem.detected_at, harness.at(6));
}

#[test]
fn a_task_already_stuck_when_first_seen_counts_from_when_the_kernel_saw_it_stop() {
    let mut harness = Harness::new();
    // The kernel says the task has been in D for 5 s when the detector first hears of it.
    harness.running.insert(1, (hung as Scenario as usize, 0, 4));
    let events = harness.feed(1, hung, 5..=THRESHOLD_SECS);
    let (second, problem) = only_detection(&events);
    assert_eq!(
        second, THRESHOLD_SECS,
        "not a whole threshold after the first sample"
    );
    assert_eq!(problem.detected_at, harness.at(0));
}

#[test]
fn forgetting_one_unit_leaves_the_others_alone() {
    let mut harness = Harness::new();
    harness.feed(1, wedged, 0..=2);
    harness.feed(2, wedged, 0..=2);
    harness.detector.forget(1);
    let events = harness.feed(2, wedged, 3..=THRESHOLD_SECS);
    assert_eq!(only_detection(&events).0, THRESHOLD_SECS);
}

#[test]
fn in_progress_shows_suspicions_and_reported_stalls_with_their_age() {
    let mut harness = Harness::new();
    harness.feed(1, spinning, 0..=2);
    let suspected = OngoingStall {
        kind: StallKind::Spinning,
        age: Duration::from_millis(2500),
        reported: false,
    };
    let now = harness.at(2) + Duration::from_millis(500);
    assert_eq!(harness.detector.in_progress(1, now), [suspected]);
    harness.feed(1, spinning, 3..=7);
    let reported = OngoingStall {
        age: Duration::from_secs(7),
        reported: true,
        ..suspected
    };
    assert_eq!(harness.detector.in_progress(1, harness.at(7)), [reported]);
    harness.feed(1, healthy, 8..=8);
    assert_eq!(harness.detector.in_progress(1, harness.at(8)), []);
    assert_eq!(harness.detector.in_progress(9, harness.at(8)), []);
}

#[test]
fn a_unit_without_tasks_is_not_stalled() {
    let mut harness = Harness::new();
    let mut events = Vec::new();
    for second in 0..=3 * THRESHOLD_SECS {
        let mut sample = wedged(harness.at(second), Duration::from_secs(second));
        sample.tasks.clear();
        events.extend(harness.detector.observe(1, &harness.config, &sample));
    }
    assert_eq!(events, []);
}

#[test]
fn durations_in_evidence_are_rounded_to_what_a_reader_needs() {
    let human = super::evidence::human;
    assert_eq!(human(Duration::from_millis(312_480)), "312s");
    assert_eq!(human(Duration::from_micros(4_512_345)), "4.512s");
    assert_eq!(human(Duration::from_micros(50_432)), "50.4ms");
    assert_eq!(human(Duration::from_nanos(800_400)), "800µs");
    assert_eq!(human(Duration::from_nanos(10)), "0s");
}
