//! The agent's Prometheus metrics: one registry, every family, and typed update functions that
//! the engine calls. `/metrics` renders [`Metrics::render`].
//!
//! Names follow Prometheus conventions (`_total` counters, base units such as `_seconds`). Two
//! families keep the `selfhealing_` prefix of the original setup, because dashboards and alert
//! rules already use them: `selfhealing_restarts_total` and `selfhealing_consecutive_failures`.
//! Everything else is `selfheal_`. `deploy/selfhealing_rules.yml` and
//! `deploy/grafana-dashboard.json` use only the names in [`FAMILIES`] (a test checks).

use std::{collections::HashMap, time::Duration};

use prometheus::{
    Encoder as _, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry, TextEncoder,
    core::{Collector as _, MetricVec, MetricVecBuilder},
};

use crate::detect::{ProblemKind, StallKind};

pub mod fleet;
mod unit_family;

use unit_family::{Kind, UnitFamily};

/// Every metric family the agent exports.
pub const FAMILIES: [&str; 27] = [
    RESTARTS,
    CONSECUTIVE_FAILURES,
    PROBLEMS,
    ACTIONS,
    RECOVERY_DURATION,
    ESCALATIONS,
    CIRCUIT_STATE,
    QUARANTINES,
    QUARANTINED,
    UNIT_HEALTHY,
    STALL_SECONDS,
    KERNEL_EVENTS,
    KERNEL_EVENTS_LOST,
    KERNEL_HOOK_ATTACHED,
    ONCPU_RATIO,
    RUNQ_P99,
    RESOURCE,
    RESOURCE_LIMIT,
    EXHAUSTION,
    PROBE_UP,
    PROBE_DURATION,
    BUILD_INFO,
    // Fleet mode (metrics/fleet.rs).
    fleet::SLOTS_HELD,
    fleet::SLOT_WAITS,
    fleet::DENIALS,
    fleet::BREAKER_STATE,
    fleet::CONNECTED,
];

const RESTARTS: &str = "selfhealing_restarts_total";
const CONSECUTIVE_FAILURES: &str = "selfhealing_consecutive_failures";
const PROBLEMS: &str = "selfheal_problems_total";
const ACTIONS: &str = "selfheal_actions_total";
const RECOVERY_DURATION: &str = "selfheal_recovery_duration_seconds";
const ESCALATIONS: &str = "selfheal_escalations_total";
const CIRCUIT_STATE: &str = "selfheal_circuit_state";
const QUARANTINES: &str = "selfheal_quarantines_total";
const QUARANTINED: &str = "selfheal_quarantined";
const UNIT_HEALTHY: &str = "selfheal_unit_healthy";
const STALL_SECONDS: &str = "selfheal_stall_seconds";
const KERNEL_EVENTS: &str = "selfheal_kernel_events_total";
const KERNEL_EVENTS_LOST: &str = "selfheal_kernel_events_lost_total";
const KERNEL_HOOK_ATTACHED: &str = "selfheal_kernel_hook_attached";
const ONCPU_RATIO: &str = "selfheal_unit_oncpu_ratio";
const RUNQ_P99: &str = "selfheal_unit_runq_p99_seconds";
const RESOURCE: &str = "selfheal_unit_resource";
const RESOURCE_LIMIT: &str = "selfheal_unit_resource_limit";
const EXHAUSTION: &str = "selfheal_unit_exhaustion_seconds";
const PROBE_UP: &str = "selfheal_probe_up";
const PROBE_DURATION: &str = "selfheal_probe_duration_seconds";
const BUILD_INFO: &str = "selfheal_build_info";

/// The kernel counter that becomes `selfheal_kernel_events_lost_total` rather than a label of
/// `selfheal_kernel_events_total` (see `selfheal_common::counters::Counter::EventsLost`).
const EVENTS_LOST_COUNTER: &str = "events_lost";

/// From a fast restart (tens of ms) to a slow ladder of actions (minutes).
const RECOVERY_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

