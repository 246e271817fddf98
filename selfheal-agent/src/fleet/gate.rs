//! The gate in front of every healing action: free actions pass, a dead unit's restart passes
//! (under tightened local limits while etcd is away), and a disruptive action needs the fleet
//! not paused, the group's breaker closed (or this host its canary) and a slot.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use etcd_client::Client;
use log::info;

use super::{
    FleetError,
    alert::Once,
    breaker::Phase,
    client::get,
    config::{FleetConfig, Share},
    keys::Keys,
    permit::Permit,
    registry::{Link, within},
    rules::{ActionClass, OfflineLimiter, classify},
    slots::{self, Request, SlotRecord, Take},
};
use crate::report::{alert_out::AlertPusher, metrics::fleet::FleetMetrics};

/// Why an action was not allowed to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held(pub String);

/// One unit's place in the fleet.
#[derive(Debug, Clone)]
pub struct Membership {
    pub group: String,
    pub budget: Share,
}

pub struct Gate {
    pub(super) link: Arc<Link>,
    pub(super) config: FleetConfig,
    pub(super) host: String,
    pub(super) keys: Keys,
    pub(super) units: HashMap<String, Membership>,
    /// Unit patterns' explicit group (if any) and budget, for the instances they adopt.
    pub(super) patterns: HashMap<String, (Option<String>, Share)>,
    /// Instance → the pattern that adopted it.
    instances: Mutex<HashMap<String, String>>,
    pub(super) metrics: FleetMetrics,
    pub(super) offline: Mutex<OfflineLimiter>,
    /// Breaker openings (per group) and outages (of the link) this host alerted about.
    pub(super) alerted: Mutex<Once>,
    pub(super) pusher: Option<Arc<AlertPusher>>,
}

impl Gate {
    pub(super) fn new(
        link: Arc<Link>,
        config: FleetConfig,
        host: String,
        units: HashMap<String, Membership>,
        patterns: HashMap<String, (Option<String>, Share)>,
        metrics: FleetMetrics,
        pusher: Option<Arc<AlertPusher>>,
    ) -> Self {
        Self {
            offline: Mutex::new(OfflineLimiter::new(
                config.offline_restarts,
                config.offline_window,
            )),
            keys: Keys::new(&config.name),
            link,
            config,
            host,
            units,
            patterns,
            instances: Mutex::new(HashMap::new()),
            metrics,
            alerted: Mutex::new(Once::default()),
            pusher,
        }
    }

    /// Asks before `action` ("restart", "scale", ...) on `unit`; `live` is whether systemd
    /// reports the unit active. `Ok(None)`: go on without a slot.
    pub async fn before(
        self: &Arc<Self>,
        unit: &str,
        action: &str,
        live: bool,
    ) -> Result<Option<Permit>, Held> {
        let group = self.membership(unit).group;
        match classify(action, live) {
            ActionClass::Free => Ok(None),
            ActionClass::DeadRestart if self.link.connected() => {
                self.report_dead(&group);
                Ok(None)
            }
            ActionClass::DeadRestart => {
                let allowed = self
                    .offline
                    .lock()
                    .map(|mut l| l.allow(unit, Instant::now()));
                if allowed.unwrap_or(false) {
                    Ok(None)
                } else {
                    let why = "etcd is unreachable and the unit used up its offline restarts (offline_restarts)";
                    self.alert_offline(&group, why);
                    Err(self.deny(&group, "offline", why.into()))
                }
            }
            ActionClass::Disruptive => {
                let note = format!(
                    "{{\"unit\":{unit:?},\"action\":{action:?},\"since\":{}}}",
                    unix_now()
                );
                match self.acquire(unit, &group, &note).await {
                    Ok(permit) => Ok(Some(permit)),
                    Err((reason, why)) => Err(self.deny(&group, reason, why)),
                }
            }
        }
    }

    /// `unit` was adopted by `pattern` (`None`: it is no pattern's instance any more): it
    /// shares the pattern's group when the pattern names one, else it is a group of its own.
    pub fn set_pattern(&self, unit: &str, pattern: Option<&str>) {
        let Ok(mut instances) = self.instances.lock() else {
            return;
        };
        match pattern {
            Some(pattern) => instances.insert(unit.to_owned(), pattern.to_owned()),
            None => instances.remove(unit),
        };
    }

