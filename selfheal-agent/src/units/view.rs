//! What the engine publishes about each unit for `status`, `/health` and the CLI: the policy's
//! view (budget, circuit, isolation), stalls in progress, scheduler picture, resources with
//! their trends, and probes. Plain serializable data, rebuilt each tick.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::policy::UnitPolicyStatus;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitView {
    /// The policy's status of the unit (budget left, circuit, escalation, isolation…).
    pub policy: Option<UnitPolicyStatus>,
    /// Why the unit is in its current state, in plain words: written into the status document
    /// when it is asked for (the engine renders it then), empty in the published view.
    #[serde(default)]
    pub explain: String,
    pub stalls: Vec<StallView>,
    pub sched: Option<SchedView>,
    pub resources: Vec<ResourceView>,
    /// TCP connections the unit holds, by state.
    pub connections: Vec<(Cow<'static, str>, u64)>,
    pub probes: Vec<serde_json::Value>,
    /// The problem kind the agent escalated to an operator, while escalated.
    #[serde(default)]
    pub escalated_problem: Option<String>,
}

/// How long a unit with no task on a CPU must have been off them to show as idle.
const IDLE_AFTER_SECONDS: f64 = 1.0;

impl UnitView {
    /// The view as read at `now_ns` (CLOCK_MONOTONIC): the ages it keeps as instants, in
    /// seconds.
    pub fn read_at(&self, now_ns: u64) -> Self {
        let mut view = self.clone();
        if let Some(sched) = view.sched.as_mut()
            && let Some(since) = sched.idle_since_ns
        {
            // Idle for a tick (1 s by default) or more, as the sampler judged idleness: a view
            // built while the unit had just run keeps its instant, and says so once it is true.
            let idle = now_ns.saturating_sub(since) as f64 / 1e9;
            sched.idle_seconds = (idle >= IDLE_AFTER_SECONDS).then_some(idle);
        }
        if let Some(last) = view.policy.as_mut().and_then(|p| p.last_action.as_mut()) {
            last.read_at(now_ns);
        }
        view
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StallView {
    pub kind: String,
    pub age_seconds: f64,
    /// Crossed its threshold and was reported (else still a suspicion).
    pub reported: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedView {
    /// CPU time of all its tasks over the last tick, percent of one CPU.
    pub oncpu_percent: f64,
    pub runq_p99_ms: Option<f64>,
    pub psi_cpu_some_avg10: Option<f64>,
    pub nr_throttled: u64,
    pub tasks: usize,
    /// Task count by state: running, runnable, sleeping, disk_sleep, stopped, traced.
    pub states: Vec<(Cow<'static, str>, usize)>,
    /// Seconds since any task of the unit ran, when it has been idle for a tick or more: status
    /// works it out from `idle_since_ns` when it is read ([`UnitView::read_at`]).
    pub idle_seconds: Option<f64>,
    /// When a task of the unit last ran (CLOCK_MONOTONIC ns), while none is on a CPU. Kept
    /// instead of the seconds so that a sleeping unit's view stays the same and is not
    /// published again.
    #[serde(skip)]
    pub idle_since_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceView {
    /// fd, socket, connection, thread, memory.
    pub kind: Cow<'static, str>,
    pub value: f64,
    pub limit: Option<f64>,
    /// leak, sawtooth, plateau, burst, flat, shrinking, unknown.
    pub shape: Cow<'static, str>,
    pub slope_per_minute: f64,
    pub exhaustion_in_seconds: Option<f64>,
    pub reported: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_units_view_stays_the_same_and_reads_its_idle_seconds_when_read() {
        let idle = |since| UnitView {
            sched: Some(SchedView {
                oncpu_percent: 0.0,
                runq_p99_ms: None,
                psi_cpu_some_avg10: None,
                nr_throttled: 0,
                tasks: 1,
                states: vec![("sleeping".into(), 1)],
                idle_seconds: None,
                idle_since_ns: Some(since),
            }),
            ..UnitView::default()
        };
        // Two passes of a unit asleep since the same moment build equal views.
        assert_eq!(idle(5_000_000_000), idle(5_000_000_000));
        let read = idle(5_000_000_000).read_at(7_500_000_000);
        assert_eq!(read.sched.and_then(|s| s.idle_seconds), Some(2.5));
        // Off the CPU for less than a tick: not idle yet, and idle later without a new view.
        let just_ran = idle(5_000_000_000).read_at(5_400_000_000);
        assert_eq!(just_ran.sched.and_then(|s| s.idle_seconds), None);
        assert_eq!(UnitView::default().read_at(1), UnitView::default());
    }

    #[test]
    fn the_last_actions_age_is_kept_as_an_instant_and_read_when_read() {
        let status = |seconds_ago| crate::policy::LastActionStatus {
            action: "restart".into(),
            result: "done".into(),
            seconds_ago,
            at_ns: None,
        };
        // Two passes a second apart build the same view of an action taken at 10 s.
        let (mut first, mut second) = (status(2.0), status(3.0));
        first.as_instant(12_000_000_000);
        second.as_instant(13_000_000_000);
        assert_eq!(first, second);
        assert_eq!(first.at_ns, Some(10_000_000_000));
        first.read_at(14_500_000_000);
        assert_eq!(first.seconds_ago, 4.5);
    }
}
