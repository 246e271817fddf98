//! The problem a stall becomes, with its evidence in plain words and numbers.

use std::fmt::Write;
use std::time::{Duration, Instant};

use super::conditions::{is_hung, is_spinning};
use super::{SchedSample, StallConfig, StallKind, Subject, TaskSample, TaskState};
use crate::detect::{Problem, ProblemKind};

/// The problem for `kind`, held by `subject` since `since` (the first sample of its run).
pub(super) fn problem(
    unit: u32,
    kind: StallKind,
    config: &StallConfig,
    sample: &SchedSample,
    subject: Subject,
    since: Instant,
) -> Problem {
    let held = sample.at.saturating_duration_since(since);
    let task = subject.and_then(|pid| sample.tasks.iter().find(|task| task.pid == pid));
    let (evidence, culprit) = match (kind, task) {
        (StallKind::Stopped, _) => stopped(sample, held),
        (StallKind::Hung, Some(task)) => (hung(task, sample, held), Some(task)),
        (StallKind::Spinning, Some(task)) => (spinning(task, sample, config, held), Some(task)),
        (StallKind::Wedged, _) => (super::wedged::evidence(sample, held), None),
        (StallKind::Starved, _) => (starved(sample, config, held), None),
        // Subjects come from this very sample: a per-task kind always finds its task.
        (StallKind::Hung | StallKind::Spinning, None) => {
            (format!("a task held it for {}", human(held)), None)
        }
    };
    Problem {
        unit,
        kind: ProblemKind::Stall(kind),
        detected_at: since,
        evidence,
        pid: culprit.map(|task| task.tgid),
        // SIGKILL is only acted on when a task leaves D: restarting a hung unit may not work.
        unkillable: kind == StallKind::Hung,
    }
}

fn stopped(sample: &SchedSample, held: Duration) -> (String, Option<&TaskSample>) {
    let traced = sample
        .tasks
        .iter()
        .filter(|task| task.state == TaskState::Traced)
        .count();
    let by_signal = sample.tasks.len() - traced;
    let longest = sample.tasks.iter().max_by_key(|task| task.state_for);
    let mut text = format!(
        "every task of the unit stopped for {} ({by_signal} by a signal such as SIGSTOP, \
         {traced} by a tracer such as a debugger)",
        human(held)
    );
    if let Some(task) = longest {
        let _ = write!(
            text,
            "; {} has been stopped for {}",
            name(task),
            human(task.state_for)
        );
    }
    (text, longest)
}

fn hung(task: &TaskSample, sample: &SchedSample, held: Duration) -> String {
    let mut text = format!(
        "{} in uninterruptible sleep (D) for {} ({} since it last ran)",
        name(task),
        human(held),
        human(task.state_for)
    );
    match &task.wchan {
        Some(wchan) => {
            let _ = write!(text, ", wait channel {wchan}");
        }
        None => text.push_str(", wait channel unreadable"),
    }
    if let Some(stack) = task.kernel_stack.as_deref().map(one_line_stack) {
        let _ = write!(text, ", kernel stack {stack}");
    }
    let others = sample
        .tasks
        .iter()
        .filter(|other| other.pid != task.pid && is_hung(other, sample))
        .count();
    if others > 0 {
        let _ = write!(text, "; {others} more task(s) in D");
    }
    text.push_str("; a task in D may not die on SIGKILL");
    text
}

fn spinning(
    task: &TaskSample,
    sample: &SchedSample,
    config: &StallConfig,
    held: Duration,
) -> String {
    let others = sample
        .tasks
        .iter()
        .filter(|other| other.pid != task.pid && is_spinning(other, sample, config))
        .count();
    let mut text = format!(
        "{} running or waiting for a CPU for at least {}% of every window, with no voluntary \
         context switch, for {} (last window of {}: {} on a CPU, {} waiting for one, {} \
         involuntary switches)",
        name(task),
        config.spinning_cpu_percent,
        human(held),
        human(sample.window),
        human(task.on_cpu),
        human(task.run_delay),
        task.involuntary_switches
    );
    if others > 0 {
        let _ = write!(text, "; {others} more task(s) spinning");
    }
    text
}

fn starved(sample: &SchedSample, config: &StallConfig, held: Duration) -> String {
    let contention = &sample.contention;
    let runq = contention.runq_p99.map_or("unknown".to_owned(), human);
    let psi = contention
        .psi_some_avg10
        .map_or("unavailable".to_owned(), |psi| format!("{psi:.1}%"));
    let mut text = format!(
        "runnable tasks waited for a CPU for {}: run-queue latency p99 {runq} (threshold {}), \
         CPU pressure some avg10 {psi} (threshold {}%)",
        human(held),
        human(config.starved_runq_p99),
        config.starved_psi_some_avg10
    );
    if contention.nr_throttled > 0 {
        let _ = write!(
            text,
            "; its own CPU quota throttled it {} time(s) ({}) in the last window",
            contention.nr_throttled,
            human(contention.throttled_time)
        );
    } else {
        text.push_str("; not throttled by its own CPU quota: other work holds the CPUs");
    }
    text
}

fn name(task: &TaskSample) -> String {
    if task.pid == task.tgid {
        format!("process {} ({})", task.pid, task.comm)
    } else {
        format!("task {} ({}) of process {}", task.pid, task.comm, task.tgid)
    }
}

/// `/proc/PID/stack` ("[<0>] frame+0x1/0x2" per line) as "frame < caller < ...".
fn one_line_stack(stack: &str) -> String {
    stack
        .lines()
        .map(|line| {
            let line = line.trim();
            match line.split_once("] ") {
                Some((address, frame)) if address.starts_with('[') => frame,
                _ => line,
            }
        })
        .filter(|frame| !frame.is_empty())
        .collect::<Vec<_>>()
        .join(" < ")
}

/// Rounded to what a reader needs: "300s", "4.5s", "50.4ms", "800µs".
pub(super) fn human(duration: Duration) -> String {
    let micros = duration.as_micros();
    let step = match duration.as_secs() {
        10.. => 1_000_000,
        1.. => 1_000,
        0 if micros >= 1_000 => 100,
        0 => 1,
    };
    let rounded = u64::try_from(micros / step * step).unwrap_or(u64::MAX);
    if rounded == 0 {
        "0s".to_owned()
    } else {
        format!("{:?}", Duration::from_micros(rounded))
    }
}
