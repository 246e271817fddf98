//! The gate's side of the fleet storm breaker: this host's failure reports (from disruptive
//! actions and from dead-unit restarts alike), the breaker's verdict, and the alerts that go
//! with it.

use std::sync::Arc;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use log::{info, warn};

use super::{
    FleetError,
    alert::{self, FleetAlert},
    breaker::{self, BreakerDoc, Phase, Report, Verdict},
    client::get,
    gate::{Gate, phase_gauge, unix_now},
};

impl Gate {
    /// This host reports the group failing; the report keeps the time its failure began and
    /// lives as long as this host's registration (or until the action heals the unit).
    pub(super) async fn report_failing(
        &self,
        client: &mut Client,
        group: &str,
    ) -> Result<(), FleetError> {
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

    /// A dead unit of the group is being restarted (no slot needed): the restart still reports
    /// the group failing here, and trips the breaker when too many hosts do, so crash loops on
    /// every host open it too. In the background: the restart does not wait for etcd.
    pub(super) fn report_dead(self: &Arc<Self>, group: &str) {
        let (gate, group) = (self.clone(), group.to_owned());
        tokio::spawn(async move {
            let Some(mut client) = gate.link.client() else {
                return;
            };
            let judged = async {
                gate.report_failing(&mut client, &group).await?;
                gate.breaker(&mut client, &group, false).await
            };
            if let Err(e) = judged.await {
                warn!("fleet: cannot report group {group} failing: {e}");
            }
        });
    }

    /// Whether the group's breaker lets this host act; `Ok(true)` when this host is its canary.
    /// Only an action that takes a slot (`may_try`) may become the half-open breaker's canary.
    pub(super) async fn breaker(
        &self,
        client: &mut Client,
        group: &str,
        may_try: bool,
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
            Verdict::TryCanary(_) if !may_try => Ok(Err("the breaker waits for a canary".into())),
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
    pub(super) fn alert_once(&self, group: &str, doc: Option<&BreakerDoc>) {
        let Some(doc) = doc.filter(|d| d.phase == Phase::Open) else {
            return;
        };
        self.metrics.set_breaker(group, 2);
        let alert = FleetAlert::BreakerOpen {
            group: group.to_owned(),
        };
        self.alert_first(group, doc.since, alert);
    }

    /// An action is held because etcd is away: alerted once per outage of the link.
    pub(super) fn alert_offline(&self, group: &str, why: &str) {
        let alert = FleetAlert::Offline {
            group: group.to_owned(),
            why: why.to_owned(),
        };
        self.alert_first("", self.link.outage(), alert);
    }

    fn alert_first(&self, subject: &str, occurrence: u64, alert: FleetAlert) {
        let first = self
            .alerted
            .lock()
            .is_ok_and(|mut once| once.first(subject, occurrence));
        if first {
            alert::raise(self.pusher.as_ref(), &self.config.name, &self.host, alert);
        }
    }
}
