use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::oneshot,
};

use super::*;
use crate::detect::StallKind;

/// What the fake Alertmanager saw of one request.
struct Captured {
    head: String,
    body: Value,
}

/// A one-request HTTP server on loopback that answers `answer` (a whole HTTP response), or
/// never answers when it is `None`. Returns its base URL and the captured request.
async fn fake_alertmanager(answer: Option<&'static str>) -> (String, oneshot::Receiver<Captured>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        let (head, body) = loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the client closed before sending its request");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            if body.len() >= length {
                break (head.to_owned(), body.to_owned());
            }
        };
        let body = serde_json::from_str(&body).expect("the alert is JSON");
        let _ = tx.send(Captured { head, body });
        match answer {
            Some(answer) => stream.write_all(answer.as_bytes()).await.expect("answer"),
            None => std::future::pending().await,
        }
    });
    (url, rx)
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

fn pusher(url: &str, timeout: Duration) -> AlertPusher {
    AlertPusher::new(url, timeout, "host-a".to_owned()).expect("valid url")
}

#[tokio::test]
async fn an_escalation_is_posted_to_the_v2_alerts_api_with_its_labels() {
    let (url, captured) = fake_alertmanager(Some(OK)).await;
    let kind = ProblemKind::Stall(StallKind::Hung);
    pusher(&url, Duration::from_secs(5))
        .push_escalation("web.service", &kind, "3 restarts did not help")
        .await
        .expect("pushed");
    let Captured { head, body } = captured.await.expect("a request");
    assert!(
        head.starts_with("POST /api/v2/alerts HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let alerts = body.as_array().expect("an array of alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        alerts[0]["labels"],
        json!({
            "alertname": "SelfHealingEscalated",
            "instance": "host-a",
            "unit": "web.service",
            "kind": "hung",
            "severity": "critical",
        })
    );
    assert_eq!(
        alerts[0]["annotations"]["description"],
        "3 restarts did not help"
    );
    assert!(
        alerts[0]["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("web.service")),
        "{body:#}"
    );
}

#[tokio::test]
async fn a_refusal_reports_alertmanagers_status_and_reason() {
    let answer = "HTTP/1.1 400 Bad Request\r\ncontent-length: 17\r\nconnection: close\r\n\r\nbad label unit=x\n";
    let (url, _captured) = fake_alertmanager(Some(answer)).await;
    let error = pusher(&url, Duration::from_secs(5))
        .push_escalation("web.service", &ProblemKind::Crash, "gave up")
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, AlertError::Refused { status, body, .. }
            if *status == StatusCode::BAD_REQUEST && body == "bad label unit=x"),
        "{error}"
    );
}

#[tokio::test]
async fn a_silent_alertmanager_times_out() {
    let (url, _captured) = fake_alertmanager(None).await;
    let started = std::time::Instant::now();
    let error = pusher(&url, Duration::from_millis(200))
        .push_escalation("web.service", &ProblemKind::Crash, "gave up")
        .await
        .expect_err("no answer");
    assert!(matches!(error, AlertError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn nobody_listening_is_a_request_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let error = pusher(&url, Duration::from_secs(5))
        .push_escalation("web.service", &ProblemKind::Crash, "gave up")
        .await
        .expect_err("refused connection");
    assert!(matches!(error, AlertError::Request { .. }), "{error}");
    assert!(error.to_string().contains("Connection refused"), "{error}");
}

#[test]
fn the_endpoint_keeps_a_path_prefix_and_drops_a_trailing_slash() {
    let endpoint = |url| alerts_endpoint(url).expect("valid").to_string();
    assert_eq!(
        endpoint("http://127.0.0.1:9093"),
        "http://127.0.0.1:9093/api/v2/alerts"
    );
    assert_eq!(
        endpoint("http://am.local:9093/alertmanager/"),
        "http://am.local:9093/alertmanager/api/v2/alerts"
    );
}

#[test]
fn urls_the_agent_cannot_use_are_refused_with_the_reason() {
    for (url, reason) in [
        ("https://am:9093", "https"),
        ("am:9093", "http://"),
        ("ftp://am", "http://"),
        ("http://am:9093/?x=1", "no query"),
        ("not a url", "not a URL"),
    ] {
        let error = alerts_endpoint(url).expect_err(url).to_string();
        assert!(error.contains(reason), "{url}: {error}");
    }
}

#[test]
fn no_url_means_no_pusher() {
    let pusher = AlertPusher::from_config(&AlertmanagerConfig::default()).expect("valid");
    assert!(pusher.is_none());
}

#[test]
fn the_alertmanager_section_is_off_without_a_url_and_takes_a_duration() {
    let empty: AlertmanagerConfig = toml::from_str("").expect("all keys have defaults");
    assert_eq!(empty, AlertmanagerConfig::default());
    assert_eq!(empty.timeout, Duration::from_secs(5));
    let set: AlertmanagerConfig =
        toml::from_str("url = \"http://127.0.0.1:9093\"\ntimeout = \"1500ms\"").expect("valid");
    assert_eq!(set.url.as_deref(), Some("http://127.0.0.1:9093"));
    assert_eq!(set.timeout, Duration::from_millis(1500));
    assert!(toml::from_str::<AlertmanagerConfig>("timeout = \"soon\"").is_err());
    assert!(toml::from_str::<AlertmanagerConfig>("uri = \"http://am\"").is_err());
}
