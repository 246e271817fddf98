//! `POST /selfheal/trigger`: Alertmanager's webhook (payload version "4") in.
//!
//! Each alert names a unit in its `unit` label and becomes an [`AlertObservation`] for the
//! engine: a firing alert raises a problem whose kind is its `kind` label or else its alert
//! name (`ProblemKind::from_name`), a resolved one clears it. Alertmanager repeats firing
//! alerts on every group interval, so a fingerprint already firing is accepted but not raised
//! again. A request is taken whole or not at all: one bad alert rejects it and changes nothing.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use tokio::sync::mpsc;

use crate::detect::ProblemKind;

/// `[webhook]` in selfheal.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// File holding the bearer token Alertmanager sends; the webhook is off when unset. A
    /// file, never the config text or the command line, so the token stays out of `ps`,
    /// backups of the config and the journal.
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            token_file: None,
            max_body: 64 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the webhook token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the webhook token file {} is empty: write the token Alertmanager sends into it", path.display())]
    Empty { path: PathBuf },
    #[error("the webhook token file {} is accessible to every user (mode {mode:o}): `chmod 600` it", path.display())]
    Exposed { path: PathBuf, mode: u32 },
}

/// The secret Alertmanager must send as `Authorization: Bearer <token>`.
pub struct BearerToken(Vec<u8>);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// Reads the token from `path`; surrounding whitespace (a trailing newline) is not part
    /// of it. Refuses a file that other users may read.
    pub fn load(path: &Path) -> Result<BearerToken, TokenError> {
        let read = |source| TokenError::Read {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        if mode & 0o007 != 0 {
            return Err(TokenError::Exposed {
                path: path.to_owned(),
                mode: mode & 0o7777,
            });
        }
        let text = std::fs::read(path).map_err(read)?;
        let token = text.trim_ascii();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(BearerToken(token.to_vec()))
    }

    pub fn new(token: &str) -> BearerToken {
        BearerToken(token.as_bytes().to_vec())
    }

    /// Whether an `Authorization` header value carries this token. The comparison takes the
    /// same time wherever the first wrong byte is, so timing does not reveal the token.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((scheme, credentials)) = value.split_at_checked(7) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer ") && bool::from(credentials.ct_eq(&self.0))
    }
}

/// An alert turned into what the engine needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertObservation {
    pub unit_name: String,
    pub kind: ProblemKind,
    pub fingerprint: String,
    /// `false`: the alert resolved, clear the problem it raised.
    pub firing: bool,
    /// The alert's `summary` annotation, else its `description`, else its name.
    pub summary: String,
}

/// Whether the agent monitors a unit, asked of the engine.
pub type IsMonitored = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Why a request was refused: the HTTP status and a reason for the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
}

impl Rejection {
    fn new(status: u16, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
        }
    }
}

/// The 202 answer: what each alert of the request did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub accepted: Vec<AlertRef>,
    pub duplicated: Vec<AlertRef>,
    pub cleared: Vec<AlertRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRef {
    pub unit: String,
    pub kind: String,
    pub fingerprint: String,
}

#[derive(Deserialize)]
struct Payload {
    version: String,
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
struct Alert {
    status: AlertStatus,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    fingerprint: String,
}

#[derive(Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum AlertStatus {
    Firing,
    Resolved,
}

pub struct Webhook {
    token: BearerToken,
    max_body: usize,
    is_monitored: IsMonitored,
    observations: mpsc::Sender<AlertObservation>,
    /// Fingerprints of the alerts firing now, as far as this webhook was told.
    firing: Mutex<HashSet<String>>,
}

impl Webhook {
    pub fn new(
        token: BearerToken,
        max_body: usize,
        is_monitored: IsMonitored,
        observations: mpsc::Sender<AlertObservation>,
    ) -> Webhook {
        Webhook {
            token,
            max_body,
            is_monitored,
            observations,
            firing: Mutex::new(HashSet::new()),
        }
    }

    pub fn max_body(&self) -> usize {
        self.max_body
    }

    pub fn authorize(&self, authorization: Option<&[u8]>) -> Result<(), Rejection> {
        match (authorization, self.token.admits(authorization)) {
            (_, true) => Ok(()),
            (None, false) => Err(Rejection::new(
                401,
                "missing \"Authorization: Bearer\" header",
            )),
            (Some(_), false) => Err(Rejection::new(401, "wrong bearer token")),
        }
    }

    /// Takes an authorized request's body: validates every alert, then hands the new ones to
    /// the engine.
    pub async fn accept(&self, body: &[u8]) -> Result<Accepted, Rejection> {
        let payload: Payload = serde_json::from_slice(body)
            .map_err(|e| Rejection::new(400, format!("malformed Alertmanager payload: {e}")))?;
        if payload.version != "4" {
            return Err(Rejection::new(
                400,
                format!(
                    "unsupported payload version {:?}: expected Alertmanager's \"4\"",
                    payload.version
                ),
            ));
        }
        let alerts = payload
            .alerts
            .iter()
            .enumerate()
            .map(|(index, alert)| self.observation(index, alert))
            .collect::<Result<Vec<_>, _>>()?;

        let mut summary = Accepted::default();
        let mut to_send = Vec::new();
        {
            let mut firing = self.firing.lock().unwrap_or_else(|e| e.into_inner());
            for observation in alerts {
                let reference = AlertRef {
                    unit: observation.unit_name.clone(),
                    kind: observation.kind.name().to_owned(),
                    fingerprint: observation.fingerprint.clone(),
                };
                if !observation.firing {
                    firing.remove(&observation.fingerprint);
                    summary.cleared.push(reference);
                } else if firing.insert(observation.fingerprint.clone()) {
                    summary.accepted.push(reference);
                } else {
                    summary.duplicated.push(reference);
                    continue;
                }
                to_send.push(observation);
            }
        }
        for observation in to_send {
            if self.observations.send(observation).await.is_err() {
                return Err(Rejection::new(503, "the agent is shutting down"));
            }
        }
        Ok(summary)
    }

    fn observation(&self, index: usize, alert: &Alert) -> Result<AlertObservation, Rejection> {
        let unprocessable = |reason: String| Rejection::new(422, reason);
        let name = alert
            .labels
            .get("alertname")
            .ok_or_else(|| unprocessable(format!("alert {index} has no \"alertname\" label")))?;
        let unit = alert.labels.get("unit").ok_or_else(|| {
            unprocessable(format!(
                "alert {index} ({name}) has no \"unit\" label: add one naming the systemd unit \
                 to the alert rule"
            ))
        })?;
        if !(self.is_monitored)(unit) {
            return Err(unprocessable(format!(
                "alert {index} ({name}) names unit {unit:?}, which the agent does not monitor"
            )));
        }
        let kind = alert.labels.get("kind").unwrap_or(name);
        let fingerprint = if alert.fingerprint.is_empty() {
            // Not from Alertmanager, which always sends one: the label set is the identity.
            let labels: Vec<String> = alert
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.join(",")
        } else {
            alert.fingerprint.clone()
        };
        let summary = ["summary", "description"]
            .iter()
            .find_map(|key| alert.annotations.get(*key))
            .unwrap_or(name);
        Ok(AlertObservation {
            unit_name: unit.clone(),
            kind: ProblemKind::from_name(kind),
            fingerprint,
            firing: alert.status == AlertStatus::Firing,
            summary: summary.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
