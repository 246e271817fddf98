//! The gate in front of every healing action: free actions pass, a dead unit's restart passes
//! (under tightened local limits while etcd is away), and a disruptive action needs the fleet
//! not paused, the group's breaker closed (or this host its canary) and a slot.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use log::{info, warn};

use super::{
    FleetError,
    breaker::{self, BreakerDoc, Phase, Report, Verdict},
    client::get,
    config::{FleetConfig, Share},
    keys::Keys,
    permit::Permit,
    registry::{Link, within},
    rules::{ActionClass, OfflineLimiter, classify},
    slots::{self, Request, SlotRecord, Take},
};
use crate::report::metrics::fleet::FleetMetrics;

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
    pub(super) metrics: FleetMetrics,
    offline: Mutex<OfflineLimiter>,
    /// The breaker opening (its `since`) this host last alerted about, per group.
    alerted: Mutex<HashMap<String, u64>>,
}

impl Gate {
    pub(super) fn new(
        link: Arc<Link>,
        config: FleetConfig,
        host: String,
        units: HashMap<String, Membership>,
        metrics: FleetMetrics,
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
            metrics,
            alerted: Mutex::new(HashMap::new()),
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
            ActionClass::DeadRestart if self.link.connected() => Ok(None),
            ActionClass::DeadRestart => {
                let allowed = self
                    .offline
                    .lock()
                    .map(|mut l| l.allow(unit, Instant::now()));
                if allowed.unwrap_or(false) {
                    Ok(None)
                } else {
                    Err(self.deny(&group, "offline", "etcd is unreachable and the unit used up its offline restarts (offline_restarts)".into()))
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

    fn membership(&self, unit: &str) -> Membership {
        self.units.get(unit).cloned().unwrap_or_else(|| Membership {
            group: unit.to_owned(),
            budget: self.config.max_disrupted,
        })
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
                Err(e) => (
                    "offline",
                    format!(
                        "etcd is unreachable or has no quorum ({e}): disruptive actions are held (fail static)"
                    ),
                ),
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
        let canary = match self.breaker(client, group).await? {
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

    /// This host reports the group failing; the report keeps the time its failure began and
    /// lives as long as this host's registration (or until the action heals the unit).
    async fn report_failing(&self, client: &mut Client, group: &str) -> Result<(), FleetError> {
        let key = self.keys.group(group, &format!("failing/{}", self.host));
        let report = serde_json::to_string(&Report {
            host: self.host.clone(),
            since: unix_now(),
        })?;
        let lease = PutOptions::new().with_lease(self.link.host_lease());
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, report, Some(lease))]);
        client.txn(txn).await?;
        Ok(())
    }

    /// Whether the group's breaker lets this host act; `Ok(true)` when this host is its canary.
    async fn breaker(
        &self,
        client: &mut Client,
        group: &str,
    ) -> Result<Result<bool, String>, FleetError> {
        let key = self.keys.group(group, "breaker");
        let seen = get(client, &key).await?;
        let doc: Option<BreakerDoc> = seen
            .as_ref()
            .and_then(|e| serde_json::from_str(&e.value).ok());
        let reports: Vec<Report> = super::client::list(client, &self.keys.group(group, "failing/"))
            .await?
            .iter()
            .filter_map(|e| serde_json::from_str(&e.value).ok())
            .collect();
        let members = super::client::list(client, &self.keys.group(group, "members/"))
            .await?
            .len();
        let now = unix_now();
        let verdict = breaker::judge(
            doc.as_ref(),
            &reports,
            members,
            self.limits(),
            &self.host,
            now,
        );
        self.metrics
            .set_breaker(group, phase_gauge(doc.as_ref().map(|d| d.phase)));
        let write = |next: &BreakerDoc| -> Result<Txn, FleetError> {
            Ok(Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    seen.as_ref().map_or(0, |e| e.mod_revision),
                )])
                .and_then([TxnOp::put(key.clone(), serde_json::to_string(next)?, None)]))
        };
        match verdict {
            Verdict::Proceed => Ok(Ok(doc.is_some_and(|d| d.phase == Phase::HalfOpen))),
            Verdict::Held(why) => {
                self.alert_once(group, doc.as_ref());
                Ok(Err(why))
            }
            Verdict::Trip(next) => {
                client.txn(write(&next)?).await?;
                self.alert_once(group, Some(&next));
                Ok(Err(format!(
                    "the fleet breaker of group {group} opened: {} hosts report it failing",
                    reports.len()
                )))
            }
            Verdict::TryCanary(next) => {
                if client.txn(write(&next)?).await?.succeeded() {
                    info!("fleet: group {group}: this host is the breaker's canary");
                    self.metrics.set_breaker(group, 1);
                    Ok(Ok(true))
                } else {
                    Ok(Err("another host became the breaker's canary".into()))
                }
            }
        }
    }

    fn limits(&self) -> breaker::Limits {
        breaker::Limits {
            threshold: self.config.breaker_threshold,
            window: self.config.breaker_window.as_secs(),
            cooldown: self.config.breaker_cooldown.as_secs(),
        }
    }

    /// Every host alerts once per opening of a group's breaker.
    fn alert_once(&self, group: &str, doc: Option<&BreakerDoc>) {
        let Some(doc) = doc.filter(|d| d.phase == Phase::Open) else {
            return;
        };
        self.metrics.set_breaker(group, 2);
        let Ok(mut alerted) = self.alerted.lock() else {
            return;
        };
        if alerted.insert(group.to_owned(), doc.since) != Some(doc.since) {
            warn!(
                "fleet: ALERT group {group}: the fleet breaker is open; no host acts on it until a canary succeeds"
            );
        }
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
