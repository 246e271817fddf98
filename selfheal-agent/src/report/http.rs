//! The agent's HTTP server: `GET /metrics` (Prometheus), `GET /health` (JSON) and
//! `POST /selfheal/trigger` (Alertmanager's webhook, when configured).
//!
//! It listens on loopback unless told otherwise: metrics and health reveal which units run
//! here, and the webhook, though it needs a token, can make the agent act.

use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use log::{debug, warn};
use serde::Deserialize;
use tokio::{net::TcpListener, sync::watch};

use super::{
    health::{self, HealthInput, Overall},
    metrics::Metrics,
    webhook::{Accepted, Rejection, Webhook},
};

/// `[http]` in selfheal.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/health` and the webhook.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)),
        }
    }
}

/// A client gets this long to send its request head, and again its body: a slow or stalled
/// client must not hold a connection open for ever.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish once the agent shuts down.
const DRAIN: Duration = Duration::from_secs(2);

pub const METRICS_PATH: &str = "/metrics";
pub const HEALTH_PATH: &str = "/health";
pub const TRIGGER_PATH: &str = "/selfheal/trigger";

/// The engine's facts for `/health`, taken when it is asked.
pub type HealthSource = Arc<dyn Fn() -> HealthInput + Send + Sync>;

/// Everything the handlers need.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: HealthSource,
    /// `None` when `[webhook] token_file` is unset: the trigger answers 404.
    pub webhook: Option<Arc<Webhook>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for /metrics and /health: {source}; change [http] listen")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

pub async fn bind(config: &HttpConfig) -> Result<TcpListener, BindError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| BindError {
            addr: config.listen,
            source,
        })
}

/// Serves until `shutdown` turns true, then gives open connections [`DRAIN`] to finish.
pub async fn serve(listener: TcpListener, state: HttpState, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT);
    loop {
        let stream = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of fds, say: back off instead of spinning on the error.
                    warn!("http: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(request, &state).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!("http: connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("http: connections still open after {DRAIN:?}; dropping them");
    }
}

async fn route(request: Request<Incoming>, state: &HttpState) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let allowed = match path {
        METRICS_PATH | HEALTH_PATH => &Method::GET,
        TRIGGER_PATH => &Method::POST,
        _ => return error(StatusCode::NOT_FOUND, &format!("no such path: {path}")),
    };
    if request.method() != allowed {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} takes {allowed}"),
        );
        let allow = header::HeaderValue::from_str(allowed.as_str()).expect("a method name");
        response.headers_mut().insert(header::ALLOW, allow);
        return response;
    }
    match path {
        METRICS_PATH => respond(
            StatusCode::OK,
            prometheus::TEXT_FORMAT,
            state.metrics.render(),
        ),
        HEALTH_PATH => {
            let report = health::assess(&(state.health)());
            let status = match report.overall {
                Overall::Healthy | Overall::Degraded => StatusCode::OK,
                // Load balancers and uptime checks read the status code, not the body.
                Overall::Critical => StatusCode::SERVICE_UNAVAILABLE,
            };
            json(status, &report)
        }
        _ => match trigger(request, state.webhook.as_deref()).await {
            Ok(accepted) => json(StatusCode::ACCEPTED, &accepted),
            Err(rejection) => {
                let status = StatusCode::from_u16(rejection.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = error(status, &rejection.reason);
                if status == StatusCode::UNAUTHORIZED {
                    let challenge = header::HeaderValue::from_static("Bearer");
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, challenge);
                }
                response
            }
        },
    }
}

/// The webhook, checked in order: configured (404), token (401), size (413), then the body.
async fn trigger(
    request: Request<Incoming>,
    webhook: Option<&Webhook>,
) -> Result<Accepted, Rejection> {
    let Some(webhook) = webhook else {
        return Err(Rejection {
            status: 404,
            reason: "the webhook is off: set [webhook] token_file to turn it on".to_owned(),
        });
    };
    let authorization = request.headers().get(header::AUTHORIZATION);
    webhook.authorize(authorization.map(|v| v.as_bytes()))?;
    let limit = webhook.max_body();
    let too_large = || Rejection {
        status: 413,
        reason: format!("the body is larger than {limit} bytes ([webhook] max_body)"),
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), limit).collect();
    let body = match tokio::time::timeout(READ_TIMEOUT, body).await {
        Err(_) => {
            return Err(Rejection {
                status: 408,
                reason: format!("the body did not arrive within {READ_TIMEOUT:?}"),
            });
        }
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(Rejection {
                status: 400,
                reason: format!("cannot read the body: {e}"),
            });
        }
        Ok(Ok(body)) => body.to_bytes(),
    };
    webhook.accept(&body).await
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(value) {
        Ok(text) => respond(status, "application/json", text),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}"),
        ),
    }
}

/// `{"error": reason}` with `status`.
fn error(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": reason }).to_string();
    respond(status, "application/json", body)
}

#[cfg(test)]
mod tests;
