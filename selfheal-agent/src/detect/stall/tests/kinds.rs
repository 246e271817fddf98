//! What each kind takes to be reported, what does not count, and the evidence it carries.

use super::*;

const A_LONG_TIME: RangeInclusive<u64> = 0..=3 * THRESHOLD_SECS;

fn problem_of(scenario: Scenario) -> Problem {
    let mut harness = Harness::new();
    let events = harness.feed(1, scenario, A_LONG_TIME);
    only_detection(&events).1.clone()
}

/// A scenario's samples changed by `change`, fed for three thresholds.
fn events_of(scenario: Scenario, change: impl Fn(&mut SchedSample, u64)) -> Vec<StallEvent> {
    let mut harness = Harness::new();
    let mut events = Vec::new();
    for second in A_LONG_TIME {
        let mut sample = scenario(harness.at(second), Duration::from_secs(second));
        change(&mut sample, second);
        events.extend(harness.detector.observe(1, &harness.config, &sample));
    }
    events
}

#[test]
fn hung_problem_is_unkillable_and_names_the_task_its_wait_channel_and_stack() {
    let problem = problem_of(hung);
    assert!(problem.unkillable);
    assert_eq!(problem.pid, Some(100));
    for words in [
        "task 101 (worker) of process 100 in uninterruptible sleep (D) for 5s",
        "wait channel rpc_wait_bit_killable",
        "kernel stack rpc_wait_bit_killable+0x1e/0xa0 < nfs_file_read+0x6b/0xa0 < vfs_read",
        "may not die on SIGKILL",
    ] {
        assert!(problem.evidence.contains(words), "{:?}", problem.evidence);
    }
}

#[test]
fn hung_task_whose_wait_channel_cannot_be_read_is_still_reported() {
    let events = events_of(hung, |sample, _| {
        sample.tasks[1].wchan = None;
        sample.tasks[1].kernel_stack = None;
    });
    let [StallEvent::Detected(problem)] = &events[..] else {
        panic!("expected one detection, got {events:?}");
    };
    assert!(problem.evidence.contains("wait channel unreadable"));
    assert!(!problem.evidence.contains("kernel stack"));
}

#[test]
fn only_hung_problems_are_unkillable() {
    for (kind, scenario, _) in EVERY_KIND {
        assert_eq!(
            problem_of(scenario).unkillable,
            kind == StallKind::Hung,
            "{kind:?}"
        );
    }
}

#[test]
fn threads_taking_turns_in_d_are_not_hung() {
    // A slow disk: every sample catches a thread that spent the whole window in D, but a
    // different one each time; no single thread is stuck.
    let events = events_of(hung, |sample, second| {
        let worker = &mut sample.tasks[1];
        worker.pid = 200 + u32::try_from(second % 2).unwrap();
        worker.state_for = TICK;
    });
    assert_eq!(events, []);
}

#[test]
fn a_thread_caught_in_d_every_sample_but_running_in_between_is_not_hung() {
    let events = events_of(hung, |sample, _| {
        sample.tasks[1].state_for = Duration::from_millis(2);
    });
    assert_eq!(events, []);
}

/// Tasks 101 and 102 both stuck in D.
fn two_stuck(at: Instant, lasted: Duration) -> SchedSample {
    let mut sample = hung(at, lasted);
    let mut other = sample.tasks[1].clone();
    other.pid = 102;
    sample.tasks.push(other);
    sample
}

/// Task 101 woke up after 8 s; task 102 is still stuck.
fn one_left(at: Instant, lasted: Duration) -> SchedSample {
    let mut sample = two_stuck(at, lasted + Duration::from_secs(8));
    sample.tasks[1] = task(101, "worker");
    sample
}

#[test]
fn hung_episode_lasts_while_any_task_has_been_stuck_for_the_threshold() {
    let mut harness = Harness::new();
    let events = harness.feed(1, two_stuck, 0..=7);
    let (_, problem) = only_detection(&events);
    assert!(
        problem.evidence.contains("task 101"),
        "{:?}",
        problem.evidence
    );
    assert!(problem.evidence.contains("1 more task(s) in D"));
    assert_eq!(harness.feed(1, one_left, 8..=9), [], "still hung");
    let cleared = harness.feed(1, healthy, 10..=10);
    let lasted = Duration::from_secs(10);
    let kind = StallKind::Hung;
    assert_eq!(
        cleared,
        [(
            10,
            StallEvent::Cleared {
                unit: 1,
                kind,
                lasted
            }
        )]
    );
}

