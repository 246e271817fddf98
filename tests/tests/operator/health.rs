//! `selfheal-agent status` (text and JSON) and `GET /health` for three units at once: one
//! healthy, one recovering from a crash (restarted, its restart not yet verified) and one the
//! agent escalated to an operator.

use anyhow::Context as _;
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};
use serde_json::Value;

use super::{
    TOKEN, WAIT, alert, http, http_address, kill_main, payload, restart_done, token_file,
    wait_for_record, wait_watching, workload,
};

const UNITS: [&str; 3] = ["calm.service", "crashy.service", "doomed.service"];

/// `/health`: its HTTP status and document.
fn health(address: &str) -> anyhow::Result<(u16, Value)> {
    let response = http::get(address, "/health")?;
    Ok((response.status, response.json()?))
}

/// The `/health` check of `name`: (status, detail).
fn check(report: &Value, name: &str) -> (String, String) {
    let check = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or_default();
    let text = |key: &str| check[key].as_str().unwrap_or_default().to_owned();
    (text("status"), text("detail"))
}

/// Waits until `/health` says `overall` and `ready` holds for its document, and returns it.
fn wait_health(
    agent: &Agent,
    address: &str,
    overall: &str,
    ready: impl Fn(&Value) -> bool,
) -> anyhow::Result<(u16, Value)> {
    let mut last = None;
    Sandbox::wait_until(&format!("/health to say {overall}"), WAIT, || {
        let (code, report) = health(address)?;
        let done = report["overall"] == overall && ready(&report);
        last = Some((code, report));
        Ok(done)
    })
    .with_context(|| format!("last /health: {last:#?}\nagent log:\n{}", agent.log_text()))?;
    Ok(last.expect("a report"))
}

