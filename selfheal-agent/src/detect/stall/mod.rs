//! Stall detector (issue 3): scheduler observations per unit per tick → stall problems.
//!
//! The observation types below are the contract with the sensor (kernel maps + procfs + PSI)
//! that fills them, one [`SchedSample`] per unit per tick. [`StallDetector`] is pure: no I/O,
//! the sample's `at` is its only clock.
//!
//! Every kind is a condition checked on each sample. A condition must hold in every sample in a
//! row for the unit's threshold before it is reported ([`StallEvent::Detected`], once per
//! episode, `detected_at` = the first sample of the run); one sample without it ends the run
//! ([`StallEvent::Cleared`] if it had been reported). `hung` and `spinning` are judged per task:
//! the same task must hold the condition all along, so threads that each block briefly in turn
//! never add up to a stall.

mod conditions;
mod config;
mod evidence;
#[cfg(test)]
mod tests;
mod wedged;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

pub use config::{StallConfig, StallOverrides};

use super::{Problem, StallKind};

/// Scheduler state of one task at the end of the sampling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// On a CPU right now.
    Running,
    /// Runnable, waiting for a CPU.
    Runnable,
    /// Interruptible sleep (S): waiting for an event.
    Sleeping,
    /// Uninterruptible sleep (D): may not die on SIGKILL.
    DiskSleep,
    /// Stopped by a signal (T).
    Stopped,
    /// Stopped by a tracer (t).
    Traced,
}

/// One task (thread) of the unit.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSample {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub state: TaskState,
    /// How long the task has been in `state` (since its last context switch).
    pub state_for: Duration,
    /// CPU time the task used during the window (the kernel's `se.sum_exec_runtime`).
    pub on_cpu: Duration,
    /// Time the task waited runnable for a CPU during the window (`sched_info.run_delay`):
    /// with `on_cpu`, what it would have run on an idle host.
    pub run_delay: Duration,
    /// Voluntary context switches during the window (it blocked / yielded).
    pub voluntary_switches: u64,
    /// Involuntary switches during the window (it was preempted).
    pub involuntary_switches: u64,
    /// Kernel wait channel (/proc/PID/wchan) — filled for D-state tasks where readable.
    pub wchan: Option<String>,
    /// Kernel stack (/proc/PID/stack) — filled for D-state tasks where readable.
    pub kernel_stack: Option<String>,
}

/// Work waiting for the unit in the kernel: sockets it owns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingWork {
    /// Connections waiting in listen queues (sum of accept queues).
    pub accept_queue: u64,
    /// Bytes waiting in connected sockets' receive queues.
    pub recv_queue: u64,
    /// True when the queues shrank during the window (the unit is consuming them).
    pub draining: bool,
}

/// CPU contention evidence for the unit's cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuContention {
    /// p99 of the time its tasks waited runnable before getting a CPU, over the window.
    pub runq_p99: Option<Duration>,
    /// cgroup `cpu.pressure` "some avg10" (percent), where PSI exists.
    pub psi_some_avg10: Option<f64>,
    /// Periods throttled by its own CPU quota during the window (`nr_throttled` delta).
    pub nr_throttled: u64,
    pub throttled_time: Duration,
}

/// Everything the stall detector sees about one unit for one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedSample {
    pub at: Instant,
    /// Length of the window the deltas cover (normally one tick).
    pub window: Duration,
    pub tasks: Vec<TaskSample>,
    /// Time since any task of the unit was last on a CPU (None: ran during the window).
    pub idle_for: Option<Duration>,
    /// While `idle_for` is set: when a task of the unit last ran (CLOCK_MONOTONIC ns), a fact
    /// that stays the same pass after pass while the unit sleeps.
    pub idle_since_ns: Option<u64>,
    pub pending: PendingWork,
    pub contention: CpuContention,
}

/// A change in a unit's stall state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StallEvent {
    /// A condition held for its threshold: report it (once per episode).
    Detected(Problem),
    /// A reported condition no longer holds; `lasted` runs from its `detected_at`.
    Cleared {
        unit: u32,
        kind: StallKind,
        lasted: Duration,
    },
}

/// A condition in progress for a unit, for `selfheal-agent status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OngoingStall {
    pub kind: StallKind,
    /// Since the first sample of the run.
    pub age: Duration,
    /// Whether it crossed its threshold and was reported; if not it is only a suspicion.
    pub reported: bool,
}

