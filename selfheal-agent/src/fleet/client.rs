//! Connecting to etcd, and the few reads every part shares.

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use super::{FleetError, config::FleetConfig};

/// Every request gives up after this: a host cut off from etcd must fail static quickly.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn connect(config: &FleetConfig) -> Result<Client, FleetError> {
    let mut options = ConnectOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(REQUEST_TIMEOUT)
        // Without a leader there is no quorum: fail instead of waiting for one.
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    if config.ca_file.is_some() || config.cert_file.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &config.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    let connecting = Client::connect(&config.endpoints, Some(options));
    tokio::time::timeout(REQUEST_TIMEOUT * 2, connecting)
        .await
        .map_err(|_| FleetError::Timeout)?
        .map_err(FleetError::from)
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, FleetError> {
    std::fs::read(path).map_err(|source| FleetError::Tls {
        path: path.to_owned(),
        source,
    })
}

/// One key-value pair as the fleet reads it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key without the prefix it was listed under.
    pub name: String,
    pub value: String,
    pub mod_revision: i64,
    pub lease: i64,
}

/// Every key under `prefix` (a linearizable read: it needs a quorum).
pub async fn list(client: &mut Client, prefix: &str) -> Result<Vec<Entry>, FleetError> {
    let response = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(response
        .kvs()
        .iter()
        .map(|kv| Entry {
            name: String::from_utf8_lossy(&kv.key()[prefix.len().min(kv.key().len())..])
                .into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        })
        .collect())
}

/// One key, if it exists.
pub async fn get(client: &mut Client, key: &str) -> Result<Option<Entry>, FleetError> {
    let response = client.get(key, None).await?;
    Ok(response.kvs().first().map(|kv| Entry {
        name: key.to_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }))
}