fn status_text(agent: &Agent) -> anyhow::Result<String> {
    let out = agent.cli(&["status", "--socket", &agent.socket().to_string_lossy()])?;
    anyhow::ensure!(out.status.success(), "status failed: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every kernel hook attached: otherwise the agent is degraded whatever its units do.
fn hooks_attached(report: &Value) -> bool {
    report["checks"].as_array().is_some_and(|c| {
        c.iter()
            .filter(|c| c["kind"] == "kernel_hook")
            .all(|c| c["status"] == "healthy")
    })
}

#[test]
fn status_and_health_tell_healthy_recovering_and_escalated_units_apart() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("op-health")?;
    for unit in UNITS {
        let name = unit.trim_end_matches(".service");
        sandbox.install_unit(unit, &service_unit(name, &workload("sleep"), &[]))?;
    }
    sandbox.systemctl(&["start", UNITS[0], UNITS[1], UNITS[2]])?;
    let token = token_file(&sandbox)?;
    // A long cooldown keeps crashy's incident open (its restart unverified) for the test; the
    // operator's page kind escalates at once.
    let config = format!(
        "[policy]\ncooldown = \"10m\"\n\n[webhook]\ntoken_file = \"{}\"\n\n\
         [[unit]]\nname = \"calm.service\"\n\n\
         [[unit]]\nname = \"crashy.service\"\n\n\
         [[unit]]\nname = \"doomed.service\"\n\n\
         [unit.remediation.custom]\noperator_page = [\"escalate\"]\n",
        token.display()
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    for unit in UNITS {
        wait_watching(&agent, unit)?;
    }
    let address = http_address(&agent)?;

    // All well.
    let (_, report) = health(&address)?;
    anyhow::ensure!(
        hooks_attached(&report),
        "a kernel hook is missing here: {report:#}"
    );
    let (code, report) = wait_health(&agent, &address, "healthy", |_| true)?;
    assert_eq!(code, 200, "{report:#}");
    for unit in UNITS {
        assert_eq!(
            check(&report, unit),
            ("healthy".into(), "active".into()),
            "{report:#}"
        );
    }
    assert_eq!(report["active_recoveries"], 0, "{report:#}");
    assert_eq!(report["circuit_breakers"]["closed"], 3, "{report:#}");
    let text = status_text(&agent)?;
    for unit in UNITS {
        assert!(
            text.contains(&format!("{unit}: active (running)")),
            "{text}"
        );
    }

    // crashy crashes and is restarted: active again, but the incident stays open until the
    // restart is verified.
    kill_main(&sandbox, "crashy.service", libc::SIGKILL)?;
    wait_for_record(
        &agent,
        "crashy.service",
        "action",
        "crashy's restart",
        restart_done,
    )?;
    let (code, report) = wait_health(&agent, &address, "degraded", |r| {
        check(r, "crashy.service").1.starts_with("active;")
    })?;
    assert_eq!(code, 200, "degraded still serves: {report:#}");
    let (status, detail) = check(&report, "crashy.service");
    assert_eq!(status, "degraded", "{report:#}");
    assert!(
        detail.starts_with("active;") && detail.contains("crash"),
        "{report:#}"
    );
    assert_eq!(check(&report, "calm.service").0, "healthy", "{report:#}");
    assert_eq!(check(&report, "doomed.service").0, "healthy", "{report:#}");
    let crashy = agent.unit("crashy.service")?;
    assert_eq!(crashy["view"]["policy"]["incident"], "crash", "{crashy:#}");
    assert_eq!(
        crashy["view"]["policy"]["escalated"],
        Value::Null,
        "{crashy:#}"
    );
    assert_eq!(crashy["restarts"], 1, "{crashy:#}");
    assert_eq!(
        agent.unit("calm.service")?["view"]["policy"]["incident"],
        Value::Null
    );
    let text = status_text(&agent)?;
    assert!(text.contains("crashy.service: active (running)"), "{text}");
    assert!(text.contains("restart done"), "{text}");

    // An operator's page for doomed escalates at once: the agent stops acting on it.
    let body = payload(vec![alert(
        "firing",
        "OperatorPage",
        "doomed.service",
        "operator_page",
        "fp-doomed",
    )]);
    let bearer = format!("Bearer {TOKEN}");
    let response = http::request(
        &address,
        "POST",
        "/selfheal/trigger",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )?;
    assert_eq!(response.status, 202, "{response:?}");
    wait_for_record(&agent, "doomed.service", "action", "the escalation", |r| {
        r["action"] == "escalate" && r["outcome"] == "done"
    })?;
    let (code, report) = wait_health(&agent, &address, "critical", |r| {
        check(r, "doomed.service").0 == "critical"
    })?;
    assert_eq!(
        code, 503,
        "critical answers 503 for load balancers: {report:#}"
    );
    let (_, escalated_detail) = check(&report, "doomed.service");
    assert!(escalated_detail.starts_with("escalated: "), "{report:#}");
    assert_eq!(check(&report, "crashy.service").0, "degraded", "{report:#}");
    assert_eq!(check(&report, "calm.service").0, "healthy", "{report:#}");
    let doomed = agent.unit("doomed.service")?;
    assert!(
        doomed["view"]["policy"]["escalated"].is_string(),
        "{doomed:#}"
    );
    assert_eq!(
        doomed["restarts"], 0,
        "escalating restarts nothing: {doomed:#}"
    );
    let json = agent.status()?;
    let escalated: Vec<&str> = json["units"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["view"]["policy"]["escalated"].is_string())
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(escalated, ["doomed.service"], "{json:#}");
    let text = status_text(&agent)?;
    assert!(text.contains("operator_page: escalate"), "{text}");
    // The process itself is untouched: it is the operator's now.
    assert!(text.contains("doomed.service: active (running)"), "{text}");

    // The operator takes it back: healthy again, the agent degraded only by crashy.
    let out = agent.cli(&[
        "reset",
        "doomed.service",
        "--socket",
        &agent.socket().to_string_lossy(),
    ])?;
    assert!(out.status.success(), "reset failed: {out:?}");
    let (code, report) = wait_health(&agent, &address, "degraded", |r| {
        check(r, "doomed.service").0 == "healthy"
    })?;
    assert_eq!(code, 200, "{report:#}");
    assert_eq!(check(&report, "doomed.service").0, "healthy", "{report:#}");
    assert_eq!(
        agent.unit("doomed.service")?["view"]["policy"]["escalated"],
        Value::Null
    );

    // Checked last, so everything above is verified even while this fails: the operator must
    // learn from /health what was escalated. The policy drops the incident (and its kind) when
    // it escalates, so /health says "a problem" instead.
    assert_eq!(
        escalated_detail, "escalated: operator_page needs an operator",
        "/health does not name the escalated problem"
    );
    Ok(())
}