const STALL_KINDS: [StallKind; 5] = [
    StallKind::Stopped,
    StallKind::Hung,
    StallKind::Spinning,
    StallKind::Wedged,
    StallKind::Starved,
];

/// A unit's circuit breaker, as `selfheal_circuit_state` reports it: the policy's own type.
pub use crate::policy::CircuitState;

pub struct Metrics {
    registry: Registry,
    restarts: UnitFamily,
    consecutive_failures: UnitFamily,
    problems: IntCounterVec,
    actions: IntCounterVec,
    recovery_duration: HistogramVec,
    escalations: IntCounterVec,
    circuit_state: UnitFamily,
    quarantines: UnitFamily,
    quarantined: UnitFamily,
    unit_healthy: UnitFamily,
    stall_seconds: UnitFamily,
    kernel_events: IntCounterVec,
    kernel_events_lost: IntCounter,
    kernel_hook_attached: IntGaugeVec,
    oncpu_ratio: UnitFamily,
    runq_p99: UnitFamily,
    resource: UnitFamily,
    resource_limit: UnitFamily,
    exhaustion: UnitFamily,
    probe_up: IntGaugeVec,
    probe_duration: GaugeVec,
    /// Fleet mode's families (registered always; they stay empty when fleet mode is off).
    pub fleet: fleet::FleetMetrics,
}

/// Registers `collector`; the definitions are constants, so a failure is a bug caught by tests.
fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are valid and unique (see the tests)");
    collector
}

