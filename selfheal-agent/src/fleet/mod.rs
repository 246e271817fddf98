//! Fleet mode: agents on many hosts coordinate through etcd. Each host keeps healing on its
//! own; etcd adds limits (a disruption budget per group, a fleet storm breaker, a pause switch)
//! and one view of the fleet. When etcd is away the agent fails static (see `rules.rs`).
//!
//! Pure parts: `budget.rs`, `breaker.rs`, `rules.rs`. The etcd side: `client.rs` (connection),
//! `registry.rs` (this host alive by lease), `slots.rs` (the counting semaphore), `gate.rs`
//! (what the engine asks before acting), `tripping.rs` (failure reports and the breaker's
//! verdict), `alert.rs` (alerts once, to the log and Alertmanager), `permit.rs` (a held slot),
//! `status.rs` (the CLI's view, pause and resume).

pub mod alert;
pub mod breaker;
pub mod budget;
pub mod client;
pub mod config;
pub mod gate;
pub mod keys;
pub mod permit;
pub mod registry;
pub mod rules;
pub mod slots;
pub mod status;
mod tripping;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use tokio::sync::watch;

pub use config::{FleetConfig, Share};
pub use gate::{Gate, Held, Membership};
pub use permit::Permit;
pub use slots::SlotRecord;

use crate::{
    config::Config,
    report::{alert_out::AlertPusher, metrics::fleet::FleetMetrics},
    units::pattern::UnitPattern,
};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer in time")]
    Timeout,
    #[error("not connected")]
    Offline,
    #[error("etcd no longer keeps this host's lease alive")]
    LeaseLost,
    #[error("cannot read TLS file {path}: {source}")]
    Tls {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode a fleet document: {0}")]
    Json(#[from] serde_json::Error),
}

/// This host's name in the fleet: `[fleet] host`, else the kernel's hostname.
pub fn host_name(config: &FleetConfig) -> String {
    if !config.host.is_empty() {
        return config.host.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Starts fleet mode when `[fleet]` names endpoints: the registration task (which connects,
/// and reconnects, in the background) and the gate the engine asks before acting.
pub fn start(
    config: &Config,
    metrics: FleetMetrics,
    shutdown: watch::Receiver<bool>,
) -> Option<Arc<Gate>> {
    let fleet = &config.fleet;
    if !fleet.enabled() {
        return None;
    }
    let mut units: HashMap<String, Membership> = HashMap::new();
    // A pattern's instances share its group when it names one; else each instance is a group
    // of its own, like a unit named exactly (a pattern is no group name).
    let mut patterns = HashMap::new();
    for u in &config.units {
        let budget = u.max_disrupted.unwrap_or(fleet.max_disrupted);
        if UnitPattern::parse(&u.name).is_ok_and(|p| p.is_pattern()) {
            patterns.insert(u.name.clone(), (u.group.clone(), budget));
            continue;
        }
        let group = u.group.clone().unwrap_or_else(|| u.name.clone());
        units.insert(u.name.clone(), Membership { group, budget });
    }
    let mut groups: Vec<String> = units.values().map(|m| m.group.clone()).collect();
    groups.extend(patterns.values().filter_map(|(group, _)| group.clone()));
    groups.sort();
    groups.dedup();
    let host = host_name(fleet);
    let link = Arc::new(registry::Link::default());
    metrics.set_connected(&fleet.name, false);
    let registry = registry::Registry {
        link: link.clone(),
        config: fleet.clone(),
        host: host.clone(),
        keys: keys::Keys::new(&fleet.name),
        groups,
        metrics: metrics.clone(),
    };
    tokio::spawn(registry.run(shutdown));
    // A bad `[alertmanager] url` is the daemon's error to report (it builds its own pusher).
    let pusher = AlertPusher::from_config(&config.alertmanager)
        .ok()
        .flatten()
        .map(Arc::new);
    Some(Arc::new(Gate::new(
        link,
        fleet.clone(),
        host,
        units,
        patterns,
        metrics,
        pusher,
    )))
}
