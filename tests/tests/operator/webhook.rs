//! `POST /selfheal/trigger` on a running agent: every request it must refuse is refused with
//! the right status and a reason, and changes nothing; a repeated firing alert acts once.

use std::io::Write as _;

use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};
use serde_json::{Value, json};

use super::{
    TOKEN, alert, http, http_address, payload, restart_done, token_file, wait_for_record,
    wait_watching, workload,
};

/// Small, so an oversized body is cheap to send.
const MAX_BODY: usize = 1024;
const TRIGGER: &str = "/selfheal/trigger";

fn post(address: &str, authorization: Option<&str>, body: &str) -> anyhow::Result<http::Response> {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(value) = authorization {
        headers.push(("Authorization", value));
    }
    http::request(address, "POST", TRIGGER, &headers, body.as_bytes())
}

fn firing_web(fingerprint: &str) -> Value {
    alert(
        "firing",
        "WebhookTest",
        "web.service",
        "webhook_test",
        fingerprint,
    )
}

/// Names in one list of the 202 answer ("accepted", "duplicated", "cleared").
fn listed(answer: &Value, list: &str) -> Vec<String> {
    answer[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{} {} {}",
                a["unit"].as_str().unwrap_or("?"),
                a["kind"].as_str().unwrap_or("?"),
                a["fingerprint"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// A body larger than [`MAX_BODY`] sent in chunks, without a `Content-Length` to refuse it by:
/// the agent must stop reading at the limit.
fn post_chunked_oversized(address: &str, bearer: &str) -> anyhow::Result<http::Response> {
    let mut stream = http::connect(address)?;
    write!(
        stream,
        "POST {TRIGGER} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Authorization: {bearer}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let chunk = "x".repeat(MAX_BODY);
    for _ in 0..2 {
        write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len())?;
    }
    // No last chunk: the answer must come from the limit, not from the end of the body.
    http::read_response(&mut stream)
}

#[test]
fn the_webhook_refuses_bad_requests_changing_nothing_and_acts_once_per_firing_alert()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("op-webhook")?;
    sandbox.install_unit("web.service", &service_unit("web", &workload("sleep"), &[]))?;
    sandbox.systemctl(&["start", "web.service"])?;
    let token = token_file(&sandbox)?;
    let config = format!(
        "[webhook]\ntoken_file = \"{}\"\nmax_body = {MAX_BODY}\n\n\
         [[unit]]\nname = \"web.service\"\n\n\
         [unit.remediation.custom]\nwebhook_test = [\"restart\"]\n",
        token.display()
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_watching(&agent, "web.service")?;
    let address = http_address(&agent)?;
    let bearer = format!("Bearer {TOKEN}");
    let good = payload(vec![firing_web("fp-web")]);

    let response = post(&address, None, &good)?;
    assert_eq!(response.status, 401, "no token: {response:?}");
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer"),
        "{response:?}"
    );
    assert!(response.error().contains("missing"), "{response:?}");
    let response = post(&address, Some("Bearer not-the-token"), &good)?;
    assert_eq!(response.status, 401, "wrong token: {response:?}");
    assert_eq!(response.error(), "wrong bearer token", "{response:?}");
    let response = post(&address, Some(&format!("Basic {TOKEN}")), &good)?;
    assert_eq!(response.status, 401, "not a bearer token: {response:?}");

    let response = post(
        &address,
        Some(&bearer),
        "{\"version\": \"4\", \"alerts\": [",
    )?;
    assert_eq!(response.status, 400, "truncated JSON: {response:?}");
    assert!(
        response
            .error()
            .starts_with("malformed Alertmanager payload: "),
        "{response:?}"
    );
    let response = post(
        &address,
        Some(&bearer),
        &good.replace("\"version\":\"4\"", "\"version\":\"3\""),
    )?;
    assert_eq!(response.status, 400, "payload version 3: {response:?}");
    assert!(
        response
            .error()
            .contains("unsupported payload version \"3\""),
        "{response:?}"
    );

    let mut padded = firing_web("fp-web");
    padded["annotations"]["description"] = json!("x".repeat(MAX_BODY));
    let response = post(&address, Some(&bearer), &payload(vec![padded]))?;
    assert_eq!(response.status, 413, "oversized body: {response:?}");
    assert!(
        response
            .error()
            .contains(&format!("larger than {MAX_BODY} bytes")),
        "{response:?}"
    );
    let response = post_chunked_oversized(&address, &bearer)?;
    assert_eq!(response.status, 413, "oversized chunked body: {response:?}");

    // One alert for a unit the agent does not monitor rejects the whole request, the good
    // alert beside it included.
    let ghost = alert(
        "firing",
        "WebhookTest",
        "ghost.service",
        "webhook_test",
        "fp-ghost",
    );
    let response = post(
        &address,
        Some(&bearer),
        &payload(vec![firing_web("fp-web"), ghost]),
    )?;
    assert_eq!(response.status, 422, "unknown unit: {response:?}");
    assert!(
        response.error().contains("\"ghost.service\""),
        "{response:?}"
    );
    let mut unlabelled = firing_web("fp-nolabel");
    unlabelled["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("unit");
    let response = post(&address, Some(&bearer), &payload(vec![unlabelled]))?;
    assert_eq!(response.status, 422, "no unit label: {response:?}");
    assert!(
        response.error().contains("no \"unit\" label"),
        "{response:?}"
    );
    let response = http::get(&address, TRIGGER)?;
    assert_eq!(response.status, 405, "{response:?}");
    assert_eq!(response.header("allow"), Some("POST"), "{response:?}");

    // The good alert is new: none of the refused requests registered its fingerprint.
    let response = post(&address, Some(&bearer), &good)?;
    assert_eq!(response.status, 202, "{response:?}");
    let answer = response.json()?;
    assert_eq!(
        listed(&answer, "accepted"),
        ["web.service webhook_test fp-web"],
        "{answer:#}"
    );
    assert!(listed(&answer, "duplicated").is_empty(), "{answer:#}");
    wait_for_record(
        &agent,
        "web.service",
        "action",
        "the alert's restart",
        restart_done,
    )?;

    // Alertmanager repeats a firing alert every group interval: taken, not acted on again.
    let response = post(&address, Some(&bearer), &good)?;
    assert_eq!(response.status, 202, "{response:?}");
    let answer = response.json()?;
    assert!(listed(&answer, "accepted").is_empty(), "{answer:#}");
    assert_eq!(
        listed(&answer, "duplicated"),
        ["web.service webhook_test fp-web"],
        "{answer:#}"
    );

    // Resolved: the problem is cleared. The engine takes alerts in order, so once this shows,
    // anything the requests above had raised would show too.
    let mut resolved = firing_web("fp-web");
    resolved["status"] = json!("resolved");
    let response = post(&address, Some(&bearer), &payload(vec![resolved]))?;
    assert_eq!(response.status, 202, "{response:?}");
    assert_eq!(
        listed(&response.json()?, "cleared"),
        ["web.service webhook_test fp-web"]
    );
    wait_for_record(&agent, "web.service", "unit", "the alert's clearing", |r| {
        r["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("webhook_test cleared: Alertmanager"))
    })?;

    // The alert's decision (with the alert as evidence) schedules the restart after the
    // backoff; the scheduled one carries it out.
    let decisions = agent.records("web.service", "decision")?;
    let from_alerts: Vec<&Value> = decisions
        .iter()
        .filter(|d| {
            d["evidence"]
                .as_str()
                .is_some_and(|e| e.starts_with("Alertmanager:"))
        })
        .collect();
    assert_eq!(
        from_alerts.len(),
        1,
        "one problem raised in all: {decisions:#?}"
    );
    assert_eq!(from_alerts[0]["problem"], "webhook_test", "{decisions:#?}");
    assert_eq!(
        from_alerts[0]["evidence"], "Alertmanager: WebhookTest on web.service",
        "{decisions:#?}"
    );
    let restarts_decided = decisions
        .iter()
        .filter(|d| d["action"] == "restart")
        .count();
    assert_eq!(restarts_decided, 1, "one restart decided: {decisions:#?}");
    let restarts = agent.records("web.service", "action")?;
    assert_eq!(restarts.len(), 1, "one action in all: {restarts:#?}");
    let audit = std::fs::read_to_string(sandbox.runtime_dir().join("actions.jsonl"))?;
    let audited: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("Alertmanager: WebhookTest on web.service"))
        .collect();
    assert_eq!(audited.len(), 1, "one alert audited: {audit}");
    assert!(
        audited[0].contains("\"problem\":\"webhook_test\""),
        "{audit}"
    );
    Ok(())
}