#[test]
fn stopped_problem_says_how_the_tasks_were_stopped() {
    let problem = problem_of(stopped);
    assert_eq!(problem.pid, Some(100));
    assert!(
        problem.evidence.contains(
            "every task of the unit stopped for 5s (2 by a signal such as SIGSTOP, 0 by a tracer"
        ),
        "{:?}",
        problem.evidence
    );
}

#[test]
fn a_unit_under_a_debugger_is_stopped() {
    let events = events_of(stopped, |sample, _| {
        sample.tasks[0].state = TaskState::Traced;
    });
    let [StallEvent::Detected(problem)] = &events[..] else {
        panic!("expected one detection, got {events:?}");
    };
    assert!(
        problem
            .evidence
            .contains("1 by a signal such as SIGSTOP, 1 by a tracer")
    );
}

#[test]
fn a_unit_is_not_stopped_while_one_task_runs_or_a_tracer_lets_it_go_on() {
    let events = events_of(stopped, |sample, _| {
        sample.tasks[1] = task(101, "worker");
    });
    assert_eq!(events, [], "one task still running");
    // strace: the tracee stops at every system call and goes on at once.
    let events = events_of(stopped, |sample, _| {
        for task in &mut sample.tasks {
            task.state = TaskState::Traced;
            task.state_for = Duration::from_micros(40);
        }
    });
    assert_eq!(events, [], "traced by strace");
}

#[test]
fn spinning_problem_names_the_task_and_its_cpu_use() {
    let problem = problem_of(spinning);
    assert_eq!(problem.pid, Some(100));
    assert!(
        problem.evidence.contains(
            "task 101 (worker) of process 100 running or waiting for a CPU for at least 95% of \
             every window, with no voluntary context switch, for 5s (last window of 1s: 990ms on \
             a CPU, 10ms waiting for one, 25 involuntary switches)"
        ),
        "{:?}",
        problem.evidence
    );
}

#[test]
fn spinning_switched_off_is_never_reported() {
    let mut harness = Harness::new();
    harness.config.spinning = false;
    assert_eq!(harness.feed(1, spinning, A_LONG_TIME), []);
}

#[test]
fn spinning_starts_at_the_configured_share_of_the_window() {
    // Of a 1 s window, `millis` on a CPU and 5 ms waiting for one; asleep the rest.
    let at_cpu = |millis: u64| {
        events_of(spinning, move |sample, _| {
            sample.tasks[1].on_cpu = Duration::from_millis(millis);
            sample.tasks[1].run_delay = Duration::from_millis(5);
        })
    };
    assert_eq!(at_cpu(944), []);
    assert_eq!(at_cpu(945).len(), 1);
}

#[test]
fn a_spin_that_begins_mid_window_is_dated_from_its_first_whole_window_not_its_end() {
    // Ticks every second, threshold 5 s. The loop starts at 2.6 s: the window ending at 3 s
    // still holds its last sleep, the one ending at 4 s shows it spinning throughout, so it
    // spun since 3 s at the latest. Reported at 8 s (T + 1.4 s after the real start: within
    // one tick), not at 9 s.
    let mut harness = Harness::new();
    let mut events = harness.feed(1, healthy, 0..=2);
    events.extend(harness.feed(1, spinning, 3..=9));
    let (second, problem) = only_detection(&events);
    assert_eq!(second, 8);
    assert_eq!(problem.detected_at, harness.at(3));
}

#[test]
fn a_loop_on_a_loaded_host_is_spinning_though_it_gets_a_fifth_of_a_cpu() {
    // A loop sharing one CPU with four others runs 200 ms of each second and waits 800 ms in
    // the run queue; a task that ran 200 ms and barely waited was asleep the rest of the time.
    let events = events_of(spinning, |sample, _| {
        sample.tasks[1].on_cpu = Duration::from_millis(200);
        sample.tasks[1].run_delay = Duration::from_millis(5);
    });
    assert_eq!(
        events,
        [],
        "200 ms of a 1 s window and not waiting: not spinning"
    );
    let events = events_of(spinning, |sample, _| {
        sample.tasks[1].on_cpu = Duration::from_millis(200);
        sample.tasks[1].run_delay = Duration::from_millis(800);
    });
    assert_eq!(
        events.len(),
        1,
        "200 ms on a CPU and 800 ms waiting for one: spinning"
    );
}

#[test]
fn a_task_that_only_waited_for_a_cpu_is_starved_not_spinning() {
    let events = events_of(spinning, |sample, _| {
        sample.tasks[1].on_cpu = Duration::ZERO;
        sample.tasks[1].run_delay = Duration::from_secs(1);
    });
    assert_eq!(events, []);
}

