//! Each kind's condition on one sample: which subjects (the unit, or tasks) hold it right now.

use super::{SchedSample, StallConfig, StallKind, Subject, TaskSample, TaskState};

/// A starved run goes on until pressure falls below this share of the threshold, so a value
/// wavering around the threshold does not start and end episodes every few seconds.
pub(super) const STARVED_CLEAR_RATIO: f64 = 0.8;

/// The subjects that hold `kind`'s condition in `sample`. `in_run` says a run is already going,
/// for the kinds that clear at a lower level than they start.
pub(super) fn holding(
    kind: StallKind,
    config: &StallConfig,
    sample: &SchedSample,
    in_run: bool,
) -> Vec<Subject> {
    let whole_unit = |holds: bool| if holds { vec![None] } else { Vec::new() };
    match kind {
        StallKind::Stopped => whole_unit(is_stopped(sample)),
        StallKind::Hung => tasks_where(sample, |task| is_hung(task, sample)),
        StallKind::Spinning if config.spinning => {
            tasks_where(sample, |task| is_spinning(task, sample, config))
        }
        StallKind::Spinning => Vec::new(),
        StallKind::Wedged => whole_unit(super::wedged::holds(sample)),
        StallKind::Starved => whole_unit(is_starved(sample, config, in_run)),
    }
}

fn tasks_where(sample: &SchedSample, holds: impl Fn(&TaskSample) -> bool) -> Vec<Subject> {
    sample
        .tasks
        .iter()
        .filter(|task| holds(task))
        .map(|task| Some(task.pid))
        .collect()
}

/// The task has not left `state` during the whole window: without this a task that blocks
/// a thousand times a second would look stuck in whatever state each sample caught it.
fn stayed_in(task: &TaskSample, state: TaskState, sample: &SchedSample) -> bool {
    task.state == state && task.state_for >= sample.window
}

/// Every task stopped (SIGSTOP) or traced (a debugger) all window long. A unit being
/// single-stepped under strace passes through `t` constantly but never stays there.
pub(super) fn is_stopped(sample: &SchedSample) -> bool {
    !sample.tasks.is_empty()
        && sample.tasks.iter().all(|task| {
            stayed_in(task, TaskState::Stopped, sample)
                || stayed_in(task, TaskState::Traced, sample)
        })
}

/// In uninterruptible sleep (D) all window long.
pub(super) fn is_hung(task: &TaskSample, sample: &SchedSample) -> bool {
    stayed_in(task, TaskState::DiskSleep, sample)
}

/// Never blocked or yielded during the window, and runnable nearly all of it: Δexec +
/// Δrun_delay (time on a CPU plus time waiting in the run queue for one) covers at least the
/// unit's share of the window. A loop on a loaded host gets only a slice of a CPU and waits the
/// rest of the time, so measuring time on a CPU alone misses it; Δexec / (Δexec + Δrun_delay),
/// the share of its wanted time it got, is in the evidence. Preemptions (involuntary switches)
/// do not count, a loop gets preempted like anything else.
pub(super) fn is_spinning(task: &TaskSample, sample: &SchedSample, config: &StallConfig) -> bool {
    // In nanoseconds: exact, so 95 % of a window is 95 % and not 94.99999 %.
    let (window, on_cpu) = (sample.window.as_nanos(), task.on_cpu.as_nanos());
    let runnable = on_cpu + task.run_delay.as_nanos();
    !sample.window.is_zero()
        && task.voluntary_switches == 0
        && on_cpu > 0
        && runnable * 100 >= window * u128::from(config.spinning_cpu_percent)
}

/// Its runnable tasks wait for a CPU: run-queue p99 or CPU pressure above the threshold
/// (strictly), or still above [`STARVED_CLEAR_RATIO`] of it once a run has started.
pub(super) fn is_starved(sample: &SchedSample, config: &StallConfig, in_run: bool) -> bool {
    let scale = if in_run { STARVED_CLEAR_RATIO } else { 1.0 };
    let contention = &sample.contention;
    let runq = contention
        .runq_p99
        .is_some_and(|p99| p99.as_secs_f64() > config.starved_runq_p99.as_secs_f64() * scale);
    let psi = contention
        .psi_some_avg10
        .is_some_and(|psi| psi > f64::from(config.starved_psi_some_avg10) * scale);
    runq || psi
}
