//! Fleet mode's families: slots held, waits and denials, the fleet breaker, etcd connectivity.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::register;

pub const SLOTS_HELD: &str = "selfheal_fleet_slots_held";
pub const SLOT_WAITS: &str = "selfheal_fleet_slot_waits_total";
pub const DENIALS: &str = "selfheal_fleet_denials_total";
pub const BREAKER_STATE: &str = "selfheal_fleet_breaker_state";
pub const CONNECTED: &str = "selfheal_fleet_connected";

#[derive(Clone)]
pub struct FleetMetrics {
    slots_held: IntGaugeVec,
    waits: IntCounterVec,
    denials: IntCounterVec,
    breaker: IntGaugeVec,
    /// Labelled by fleet name, so hosts without fleet mode export no series at all.
    connected: IntGaugeVec,
}

impl FleetMetrics {
    pub(super) fn new(r: &Registry) -> Self {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
            )
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            register(r, vec)
        };
        Self {
            slots_held: gauge(
                SLOTS_HELD,
                "Disruption slots this host holds, by group.",
                &["group"],
            ),
            waits: counter(
                SLOT_WAITS,
                "Disruptive actions that had to wait for a slot, by group.",
                &["group"],
            ),
            denials: counter(
                DENIALS,
                "Disruptive actions held (not executed) by fleet limits, by group and reason \
                 (budget, breaker, paused, offline).",
                &["group", "reason"],
            ),
            breaker: gauge(
                BREAKER_STATE,
                "A group's fleet breaker as this host last saw it: 0 closed, 1 half-open, 2 open.",
                &["group"],
            ),
            connected: gauge(
                CONNECTED,
                "1 while etcd answers this host with a quorum, else 0 (fail static).",
                &["fleet"],
            ),
        }
    }

    pub fn set_slot_held(&self, group: &str, held: bool) {
        self.slots_held
            .with_label_values(&[group])
            .set(i64::from(held));
    }

    pub fn waited(&self, group: &str) {
        self.waits.with_label_values(&[group]).inc();
    }

    pub fn denied(&self, group: &str, reason: &str) {
        self.denials.with_label_values(&[group, reason]).inc();
    }

    /// 0 closed, 1 half-open, 2 open.
    pub fn set_breaker(&self, group: &str, state: i64) {
        self.breaker.with_label_values(&[group]).set(state);
    }

    pub fn set_connected(&self, fleet: &str, connected: bool) {
        self.connected
            .with_label_values(&[fleet])
            .set(i64::from(connected));
    }
}