/// The order kinds are checked in, and so the order of events from one sample.
const KINDS: [StallKind; 5] = [
    StallKind::Stopped,
    StallKind::Hung,
    StallKind::Spinning,
    StallKind::Wedged,
    StallKind::Starved,
];

/// Who holds a condition: `None` is the unit as a whole, `Some(pid)` one task.
type Subject = Option<u32>;

/// Per-unit, per-kind runs of samples in which the condition held.
#[derive(Debug, Default)]
struct KindState {
    /// When each subject's current run began (its first sample).
    runs: BTreeMap<Subject, Instant>,
    /// Start of the reported episode, between `Detected` and `Cleared`.
    reported: Option<Instant>,
}

/// When a new run of `kind` began. A task that sits in a state (stopped, hung) has been there
/// since its last context switch, which the kernel timed: the run starts then, not at the
/// first sample that saw it there for a whole tick, so the threshold counts from the real start.
/// A spinning task held its condition over the whole window (no voluntary switch, runnable
/// nearly all of it), so it was spinning when the window began: a spin that starts mid-window
/// is reported at threshold + at most one tick, not two.
fn run_start(kind: StallKind, sample: &SchedSample, subject: Subject) -> Instant {
    let held = match (kind, subject) {
        (StallKind::Spinning, Some(_)) => Some(sample.window),
        (StallKind::Stopped, None) => sample.tasks.iter().map(|t| t.state_for).min(),
        (StallKind::Hung, Some(pid)) => sample
            .tasks
            .iter()
            .find(|t| t.pid == pid)
            .map(|t| t.state_for),
        _ => None,
    };
    held.and_then(|held| sample.at.checked_sub(held))
        .unwrap_or(sample.at)
}

impl KindState {
    /// The subject that has held the condition longest (lowest pid on a tie).
    fn leader(&self) -> Option<(Subject, Instant)> {
        self.runs
            .iter()
            .map(|(&subject, &since)| (subject, since))
            .min_by_key(|&(_, since)| since)
    }
}

/// Stall state of every unit it has been fed, keyed by the unit's index.
#[derive(Debug, Default)]
pub struct StallDetector {
    units: HashMap<u32, [KindState; KINDS.len()]>,
}

impl StallDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one sample of `unit`, judged with `config`; returns what changed.
    pub fn observe(
        &mut self,
        unit: u32,
        config: &StallConfig,
        sample: &SchedSample,
    ) -> Vec<StallEvent> {
        let states = self.units.entry(unit).or_default();
        let mut events = Vec::new();
        for (kind, state) in KINDS.into_iter().zip(states.iter_mut()) {
            let holding = conditions::holding(kind, config, sample, !state.runs.is_empty());
            state.runs.retain(|subject, _| holding.contains(subject));
            for subject in holding {
                let since = run_start(kind, sample, subject);
                state.runs.entry(subject).or_insert(since);
            }
            // The episode lives while some subject has held the condition for the threshold,
            // so it survives one hung thread waking while another stays stuck.
            let threshold = config.threshold_for(kind);
            let over = state
                .leader()
                .filter(|&(_, since)| sample.at.saturating_duration_since(since) >= threshold);
            match (state.reported, over) {
                (None, Some((subject, since))) => {
                    state.reported = Some(since);
                    let problem = evidence::problem(unit, kind, config, sample, subject, since);
                    events.push(StallEvent::Detected(problem));
                }
                (Some(since), None) => {
                    state.reported = None;
                    events.push(StallEvent::Cleared {
                        unit,
                        kind,
                        lasted: sample.at.saturating_duration_since(since),
                    });
                }
                _ => {}
            }
        }
        events
    }

    /// The conditions holding for `unit` at its last sample, reported or not, with their age.
    pub fn in_progress(&self, unit: u32, now: Instant) -> Vec<OngoingStall> {
        let Some(states) = self.units.get(&unit) else {
            return Vec::new();
        };
        KINDS
            .into_iter()
            .zip(states)
            .filter_map(|(kind, state)| {
                let since = state.reported.or(state.leader().map(|(_, since)| since))?;
                Some(OngoingStall {
                    kind,
                    age: now.saturating_duration_since(since),
                    reported: state.reported.is_some(),
                })
            })
            .collect()
    }

    /// Drops everything known about `unit` (it restarted or is no longer watched): its next
    /// sample starts afresh, and an episode in progress ends without a `Cleared`.
    pub fn forget(&mut self, unit: u32) {
        self.units.remove(&unit);
    }
}