#[test]
fn a_busy_task_that_blocks_now_and_then_is_not_spinning() {
    let events = events_of(spinning, |sample, _| {
        sample.tasks[1].voluntary_switches = 1;
    });
    assert_eq!(events, []);
}

#[test]
fn wedged_problem_counts_what_waits() {
    let problem = problem_of(wedged);
    assert_eq!(problem.pid, None);
    assert!(
        problem.evidence.contains(
            "no task of the unit ran on a CPU for 6s, and for 5s work waited for it without \
             draining: 12 connection(s) in accept queues, 4096 byte(s) in receive queues"
        ),
        "{:?}",
        problem.evidence
    );
}

#[test]
fn an_idle_server_with_nothing_waiting_is_healthy_however_long_it_sleeps() {
    let events = events_of(wedged, |sample, _| {
        sample.pending = PendingWork::default();
    });
    assert_eq!(events, []);
}

#[test]
fn queues_that_drain_are_not_wedged_even_when_nothing_else_ran() {
    let events = events_of(wedged, |sample, _| sample.pending.draining = true);
    assert_eq!(events, [], "draining");
}

#[test]
fn a_unit_whose_acceptor_still_runs_while_requests_wait_unread_is_wedged() {
    let events = events_of(wedged, |sample, _| {
        sample.idle_for = None;
        sample.tasks[0].on_cpu = Duration::from_millis(5);
        sample.tasks[0].voluntary_switches = 40;
    });
    let [StallEvent::Detected(problem)] = events.as_slice() else {
        panic!("one wedged problem: {events:?}");
    };
    assert!(
        problem
            .evidence
            .starts_with("some of its tasks still ran, and for 5s work waited"),
        "{:?}",
        problem.evidence
    );
}

#[test]
fn either_waiting_connections_or_waiting_bytes_make_a_unit_wedged() {
    let events = events_of(wedged, |sample, _| sample.pending.recv_queue = 0);
    assert_eq!(events.len(), 1, "connections only");
    let events = events_of(wedged, |sample, _| sample.pending.accept_queue = 0);
    assert_eq!(events.len(), 1, "bytes only");
}

#[test]
fn starved_problem_gives_latency_pressure_and_throttling() {
    let problem = problem_of(starved);
    assert_eq!(problem.pid, None);
    assert!(
        problem.evidence.contains(
            "runnable tasks waited for a CPU for 3s: run-queue latency p99 80ms (threshold \
             50ms), CPU pressure some avg10 35.0% (threshold 20%); its own CPU quota throttled \
             it 40 time(s) (1.2s) in the last window"
        ),
        "{:?}",
        problem.evidence
    );
}

#[test]
fn starved_without_throttling_blames_other_work() {
    let events = events_of(starved, |sample, _| {
        sample.contention.nr_throttled = 0;
        sample.contention.psi_some_avg10 = None;
    });
    let [StallEvent::Detected(problem)] = &events[..] else {
        panic!("expected one detection, got {events:?}");
    };
    assert!(
        problem
            .evidence
            .contains("CPU pressure some avg10 unavailable")
    );
    assert!(
        problem
            .evidence
            .contains("not throttled by its own CPU quota")
    );
}

#[test]
fn either_latency_or_pressure_above_its_threshold_starves_and_at_it_does_not() {
    let with = |p99: Option<u64>, psi: Option<f64>| {
        events_of(starved, move |sample, _| {
            sample.contention.runq_p99 = p99.map(Duration::from_millis);
            sample.contention.psi_some_avg10 = psi;
        })
    };
    assert_eq!(with(Some(51), None).len(), 1);
    assert_eq!(with(None, Some(20.5)).len(), 1);
    assert_eq!(with(Some(50), Some(20.0)), []);
    assert_eq!(with(None, None), [], "no contention data");
}

#[test]
fn starved_clears_only_well_below_its_threshold() {
    let wavering = |psi: f64| {
        events_of(starved, move |sample, second| {
            sample.contention.runq_p99 = None;
            // Above the threshold, then hovering just below it from the second sample on.
            sample.contention.psi_some_avg10 = Some(if second == 0 { 35.0 } else { psi });
        })
    };
    // 17 % is below the 20 % threshold but above 80 % of it: the run goes on.
    let events = wavering(17.0);
    assert!(
        matches!(events[..], [StallEvent::Detected(_)]),
        "{events:?}"
    );
    // 15 % is well below: the run ends at once and never starts again.
    assert_eq!(wavering(15.0), []);
}
