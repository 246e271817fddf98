//! The server end to end: a real listener on loopback and a raw HTTP/1.1 client.

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};

use super::*;
use crate::report::{
    health::UnitHealth,
    metrics::CircuitState,
    webhook::{AlertObservation, BearerToken, IsMonitored},
};

const TOKEN: &str = "s3cret-token";
const MAX_BODY: usize = 2048;

struct Server {
    addr: SocketAddr,
    alerts: mpsc::Receiver<AlertObservation>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

async fn start(webhook_on: bool, active_state: &'static str) -> Server {
    let metrics = Arc::new(Metrics::new());
    metrics.watch_unit("web.service");
    let (tx, alerts) = mpsc::channel(16);
    let monitored: IsMonitored = Arc::new(|unit| unit == "web.service");
    let webhook = Webhook::new(BearerToken::new(TOKEN), MAX_BODY, monitored, tx);
    let health: HealthSource = Arc::new(move || HealthInput {
        units: vec![UnitHealth {
            name: "web.service".into(),
            active_state: active_state.into(),
            problem: None,
            escalated: false,
            circuit: CircuitState::Closed,
            recovering: false,
        }],
        hooks: vec![],
        blind: Vec::new(),
        uptime: Duration::from_secs(7),
    });
    let state = HttpState {
        metrics,
        health,
        webhook: webhook_on.then(|| Arc::new(webhook)),
    };
    let config = HttpConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
    };
    let listener = bind(&config).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(serve(listener, state, shutdown));
    Server {
        addr,
        alerts,
        stop,
        task,
    }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `raw` (a whole request) and reads the answer until the server closes.
async fn send(addr: SocketAddr, raw: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let read = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answers in time");
    // A server that answers before reading the whole body (413) may reset the connection
    // once it closes; what it sent before is still in `answer`.
    if let Err(e) = read {
        assert!(!answer.is_empty(), "no answer: {e}");
    }
    let text = String::from_utf8(answer).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().expect("a status code");
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    send(addr, request.as_bytes()).await
}

async fn post(addr: SocketAddr, authorization: Option<&str>, body: &[u8]) -> Answer {
    let mut request = format!(
        "POST /selfheal/trigger HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(value) = authorization {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut raw = request.into_bytes();
    raw.extend_from_slice(body);
    send(addr, &raw).await
}

const BEARER: Option<&str> = Some("Bearer s3cret-token");

fn stalled(status: &str, unit: &str) -> Vec<u8> {
    json!({
        "version": "4", "status": status, "receiver": "selfheal_webhook",
        "groupLabels": {}, "commonLabels": {}, "externalURL": "http://am:9093", "groupKey": "{}",
        "alerts": [{
            "status": status,
            "labels": { "alertname": "ServiceStalled", "unit": unit },
            "annotations": {}, "startsAt": "2024-05-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "abc123",
        }],
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format() {
    let server = start(true, "active").await;
    let answer = get(server.addr, "/metrics").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some(prometheus::TEXT_FORMAT));
    assert!(
        answer
            .body
            .contains("selfhealing_restarts_total{unit=\"web.service\"} 0"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn health_is_json_and_ok_while_not_critical() {
    let server = start(true, "active").await;
    let answer = get(server.addr, "/health").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let health = answer.json();
    assert_eq!(health["overall"], "healthy");
    assert_eq!(health["checks"][0]["name"], "web.service");
    assert_eq!(health["uptime_seconds"], 7);
}

#[tokio::test]
async fn critical_health_answers_503() {
    let server = start(true, "failed").await;
    let answer = get(server.addr, "/health").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["overall"], "critical");
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_refused() {
    let server = start(true, "active").await;
    assert_eq!(get(server.addr, "/nope").await.status, 404);
    let answer = get(server.addr, "/selfheal/trigger").await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.header("allow"), Some("POST"));
}

#[tokio::test]
async fn the_trigger_needs_the_bearer_token() {
    let server = start(true, "active").await;
    let body = stalled("firing", "web.service");
    let none = post(server.addr, None, &body).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = post(server.addr, Some("Bearer guess"), &body).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "wrong bearer token");
}

#[tokio::test]
async fn a_malformed_body_is_400_with_the_reason() {
    let server = start(true, "active").await;
    let answer = post(server.addr, BEARER, b"{not json").await;
    assert_eq!(answer.status, 400);
    let reason = answer.json()["error"]
        .as_str()
        .expect("a reason")
        .to_owned();
    assert!(
        reason.starts_with("malformed Alertmanager payload"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let server = start(true, "active").await;
    let big = vec![b' '; MAX_BODY + 1];
    let answer = post(server.addr, BEARER, &big).await;
    assert_eq!(answer.status, 413);
    assert!(answer.body.contains("max_body"), "{}", answer.body);
}

#[tokio::test]
async fn an_oversized_chunked_body_is_413_too() {
    let server = start(true, "active").await;
    let chunk = vec![b' '; MAX_BODY + 1];
    let mut raw = format!(
        "POST /selfheal/trigger HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        chunk.len()
    )
    .into_bytes();
    raw.extend_from_slice(&chunk);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(send(server.addr, &raw).await.status, 413);
}

#[tokio::test]
async fn an_unknown_unit_is_422_and_reaches_no_one() {
    let mut server = start(true, "active").await;
    let answer = post(server.addr, BEARER, &stalled("firing", "ghost.service")).await;
    assert_eq!(answer.status, 422);
    assert!(answer.body.contains("ghost.service"), "{}", answer.body);
    assert!(server.alerts.try_recv().is_err());
}

#[tokio::test]
async fn a_duplicate_firing_alert_reaches_the_engine_once_and_resolved_clears_it() {
    let mut server = start(true, "active").await;
    let first = post(server.addr, BEARER, &stalled("firing", "web.service")).await;
    assert_eq!(first.status, 202);
    assert_eq!(first.json()["accepted"][0]["unit"], "web.service");
    let again = post(server.addr, BEARER, &stalled("firing", "web.service")).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["duplicated"][0]["fingerprint"], "abc123");
    let resolved = post(server.addr, BEARER, &stalled("resolved", "web.service")).await;
    assert_eq!(resolved.json()["cleared"][0]["kind"], "ServiceStalled");

    let raised = server.alerts.try_recv().expect("raised");
    assert!(raised.firing);
    let cleared = server.alerts.try_recv().expect("cleared");
    assert!(!cleared.firing);
    assert!(server.alerts.try_recv().is_err(), "the duplicate was sent");
}

#[tokio::test]
async fn without_a_token_file_the_trigger_is_off() {
    let server = start(false, "active").await;
    let answer = post(server.addr, BEARER, &stalled("firing", "web.service")).await;
    assert_eq!(answer.status, 404);
    assert!(answer.body.contains("token_file"), "{}", answer.body);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let server = start(true, "active").await;
    server.stop.send(true).expect("server listening");
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve returns after shutdown")
        .expect("no panic");
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[test]
fn the_http_section_defaults_to_loopback_and_rejects_unknown_keys() {
    let empty: HttpConfig = toml::from_str("").expect("all keys have defaults");
    assert_eq!(empty.listen, "127.0.0.1:9464".parse().expect("addr"));
    let set: HttpConfig = toml::from_str("listen = \"[::]:9100\"").expect("valid");
    assert_eq!(set.listen, "[::]:9100".parse().expect("addr"));
    let unknown = toml::from_str::<HttpConfig>("port = 9100").expect_err("unknown key");
    assert!(unknown.to_string().contains("port"), "{unknown}");
    assert!(toml::from_str::<HttpConfig>("listen = \"localhost\"").is_err());
}
