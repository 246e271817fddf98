use std::os::unix::fs::PermissionsExt as _;

use serde_json::json;

use super::*;

const TOKEN: &str = "s3cret-token";

fn webhook() -> (Webhook, mpsc::Receiver<AlertObservation>) {
    let (tx, rx) = mpsc::channel(16);
    let monitored: IsMonitored = Arc::new(|unit| unit == "web.service" || unit == "db.service");
    (
        Webhook::new(BearerToken::new(TOKEN), 65536, monitored, tx),
        rx,
    )
}

fn alert(status: &str, name: &str, unit: Option<&str>, fingerprint: &str) -> serde_json::Value {
    let mut labels = json!({ "alertname": name, "severity": "critical" });
    if let Some(unit) = unit {
        labels["unit"] = json!(unit);
    }
    json!({
        "status": status,
        "labels": labels,
        "annotations": { "summary": format!("{name} on {}", unit.unwrap_or("?")) },
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    })
}

/// Alertmanager's webhook body (version 4) around `alerts`.
fn payload(alerts: Vec<serde_json::Value>) -> Vec<u8> {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"ServiceStalled\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "selfheal_webhook",
        "groupLabels": { "alertname": "ServiceStalled" },
        "commonLabels": { "alertname": "ServiceStalled" },
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
    .to_string()
    .into_bytes()
}

fn sent(rx: &mut mpsc::Receiver<AlertObservation>) -> Vec<AlertObservation> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test]
async fn a_firing_alert_becomes_an_observation_for_its_unit() {
    let (webhook, mut rx) = webhook();
    let body = payload(vec![alert(
        "firing",
        "ServiceStalled",
        Some("web.service"),
        "f1",
    )]);
    let summary = webhook.accept(&body).await.expect("accepted");
    assert_eq!(summary.accepted.len(), 1);
    assert_eq!(
        sent(&mut rx),
        [AlertObservation {
            unit_name: "web.service".into(),
            kind: ProblemKind::Custom("ServiceStalled".into()),
            fingerprint: "f1".into(),
            firing: true,
            summary: "ServiceStalled on web.service".into(),
        }]
    );
}

#[tokio::test]
async fn a_repeated_firing_fingerprint_is_accepted_once() {
    let (webhook, mut rx) = webhook();
    let body = payload(vec![alert(
        "firing",
        "ServiceStalled",
        Some("web.service"),
        "f1",
    )]);
    webhook.accept(&body).await.expect("first");
    let again = webhook.accept(&body).await.expect("second");
    assert!(again.accepted.is_empty(), "{again:?}");
    assert_eq!(again.duplicated[0].fingerprint, "f1");
    assert_eq!(sent(&mut rx).len(), 1);
}

#[tokio::test]
async fn a_resolved_alert_sends_a_clear_and_lets_the_alert_fire_again() {
    let (webhook, mut rx) = webhook();
    let firing = payload(vec![alert(
        "firing",
        "ServiceStalled",
        Some("web.service"),
        "f1",
    )]);
    let resolved = payload(vec![alert(
        "resolved",
        "ServiceStalled",
        Some("web.service"),
        "f1",
    )]);
    webhook.accept(&firing).await.expect("firing");
    let summary = webhook.accept(&resolved).await.expect("resolved");
    assert_eq!(summary.cleared.len(), 1);
    let again = webhook.accept(&firing).await.expect("fires again");
    assert_eq!(again.accepted.len(), 1);
    let firing_flags: Vec<bool> = sent(&mut rx).iter().map(|o| o.firing).collect();
    assert_eq!(firing_flags, [true, false, true]);
}

#[tokio::test]
async fn an_unknown_unit_rejects_the_whole_request_and_changes_nothing() {
    let (webhook, mut rx) = webhook();
    let body = payload(vec![
        alert("firing", "ServiceStalled", Some("web.service"), "f1"),
        alert("firing", "ServiceStalled", Some("ghost.service"), "f2"),
    ]);
    let rejection = webhook.accept(&body).await.expect_err("unknown unit");
    assert_eq!(rejection.status, 422);
    assert!(
        rejection.reason.contains("\"ghost.service\""),
        "{}",
        rejection.reason
    );
    assert!(sent(&mut rx).is_empty());
    // f1 was not remembered as firing: alone, it is new.
    let alone = payload(vec![alert(
        "firing",
        "ServiceStalled",
        Some("web.service"),
        "f1",
    )]);
    assert_eq!(
        webhook.accept(&alone).await.expect("valid").accepted.len(),
        1
    );
}