/// Removes the series of `vec` whose `unit` label is `unit`, whatever its other labels.
fn forget<T: MetricVecBuilder>(vec: &MetricVec<T>, unit: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|pair| (pair.name(), pair.value()))
                .collect();
            if labels.get("unit") == Some(&unit) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            register(r, vec)
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            register(r, vec)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let vec = GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            register(r, vec)
        };
        let unit_gauge = |name: &str, help: &str, second: Option<&'static str>| {
            register(r, UnitFamily::new(name, help, Kind::Gauge, second))
        };
        let unit_counter =
            |name: &str, help: &str| register(r, UnitFamily::new(name, help, Kind::Counter, None));
        let recovery_opts = HistogramOpts::new(
            RECOVERY_DURATION,
            "Time from a problem's detection until its unit was healthy again.",
        )
        .buckets(RECOVERY_BUCKETS.to_vec());
        let build_info = int_gauge(BUILD_INFO, "The agent's version; always 1.", &["version"]);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            restarts: unit_counter(RESTARTS, "Restarts of a unit done by the agent."),
            consecutive_failures: unit_gauge(
                CONSECUTIVE_FAILURES,
                "Healing actions on a unit that failed in a row since the last success.",
                None,
            ),
            problems: counter(PROBLEMS, "Problems detected, by kind.", &["unit", "kind"]),
            actions: counter(
                ACTIONS,
                "Healing actions finished, by action and outcome (done, failed, skipped).",
                &["unit", "action", "outcome"],
            ),
            recovery_duration: register(
                r,
                HistogramVec::new(recovery_opts, &["unit"]).expect("valid histogram"),
            ),
            escalations: counter(
                ESCALATIONS,
                "Problems the agent gave up healing and handed to an operator.",
                &["unit", "kind"],
            ),
            circuit_state: unit_gauge(
                CIRCUIT_STATE,
                "A unit's circuit breaker: 0 closed, 1 half-open, 2 open (healing suspended).",
                None,
            ),
            quarantines: unit_counter(QUARANTINES, "Times a unit was quarantined."),
            quarantined: unit_gauge(QUARANTINED, "1 while a unit is quarantined.", None),
            unit_healthy: unit_gauge(
                UNIT_HEALTHY,
                "1 when the unit is active with no problem in progress, else 0.",
                None,
            ),
            stall_seconds: unit_gauge(
                STALL_SECONDS,
                "Age of the unit's current stall of this kind; 0 when there is none.",
                Some("kind"),
            ),
            kernel_events: counter(
                KERNEL_EVENTS,
                "Events counted by the kernel programs in monitored units.",
                &["event"],
            ),
            kernel_events_lost: register(
                r,
                IntCounter::new(
                    KERNEL_EVENTS_LOST,
                    "Kernel records lost because the ring buffer was full.",
                )
                .expect("valid counter"),
            ),
            kernel_hook_attached: int_gauge(
                KERNEL_HOOK_ATTACHED,
                "1 when the kernel hook is attached, 0 when it is missing.",
                &["hook"],
            ),
            oncpu_ratio: unit_gauge(
                ONCPU_RATIO,
                "Share of the last interval the unit's tasks spent on a CPU.",
                None,
            ),
            runq_p99: unit_gauge(
                RUNQ_P99,
                "99th percentile of the unit's tasks' run-queue wait.",
                None,
            ),
            resource: unit_gauge(RESOURCE, "A resource the unit holds.", Some("resource")),
            resource_limit: unit_gauge(
                RESOURCE_LIMIT,
                "The limit of a resource the unit holds.",
                Some("resource"),
            ),
            exhaustion: unit_gauge(
                EXHAUSTION,
                "Forecast time until the resource reaches its limit at the current trend.",
                Some("resource"),
            ),
            probe_up: int_gauge(
                PROBE_UP,
                "1 when the unit's last health probe succeeded, else 0.",
                &["unit", "probe"],
            ),
            probe_duration: gauge(
                PROBE_DURATION,
                "How long the unit's last health probe took.",
                &["unit", "probe"],
            ),
            fleet: fleet::FleetMetrics::new(r),
            registry,
        }
    }

    /// The text exposition format (`text/plain; version=0.0.4`), as served on `/metrics`.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text encoder writes UTF-8")
    }

    /// Gives a newly monitored unit its zero series, so rates and `max by (unit)` see it
    /// before anything happens to it.
    pub fn watch_unit(&self, unit: &str) {
        self.restarts.inc_by(unit, "", 0.0);
        self.consecutive_failures.set(unit, "", 0.0);
        self.circuit_state.set(unit, "", 0.0);
        self.quarantines.inc_by(unit, "", 0.0);
        self.quarantined.set(unit, "", 0.0);
        for kind in STALL_KINDS {
            self.clear_stall(unit, kind);
        }
    }

    /// Removes every series of a unit the agent no longer monitors: it must not look like a
    /// unit that is still there and quiet.
    pub fn forget_unit(&self, unit: &str) {
        self.restarts.forget(unit);
        self.consecutive_failures.forget(unit);
        forget(&self.problems, unit);
        forget(&self.actions, unit);
        forget(&self.recovery_duration, unit);
        forget(&self.escalations, unit);
        self.circuit_state.forget(unit);
        self.quarantines.forget(unit);
        self.quarantined.forget(unit);
        self.unit_healthy.forget(unit);
        self.stall_seconds.forget(unit);
        self.oncpu_ratio.forget(unit);
        self.runq_p99.forget(unit);
        self.resource.forget(unit);
        self.resource_limit.forget(unit);
        self.exhaustion.forget(unit);
        self.forget_probes(unit);
    }

    /// Removes the unit's probe series: its probes were replaced, the new ones add theirs.
    pub fn forget_probes(&self, unit: &str) {
        forget(&self.probe_up, unit);
        forget(&self.probe_duration, unit);
    }

    pub fn problem_detected(&self, unit: &str, kind: &ProblemKind) {
        self.problems.with_label_values(&[unit, kind.name()]).inc();
    }

    /// An action ended; `outcome` is the actuator's "done", "failed" or "skipped". A restart
    /// that was done also counts in `selfhealing_restarts_total` (the status's "restarts").
    pub fn action_finished(&self, unit: &str, action: &str, outcome: &str) {
        self.actions
            .with_label_values(&[unit, action, outcome])
            .inc();
        if action == "restart" && outcome == "done" {
            self.restarts.inc(unit, "");
        }
    }

    /// The policy's count of failed actions in a row for the unit.
    pub fn set_consecutive_failures(&self, unit: &str, failures: u32) {
        self.consecutive_failures.set(unit, "", f64::from(failures));
    }

    /// A problem ended with the unit healthy again, `took` after it was detected.
    pub fn recovered(&self, unit: &str, took: Duration) {
        self.recovery_duration
            .with_label_values(&[unit])
            .observe(took.as_secs_f64());
    }

    pub fn escalated(&self, unit: &str, kind: &ProblemKind) {
        self.escalations
            .with_label_values(&[unit, kind.name()])
            .inc();
    }

    pub fn set_circuit(&self, unit: &str, state: CircuitState) {
        self.circuit_state.set(unit, "", f64::from(state as u8));
    }

    /// The unit entered (`true`) or left quarantine.
    pub fn set_quarantined(&self, unit: &str, quarantined: bool) {
        if quarantined && self.quarantined.get(unit, "") != Some(1.0) {
            self.quarantines.inc(unit, "");
        }
        self.quarantined
            .set(unit, "", f64::from(u8::from(quarantined)));
    }

    pub fn set_unit_healthy(&self, unit: &str, healthy: bool) {
        self.unit_healthy
            .set(unit, "", f64::from(u8::from(healthy)));
    }

    /// A stall of `kind` has lasted `age` so far.
    pub fn set_stall(&self, unit: &str, kind: StallKind, age: Duration) {
        self.stall_seconds.set(unit, kind.name(), age.as_secs_f64());
    }

    pub fn clear_stall(&self, unit: &str, kind: StallKind) {
        self.set_stall(unit, kind, Duration::ZERO);
    }

    /// The kernel programs' counters, summed over CPUs, as `KernelCounters::snapshot` returns
    /// them. The kernel keeps the totals; the Prometheus counters catch up with them.
    pub fn set_kernel_counters(&self, snapshot: &[(&str, u64)]) {
        for &(name, total) in snapshot {
            let counter = if name == EVENTS_LOST_COUNTER {
                self.kernel_events_lost.clone()
            } else {
                self.kernel_events.with_label_values(&[name])
            };
            // The kernel counts only up while the programs stay loaded, which is as long
            // as this process lives.
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    pub fn set_hook_attached(&self, hook: &str, attached: bool) {
        self.kernel_hook_attached
            .with_label_values(&[hook])
            .set(i64::from(attached));
    }

    /// The scheduler's view of the unit over the last interval.
    pub fn set_scheduler(&self, unit: &str, oncpu_ratio: f64, runq_p99: Duration) {
        self.oncpu_ratio.set(unit, "", oncpu_ratio);
        self.runq_p99.set(unit, "", runq_p99.as_secs_f64());
    }

    /// One resource of the unit (`resource` is e.g. "memory_bytes", "fds", "threads"): its
    /// use, its limit when it has one, and when it will run out when a trend says so. A `None`
    /// removes that series rather than exporting a made-up value.
    pub fn set_resource(
        &self,
        unit: &str,
        resource: &'static str,
        used: f64,
        limit: Option<f64>,
        exhaustion: Option<Duration>,
    ) {
        self.resource.set(unit, resource, used);
        match limit {
            Some(limit) => self.resource_limit.set(unit, resource, limit),
            None => self.resource_limit.remove(unit, resource),
        }
        match exhaustion {
            Some(left) => self.exhaustion.set(unit, resource, left.as_secs_f64()),
            None => self.exhaustion.remove(unit, resource),
        }
    }

    pub fn probe_finished(&self, unit: &str, probe: &str, up: bool, took: Duration) {
        let labels = [unit, probe];
        self.probe_up.with_label_values(&labels).set(i64::from(up));
        self.probe_duration
            .with_label_values(&labels)
            .set(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests;
