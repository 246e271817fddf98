//! This host in the fleet: one connection to etcd, a registration under `hosts/` and the
//! group memberships, all bound to one lease kept alive here. Each keep-alive is followed by
//! a linearizable read, so "connected" means "etcd answers with a quorum"; anything else
//! marks the link down, and the gate fails static until it is up again.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use etcd_client::{Client, PutOptions};
use log::{info, warn};
use serde::Serialize;
use tokio::{sync::watch, time::timeout};

use super::{
    FleetError,
    client::{REQUEST_TIMEOUT, connect},
    config::FleetConfig,
    keys::Keys,
};
use crate::report::metrics::fleet::FleetMetrics;

/// The shared connection state the gate reads.
#[derive(Default)]
pub struct Link {
    client: Mutex<Option<Client>>,
    connected: AtomicBool,
    host_lease: AtomicI64,
    /// How many times the link went down: each outage is alerted once.
    outages: AtomicU64,
}

impl Link {
    /// A client, only while etcd answers with a quorum.
    pub fn client(&self) -> Option<Client> {
        if !self.connected.load(Ordering::SeqCst) {
            return None;
        }
        self.client.lock().ok()?.clone()
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Counts the link's outages (the first, before any connection, is 0).
    pub fn outage(&self) -> u64 {
        self.outages.load(Ordering::SeqCst)
    }

    pub fn host_lease(&self) -> i64 {
        self.host_lease.load(Ordering::SeqCst)
    }

    fn set(&self, client: Option<Client>, lease: i64, fleet: &str, metrics: &FleetMetrics) {
        let up = client.is_some();
        if let Ok(mut slot) = self.client.lock() {
            *slot = client;
        }
        self.host_lease.store(lease, Ordering::SeqCst);
        if self.connected.swap(up, Ordering::SeqCst) && !up {
            self.outages.fetch_add(1, Ordering::SeqCst);
        }
        metrics.set_connected(fleet, up);
    }
}

/// What `hosts/<host>` holds.
#[derive(Serialize)]
struct Registration<'a> {
    zone: &'a str,
    groups: &'a [String],
    version: &'static str,
}

pub struct Registry {
    pub link: Arc<Link>,
    pub config: FleetConfig,
    pub host: String,
    pub keys: Keys,
    pub groups: Vec<String>,
    pub metrics: FleetMetrics,
}

impl Registry {
    /// Keeps the registration alive until shutdown, reconnecting after any failure.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut first = true;
        loop {
            let outcome = tokio::select! {
                _ = shutdown.changed() => return,
                outcome = self.session() => outcome,
            };
            if let Err(e) = outcome {
                // Alert once per outage: on the first failure, and again only after a recovery.
                let alert = first || self.link.connected();
                self.link.set(None, 0, &self.config.name, &self.metrics);
                if alert {
                    warn!(
                        "fleet: ALERT etcd unreachable or without quorum ({e}); failing static: \
                         disruptive actions are held, dead units are restarted under local limits"
                    );
                }
            }
            first = false;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn session(&self) -> Result<(), FleetError> {
        let ttl = self.config.lease_ttl.as_secs() as i64;
        let mut client = connect(&self.config).await?;
        let lease = within(client.lease_grant(ttl, None)).await?.id();
        let registration = serde_json::to_string(&Registration {
            zone: &self.config.zone,
            groups: &self.groups,
            version: env!("CARGO_PKG_VERSION"),
        })?;
        let bound = || Some(PutOptions::new().with_lease(lease));
        within(client.put(
            format!("{}{}", self.keys.hosts(), self.host),
            registration,
            bound(),
        ))
        .await?;
        for group in &self.groups {
            let key = self.keys.group(group, &format!("members/{}", self.host));
            within(client.put(key, "", bound())).await?;
        }
        let (mut keeper, mut acks) = within(client.lease_keep_alive(lease)).await?;
        self.link.set(
            Some(client.clone()),
            lease,
            &self.config.name,
            &self.metrics,
        );
        info!("fleet: registered as {} in {}", self.host, self.keys.root());
        loop {
            tokio::time::sleep(self.config.lease_ttl / 3).await;
            within(keeper.keep_alive()).await?;
            match timeout(REQUEST_TIMEOUT, acks.message()).await {
                Ok(Ok(Some(ack))) if ack.ttl() > 0 => {}
                Ok(Err(e)) => return Err(e.into()),
                _ => return Err(FleetError::LeaseLost),
            }
            within(client.get(self.keys.pause(), None)).await?;
            if !self.link.connected() {
                self.link.set(
                    Some(client.clone()),
                    lease,
                    &self.config.name,
                    &self.metrics,
                );
            }
        }
    }
}

/// Bounds an etcd call that has no deadline of its own (streams, lease calls).
pub async fn within<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, FleetError> {
    timeout(REQUEST_TIMEOUT, call)
        .await
        .map_err(|_| FleetError::Timeout)?
        .map_err(FleetError::from)
}