    fn membership(&self, unit: &str) -> Membership {
        let pattern = self
            .instances
            .lock()
            .ok()
            .and_then(|i| i.get(unit).cloned());
        let pattern = pattern.and_then(|p| self.patterns.get(&p));
        membership_of(
            unit,
            self.units.get(unit),
            pattern,
            self.config.max_disrupted,
        )
    }

    fn deny(&self, group: &str, reason: &str, why: String) -> Held {
        self.metrics.denied(group, reason);
        Held(why)
    }

    /// Waits, re-reading etcd, while the fleet is paused, the breaker open, the budget full or
    /// etcd unreachable (fail static: held, alerted by `selfheal_fleet_connected 0`), until a
    /// slot is taken or `slot_wait` runs out. Errors are (metric reason, explanation).
    async fn acquire(
        self: &Arc<Self>,
        unit: &str,
        group: &str,
        note: &str,
    ) -> Result<Permit, (&'static str, String)> {
        let budget = self.membership(unit).budget;
        let deadline = Instant::now() + self.config.slot_wait;
        let mut lease: Option<(Client, i64)> = None;
        let mut reported = false;
        let mut waited = false;
        loop {
            let look = match (self.link.client(), lease.take()) {
                (None, _) => Err(FleetError::Offline),
                (Some(client), held) => {
                    self.look(client, held, group, budget, note, &mut reported)
                        .await
                }
            };
            let (reason, why) = match look {
                Ok(Ok((client, slot, canary))) => {
                    return Ok(self.permit(client, unit, group, slot, canary));
                }
                Ok(Err((kept, Wait::Raced))) => {
                    lease = Some(kept);
                    continue;
                }
                Ok(Err((kept, Wait::On(reason, why)))) => {
                    lease = Some(kept);
                    (reason, why)
                }
                Err(e) => {
                    let why = format!(
                        "etcd is unreachable or has no quorum ({e}): disruptive actions are held (fail static)"
                    );
                    // A passing error while the link is up is not an outage.
                    if !self.link.connected() {
                        self.alert_offline(group, &why);
                    }
                    ("offline", why)
                }
            };
            if Instant::now() >= deadline {
                if let Some((mut client, id)) = lease {
                    let _ = within(client.lease_revoke(id)).await;
                }
                return Err((reason, format!("{why}; waited {:?}", self.config.slot_wait)));
            }
            if !waited {
                waited = true;
                self.metrics.waited(group);
                info!("{unit}: waiting for the fleet: {why}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// One round: report the failure (once), get a slot lease (once), then look.
    async fn look(
        &self,
        mut client: Client,
        held: Option<(Client, i64)>,
        group: &str,
        budget: Share,
        note: &str,
        reported: &mut bool,
    ) -> Result<Result<(Client, SlotRecord, bool), ((Client, i64), Wait)>, FleetError> {
        if !*reported {
            self.report_failing(&mut client, group).await?;
            *reported = true;
        }
        let id = match held {
            Some((_, id)) => id,
            None => within(client.lease_grant(self.config.lease_ttl.as_secs() as i64, None))
                .await?
                .id(),
        };
        // A lease that ran out while waiting (say, through an outage) is replaced next round.
        let result = self.admission(&mut client, group, budget, id, note).await;
        Ok(match result? {
            Ok((slot, canary)) => Ok((client, slot, canary)),
            Err(wait) => Err(((client, id), wait)),
        })
    }

    fn permit(
        self: &Arc<Self>,
        client: Client,
        unit: &str,
        group: &str,
        slot: SlotRecord,
        canary: bool,
    ) -> Permit {
        self.metrics.set_slot_held(group, true);
        info!(
            "{unit}: took slot {} (lease {:x}, revision {}){}",
            slot.key,
            slot.lease,
            slot.revision,
            if canary {
                " as the breaker's canary"
            } else {
                ""
            }
        );
        let last_ack = Arc::new(Mutex::new(Instant::now()));
        let keeper = tokio::spawn(super::permit::keep_alive(
            client,
            slot.lease,
            self.config.lease_ttl,
            last_ack.clone(),
        ));
        Permit {
            gate: self.clone(),
            group: group.to_owned(),
            slot,
            canary,
            last_ack,
            keeper,
        }
    }

    /// One look at the fleet: the pause switches, the breaker, then the budget.
    async fn admission(
        &self,
        client: &mut Client,
        group: &str,
        budget: Share,
        lease: i64,
        note: &str,
    ) -> Result<Result<(SlotRecord, bool), Wait>, FleetError> {
        if let Some(key) = self.paused(client, group).await? {
            return Ok(Err(Wait::On(
                "paused",
                format!("automated action is paused ({key})"),
            )));
        }
        let canary = match self.breaker(client, group, true).await? {
            Ok(canary) => canary,
            Err(why) => return Ok(Err(Wait::On("breaker", why))),
        };
        let request = Request {
            keys: &self.keys,
            group,
            host: &self.host,
            budget,
            lease,
            note,
        };
        Ok(match slots::try_take(client, &request).await? {
            Take::Taken(slot) => Ok((slot, canary)),
            Take::Raced => Err(Wait::Raced),
            Take::Full { holders, limit } => Err(Wait::On(
                "budget",
                format!(
                    "all {limit} slot(s) of group {group} are held (by {})",
                    holders.join(", ")
                ),
            )),
            Take::NoView => Err(Wait::On(
                "budget",
                format!("no host is registered for group {group}: an empty view is no permission"),
            )),
        })
    }

    /// The pause key in force, if any.
    async fn paused(&self, client: &mut Client, group: &str) -> Result<Option<String>, FleetError> {
        for key in [self.keys.pause(), self.keys.group(group, "pause")] {
            if get(client, &key).await?.is_some() {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }
}

enum Wait {
    /// (metric reason, explanation)
    On(&'static str, String),
    /// Lost a compare-and-swap: look again at once.
    Raced,
}

pub(super) fn phase_gauge(phase: Option<Phase>) -> i64 {
    match phase {
        None | Some(Phase::Closed) => 0,
        Some(Phase::HalfOpen) => 1,
        Some(Phase::Open) => 2,
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A unit's group and budget: its own `[[unit]]`'s; else, for an instance, its pattern's group
/// (when the pattern names one) and budget; else a group of its own with the fleet's budget.
fn membership_of(
    unit: &str,
    own: Option<&Membership>,
    pattern: Option<&(Option<String>, Share)>,
    fleet_budget: Share,
) -> Membership {
    if let Some(own) = own {
        return own.clone();
    }
    let (group, budget) = match pattern {
        Some((group, budget)) => (group.clone(), *budget),
        None => (None, fleet_budget),
    };
    Membership {
        group: group.unwrap_or_else(|| unit.to_owned()),
        budget,
    }
}

#[cfg(test)]
mod membership_tests {
    use super::*;

    #[test]
    fn an_instance_shares_its_patterns_group_only_when_the_pattern_names_one() {
        let fleet = Share::Count(1);
        let grouped = (Some("workers".to_owned()), Share::Percent(25));
        let m = membership_of("work@1.service", None, Some(&grouped), fleet);
        assert_eq!(
            (m.group.as_str(), m.budget),
            ("workers", Share::Percent(25))
        );
        // A pattern without a group: each instance is a group of its own, with the
        // pattern's budget (a pattern is no group name).
        let ungrouped = (None, Share::Count(2));
        let m = membership_of("work@1.service", None, Some(&ungrouped), fleet);
        assert_eq!(
            (m.group.as_str(), m.budget),
            ("work@1.service", Share::Count(2))
        );
        let m = membership_of("other.service", None, None, fleet);
        assert_eq!((m.group.as_str(), m.budget), ("other.service", fleet));
        let own = Membership {
            group: "web".into(),
            budget: Share::Count(3),
        };
        assert_eq!(
            membership_of("web.service", Some(&own), Some(&grouped), fleet).group,
            "web"
        );
    }
}
