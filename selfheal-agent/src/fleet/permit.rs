//! A held slot: kept alive while its action runs and settles, then released. A success heals
//! this host's failure report and, for the breaker's canary, closes the breaker.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use log::{info, warn};

use super::{
    FleetError, Share,
    breaker::{self, BreakerDoc},
    client::get,
    gate::{Gate, phase_gauge, unix_now},
    registry::within,
    slots::{self, Request, SlotRecord},
};

/// A held slot: kept alive until [`Permit::finish`] releases it.
pub struct Permit {
    pub(super) gate: Arc<Gate>,
    pub(super) group: String,
    pub slot: SlotRecord,
    pub(super) canary: bool,
    pub(super) last_ack: Arc<Mutex<Instant>>,
    pub(super) keeper: tokio::task::JoinHandle<()>,
}

impl Permit {
    /// Whether the slot's lease is surely still alive: the holder stops acting well before it
    /// could have run out (its last keep-alive answer is younger than half the TTL).
    pub fn valid(&self) -> bool {
        let ttl = self.gate.config.lease_ttl;
        self.last_ack.lock().is_ok_and(|t| t.elapsed() < ttl / 2)
    }

    /// Holds the slot through the settle period, then releases it. A success heals this
    /// host's failure report and closes the breaker when this host was its canary; a failure
    /// reopens it.
    pub async fn finish(self, ok: bool, summary: String) {
        tokio::time::sleep(self.gate.config.settle).await;
        let gate = &self.gate;
        if let Some(mut client) = gate.link.client() {
            if let Err(e) = self.settle(&mut client, ok, &summary).await {
                warn!(
                    "fleet: cannot release slot {}: {e}; its lease runs out by itself",
                    self.slot.key
                );
            }
        }
        self.keeper.abort();
        gate.metrics.set_slot_held(&self.group, false);
    }

    async fn settle(&self, client: &mut Client, ok: bool, summary: &str) -> Result<(), FleetError> {
        let gate = &self.gate;
        let group = &self.group;
        if ok {
            client
                .delete(
                    gate.keys.group(group, &format!("failing/{}", gate.host)),
                    None,
                )
                .await?;
        }
        if self.canary {
            let key = gate.keys.group(group, "breaker");
            if let Some(seen) = get(client, &key).await?
                && let Ok(doc) = serde_json::from_str::<BreakerDoc>(&seen.value)
                && doc.canary.as_deref() == Some(gate.host.as_str())
            {
                let next = breaker::after_canary(&doc, ok, unix_now());
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        seen.mod_revision,
                    )])
                    .and_then([TxnOp::put(key, serde_json::to_string(&next)?, None)]);
                client.txn(txn).await?;
                gate.metrics
                    .set_breaker(group, phase_gauge(Some(next.phase)));
                info!(
                    "fleet: group {group}: canary {}: breaker {:?}",
                    if ok { "succeeded" } else { "failed" },
                    next.phase
                );
            }
        }
        let recent = format!(
            "{{\"action\":{summary:?},\"ok\":{ok},\"at\":{}}}",
            unix_now()
        );
        client
            .put(
                gate.keys.group(group, &format!("recent/{}", gate.host)),
                recent,
                None,
            )
            .await?;
        let request = Request {
            keys: &gate.keys,
            group,
            host: &gate.host,
            budget: Share::Count(0),
            lease: self.slot.lease,
            note: "",
        };
        slots::release(client, &request).await
    }
}

pub(super) async fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl: Duration,
    last_ack: Arc<Mutex<Instant>>,
) {
    let Ok((mut keeper, mut acks)) = within(client.lease_keep_alive(lease)).await else {
        return;
    };
    loop {
        if within(keeper.keep_alive()).await.is_ok()
            && let Ok(Ok(Some(ack))) = tokio::time::timeout(ttl / 3, acks.message()).await
            && ack.ttl() > 0
            && let Ok(mut t) = last_ack.lock()
        {
            *t = Instant::now();
        }
        tokio::time::sleep(ttl / 4).await;
    }
}
