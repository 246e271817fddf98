//! What the engine publishes about each unit for `status`, `/health` and the CLI: the policy's
//! view (budget, circuit, isolation), stalls in progress, scheduler picture, resources with
//! their trends, and probes. Plain serializable data, rebuilt each tick.

use serde::{Deserialize, Serialize};

use crate::policy::UnitPolicyStatus;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitView {
    /// The policy's status of the unit (budget left, circuit, escalation, isolation…).
    pub policy: Option<UnitPolicyStatus>,
    /// Why the unit is in its current state, in plain words.
    pub explain: String,
    pub stalls: Vec<StallView>,
    pub sched: Option<SchedView>,
    pub resources: Vec<ResourceView>,
    /// TCP connections the unit holds, by state.
    pub connections: Vec<(String, u64)>,
    pub probes: Vec<serde_json::Value>,
    /// The problem kind the agent escalated to an operator, while escalated.
    #[serde(default)]
    pub escalated_problem: Option<String>,
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
    pub states: Vec<(String, usize)>,
    /// Seconds since any task of the unit ran, when it has been idle for a tick or more.
    pub idle_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceView {
    /// fd, socket, connection, thread, memory.
    pub kind: String,
    pub value: f64,
    pub limit: Option<f64>,
    /// leak, sawtooth, plateau, burst, flat, shrinking, unknown.
    pub shape: String,
    pub slope_per_minute: f64,
    pub exhaustion_in_seconds: Option<f64>,
    pub reported: bool,
}
