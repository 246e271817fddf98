//! Fleet alerts: the breaker opening on a group, and a disruptive action held because etcd is
//! away. Every host raises each once (per opening, per outage): in the log, in the metrics,
//! and in Alertmanager when `[alertmanager]` is configured.

use std::{collections::HashMap, sync::Arc};

use log::warn;
use serde_json::{Value, json};

use crate::report::alert_out::AlertPusher;

pub const BREAKER_ALERT: &str = "SelfHealFleetBreakerOpen";
pub const OFFLINE_ALERT: &str = "SelfHealFleetOffline";

/// One fleet alert from this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetAlert {
    /// The group's breaker is open: no host acts on it until a canary succeeds.
    BreakerOpen { group: String },
    /// etcd is unreachable: a disruptive action on the group is held (fail static).
    Offline { group: String, why: String },
}

impl FleetAlert {
    pub fn message(&self) -> String {
        match self {
            FleetAlert::BreakerOpen { group } => format!(
                "fleet: ALERT group {group}: the fleet breaker is open; no host acts on it until a canary succeeds"
            ),
            FleetAlert::Offline { group, why } => {
                format!("fleet: ALERT offline: a disruptive action on group {group} is held: {why}")
            }
        }
    }

    /// Alertmanager API v2's JSON array; `instance` and `fleet` keep hosts and fleets apart.
    pub fn body(&self, fleet: &str, instance: &str) -> Value {
        let (name, group, summary) = match self {
            FleetAlert::BreakerOpen { group } => (BREAKER_ALERT, group, self.message()),
            FleetAlert::Offline { group, .. } => (OFFLINE_ALERT, group, self.message()),
        };
        json!([{
            "labels": {
                "alertname": name,
                "instance": instance,
                "fleet": fleet,
                "group": group,
                "severity": "critical",
            },
            "annotations": { "summary": summary },
        }])
    }
}

/// What was alerted: each occurrence (a breaker opening's `since`, an outage's number) of a
/// subject (a group, the link) is raised once.
#[derive(Debug, Default)]
pub struct Once(HashMap<String, u64>);

impl Once {
    /// Whether `occurrence` of `subject` is new (and remembers it).
    pub fn first(&mut self, subject: &str, occurrence: u64) -> bool {
        self.0.insert(subject.to_owned(), occurrence) != Some(occurrence)
    }
}

/// Logs `alert` and pushes it to Alertmanager in the background when one is configured.
pub fn raise(pusher: Option<&Arc<AlertPusher>>, fleet: &str, host: &str, alert: FleetAlert) {
    warn!("{}", alert.message());
    let Some(pusher) = pusher.cloned() else {
        return;
    };
    let body = alert.body(fleet, host);
    tokio::spawn(async move {
        if let Err(e) = pusher.push(body).await {
            warn!("fleet: cannot push the alert to Alertmanager: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_occurrence_is_alerted_once() {
        let mut once = Once::default();
        assert!(once.first("web", 100));
        assert!(!once.first("web", 100), "the same opening again");
        assert!(once.first("db", 100), "per subject");
        assert!(once.first("web", 160), "a new opening");
        assert!(!once.first("web", 160));
    }

    #[test]
    fn the_alert_names_its_fleet_host_and_group() {
        let alert = FleetAlert::BreakerOpen {
            group: "web".into(),
        };
        let body = alert.body("prod", "host-a");
        let labels = &body[0]["labels"];
        assert_eq!(labels["alertname"], BREAKER_ALERT);
        assert_eq!(labels["fleet"], "prod");
        assert_eq!(labels["instance"], "host-a");
        assert_eq!(labels["group"], "web");
        let held = FleetAlert::Offline {
            group: "web".into(),
            why: "etcd is unreachable".into(),
        };
        let body = held.body("prod", "host-a");
        assert_eq!(body[0]["labels"]["alertname"], OFFLINE_ALERT);
        let summary = body[0]["annotations"]["summary"].as_str().unwrap();
        assert!(summary.contains("etcd is unreachable"), "{summary}");
    }
}