#[tokio::test]
async fn an_alert_without_a_unit_label_is_unprocessable() {
    let (webhook, mut rx) = webhook();
    let body = payload(vec![alert("firing", "DiskFull", None, "f1")]);
    let rejection = webhook.accept(&body).await.expect_err("no unit");
    assert_eq!(rejection.status, 422);
    assert!(
        rejection.reason.contains("no \"unit\" label"),
        "{}",
        rejection.reason
    );
    assert!(sent(&mut rx).is_empty());
}

#[tokio::test]
async fn malformed_json_is_a_bad_request_that_says_what_is_wrong() {
    let (webhook, _rx) = webhook();
    let rejection = webhook
        .accept(b"{\"version\": \"4\", \"alerts\": [")
        .await
        .expect_err("bad");
    assert_eq!(rejection.status, 400);
    assert!(
        rejection
            .reason
            .starts_with("malformed Alertmanager payload: "),
        "{}",
        rejection.reason
    );
    let no_status = json!({"version": "4", "alerts": [{"labels": {}}]}).to_string();
    let rejection = webhook.accept(no_status.as_bytes()).await.expect_err("bad");
    assert!(
        rejection.reason.contains("missing field `status`"),
        "{}",
        rejection.reason
    );
}

#[tokio::test]
async fn another_payload_version_is_refused() {
    let (webhook, _rx) = webhook();
    let body = json!({"version": "5", "alerts": []}).to_string();
    let rejection = webhook.accept(body.as_bytes()).await.expect_err("version");
    assert_eq!(rejection.status, 400);
    assert!(rejection.reason.contains("\"5\""), "{}", rejection.reason);
}

#[tokio::test]
async fn a_kind_label_maps_the_alert_to_a_built_in_problem_kind() {
    let (webhook, mut rx) = webhook();
    let mut stalled = alert("firing", "ServiceStalled", Some("db.service"), "f1");
    stalled["labels"]["kind"] = json!("hung");
    webhook
        .accept(&payload(vec![stalled]))
        .await
        .expect("accepted");
    assert_eq!(
        sent(&mut rx)[0].kind,
        ProblemKind::Stall(crate::detect::StallKind::Hung)
    );
}

#[tokio::test]
async fn a_closed_engine_channel_is_service_unavailable() {
    let (webhook, rx) = webhook();
    drop(rx);
    let body = payload(vec![alert(
        "firing",
        "ServiceStalled",
        Some("web.service"),
        "f1",
    )]);
    assert_eq!(webhook.accept(&body).await.expect_err("closed").status, 503);
}

#[test]
fn only_the_exact_bearer_token_is_admitted() {
    let (webhook, _rx) = webhook();
    assert!(webhook.authorize(Some(b"Bearer s3cret-token")).is_ok());
    assert!(webhook.authorize(Some(b"bearer s3cret-token")).is_ok());
    let missing = webhook.authorize(None).expect_err("no header");
    assert_eq!(missing.status, 401);
    for wrong in [
        &b"Bearer s3cret-tokem"[..],
        b"Bearer s3cret-token2",
        b"Bearer s3cret",
        b"Bearer ",
        b"Basic s3cret-token",
        b"s3cret-token",
        b"",
    ] {
        let rejection = webhook.authorize(Some(wrong)).expect_err("wrong token");
        assert_eq!(rejection.status, 401, "{wrong:?}");
    }
}

#[test]
fn the_token_file_is_trimmed_and_must_not_be_world_readable() {
    let dir = std::env::temp_dir().join(format!("selfheal-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("webhook.token");
    std::fs::write(&path, "  s3cret-token\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let token = BearerToken::load(&path).expect("loads");
    assert!(token.admits(Some(b"Bearer s3cret-token")));
    assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let exposed = BearerToken::load(&path).expect_err("world-readable");
    assert!(exposed.to_string().contains("chmod 600"), "{exposed}");

    std::fs::write(&path, "\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(matches!(
        BearerToken::load(&path),
        Err(TokenError::Empty { .. })
    ));
    let missing = BearerToken::load(&dir.join("absent")).expect_err("missing");
    assert!(missing.to_string().contains("absent"), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_webhook_section_is_off_without_a_token_file_and_caps_bodies_at_64_kib() {
    let empty: WebhookConfig = toml::from_str("").expect("all keys have defaults");
    assert_eq!(empty.token_file, None);
    assert_eq!(empty.max_body, 65536);
    let set: WebhookConfig =
        toml::from_str("token_file = \"/etc/selfheal/webhook.token\"\nmax_body = 1024")
            .expect("valid");
    assert_eq!(
        set.token_file.as_deref(),
        Some(Path::new("/etc/selfheal/webhook.token"))
    );
    assert_eq!(set.max_body, 1024);
    assert!(toml::from_str::<WebhookConfig>("token = \"s3cret\"").is_err());
}
