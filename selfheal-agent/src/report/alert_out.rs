//! Alerts out: when the agent gives up on a problem (escalation) it posts an alert to
//! Alertmanager's API v2, so who gets paged, and how, stays Alertmanager's job.
//!
//! The alert carries no `endsAt`: Alertmanager resolves it after its `resolve_timeout` unless
//! the agent pushes it again, and pushing the same labels again only refreshes it.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, Uri, body::Bytes, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::detect::ProblemKind;

/// `[alertmanager]` in selfheal.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerConfig {
    /// Base URL of Alertmanager (`http://host:9093`); escalations are not pushed when unset.
    pub url: Option<String>,
    /// How long one push may take, answer included.
    #[serde(deserialize_with = "crate::config::duration::deserialize")]
    pub timeout: Duration,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// The alert name Alertmanager routes on.
pub const ESCALATION_ALERT: &str = "SelfHealingEscalated";
const ALERTS_PATH: &str = "/api/v2/alerts";
/// Enough of an error answer to say what Alertmanager disliked.
const MAX_ERROR_BODY: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("[alertmanager] url {url:?} {reason}")]
    BadUrl { url: String, reason: String },
    #[error("pushing the alert to {endpoint} timed out after {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("pushing the alert to {endpoint} failed: {detail}")]
    Request { endpoint: String, detail: String },
    #[error("reading Alertmanager's answer from {endpoint} failed: {source}")]
    Answer {
        endpoint: String,
        source: hyper::Error,
    },
    #[error("Alertmanager at {endpoint} refused the alert with {status}: {body}")]
    Refused {
        endpoint: String,
        status: StatusCode,
        body: String,
    },
}

/// Pushes escalations to one Alertmanager.
pub struct AlertPusher {
    client: Client<HttpConnector, Full<Bytes>>,
    endpoint: Uri,
    timeout: Duration,
    /// The `instance` label: the same unit name on two hosts must stay two alerts.
    instance: String,
}

impl AlertPusher {
    /// `None` when `[alertmanager] url` is unset.
    pub fn from_config(config: &AlertmanagerConfig) -> Result<Option<AlertPusher>, AlertError> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let instance = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        AlertPusher::new(url, config.timeout, instance).map(Some)
    }

    pub fn new(url: &str, timeout: Duration, instance: String) -> Result<AlertPusher, AlertError> {
        Ok(AlertPusher {
            client: Client::builder(TokioExecutor::new()).build_http(),
            endpoint: alerts_endpoint(url)?,
            timeout,
            instance,
        })
    }

    /// Posts one `SelfHealingEscalated` alert for `unit`; `reason` says why the agent gave up.
    pub async fn push_escalation(
        &self,
        unit: &str,
        kind: &ProblemKind,
        reason: &str,
    ) -> Result<(), AlertError> {
        self.push(escalation_alerts(&self.instance, unit, kind, reason))
            .await
    }

    /// Posts `alerts` (API v2's JSON array) as they are.
    pub async fn push(&self, alerts: Value) -> Result<(), AlertError> {
        let body = alerts.to_string();
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a request from a valid URI and constant headers");
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| AlertError::Request {
                        endpoint: self.endpoint.to_string(),
                        detail: error_chain(&source),
                    })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|source| AlertError::Answer {
                    endpoint: self.endpoint.to_string(),
                    source,
                })?
                .to_bytes();
            if status.is_success() {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
            Err(AlertError::Refused {
                endpoint: self.endpoint.to_string(),
                status,
                body: text.trim().to_owned(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AlertError::Timeout {
                endpoint: self.endpoint.to_string(),
                timeout: self.timeout,
            })?
    }
}

/// "client error (Connect): tcp connect error: Connection refused": hyper's own message
/// alone does not say what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `{url}/api/v2/alerts`; only plain http (Alertmanager on this host or a TLS proxy's).
/// Config validation can call it to report a bad `[alertmanager] url` early.
pub fn alerts_endpoint(url: &str) -> Result<Uri, AlertError> {
    let bad = |reason: &str| AlertError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let base: Uri = url
        .parse()
        .map_err(|_| bad("is not a URL such as \"http://127.0.0.1:9093\""))?;
    match base.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "uses https, which the agent does not speak: use a local Alertmanager or a \
                 TLS-terminating proxy on http",
            ));
        }
        _ => return Err(bad("must start with http://")),
    }
    if base.authority().is_none() || base.query().is_some() {
        return Err(bad(
            "must be http://host:port with an optional path, and no query",
        ));
    }
    let path = base.path().trim_end_matches('/');
    format!(
        "http://{}{path}{ALERTS_PATH}",
        base.authority().expect("checked")
    )
    .parse()
    .map_err(|_| bad("does not make a valid alerts URL"))
}

/// The JSON array API v2 takes. No `startsAt`: Alertmanager sets it to the time it receives
/// the alert.
fn escalation_alerts(instance: &str, unit: &str, kind: &ProblemKind, reason: &str) -> Value {
    json!([{
        "labels": {
            "alertname": ESCALATION_ALERT,
            "instance": instance,
            "unit": unit,
            "kind": kind.name(),
            "severity": "critical",
        },
        "annotations": {
            "summary": format!("selfheal gave up healing {unit} ({}): an operator is needed", kind.name()),
            "description": reason,
        },
    }])
}

#[cfg(test)]
mod tests;
