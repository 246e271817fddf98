//! The whole alerting loop with the real servers: Prometheus scrapes the agent and evaluates
//! `deploy/selfhealing_rules.yml` plus a fast test alert; Alertmanager posts the alert to the
//! agent's webhook with the bearer token from a file; the agent heals the unit the alert
//! names, or escalates and pushes `SelfHealingEscalated` back to Alertmanager.

use std::path::Path;

use anyhow::Context as _;
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};
use serde_json::Value;

use super::{
    http, http_address, kill_main, restart_done,
    servers::{Server, free_port},
    token_file, wait_for_record, wait_for_record_within, wait_watching, workload,
};

/// Scrape, evaluation, Alertmanager's grouping and the webhook: seconds each, with slack for a
/// loaded machine.
const ALERT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Healed by the alert: only watched by the agent itself (restart = "never").
const HEALED: &str = "watched.service";
/// Escalated by the alert.
const DOOMED: &str = "doomed.service";
const KIND: &str = "unhealthy_alert";

pub fn rules_file() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/selfhealing_rules.yml"
    )
    .to_owned()
}

/// The test's own rule: fires as soon as either unit is unhealthy, naming the unit (from the
/// series) and the problem kind the agent's ladders know.
fn test_rules() -> String {
    format!(
        r#"groups:
  - name: selfheal-e2e
    rules:
      - alert: SelfhealTestAlert
        expr: selfheal_unit_healthy{{unit=~"{HEALED}|{DOOMED}"}} == 0
        for: 0s
        labels:
          kind: {KIND}
        annotations:
          summary: "{{{{ $labels.unit }}}} is unhealthy"
"#
    )
}

fn prometheus_config(agent: &str, alertmanager: &str, test_rules: &Path) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {deploy}
  - {test}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{alertmanager}"]
scrape_configs:
  - job_name: selfheal
    static_configs:
      - targets: ["{agent}"]
"#,
        deploy = rules_file(),
        test = test_rules.display(),
    )
}

/// Only the test alert goes to the agent: the escalation it pushes back stays in Alertmanager.
fn alertmanager_config(agent: &str, token: &Path) -> String {
    format!(
        r#"route:
  receiver: nobody
  group_by: [alertname, unit]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - receiver: selfheal
      matchers:
        - alertname = "SelfhealTestAlert"
receivers:
  - name: nobody
  - name: selfheal
    webhook_configs:
      - url: http://{agent}/selfheal/trigger
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token}
"#,
        token = token.display(),
    )
}

fn server_dir(sandbox: &Sandbox, name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = sandbox.runtime_dir().join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Everything that explains a timeout: the agent's log, Prometheus's alerts, Alertmanager's.
fn diagnosis(agent: &Agent, prometheus: &Server, alertmanager: &Server) -> String {
    let json = |server: &Server, path: &str| {
        server
            .get_json(path)
            .map_or_else(|e| format!("{e:#}"), |v| v.to_string())
    };
    format!(
        "Prometheus alerts: {}\nAlertmanager alerts: {}\nAlertmanager log:\n{}\nagent log:\n{}",
        json(prometheus, "/api/v1/alerts"),
        json(alertmanager, "/api/v2/alerts"),
        alertmanager.log_text(),
        agent.log_text()
    )
}

#[test]
fn prometheus_and_alertmanager_drive_the_agent_through_its_webhook() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("op-alerting")?;
    for unit in [HEALED, DOOMED] {
        let name = unit.trim_end_matches(".service");
        sandbox.install_unit(unit, &service_unit(name, &workload("sleep"), &[]))?;
    }
    sandbox.systemctl(&["start", HEALED, DOOMED])?;
    let token = token_file(&sandbox)?;
    let alertmanager_port = free_port()?;
    let config = format!(
        "[webhook]\ntoken_file = \"{}\"\n\n\
         [alertmanager]\nurl = \"http://127.0.0.1:{alertmanager_port}\"\n\n\
         [[unit]]\nname = \"{HEALED}\"\nrestart = \"never\"\n\n\
         [unit.remediation.custom]\n{KIND} = [\"restart\"]\n\n\
         [[unit]]\nname = \"{DOOMED}\"\nrestart = \"never\"\n\n\
         [unit.remediation.custom]\n{KIND} = [\"escalate\"]\n",
        token.display()
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_watching(&agent, HEALED)?;
    wait_watching(&agent, DOOMED)?;
    let address = http_address(&agent)?;
    // Healthy before Prometheus first looks, so the test alert fires only for the crashes.
    Sandbox::wait_until("both units to be reported healthy", super::WAIT, || {
        let text = http::get(&address, "/metrics")?.body;
        Ok([HEALED, DOOMED]
            .iter()
            .all(|u| http::sample(&text, "selfheal_unit_healthy", &[("unit", u)]) == Some(1.0)))
    })?;

    let am_dir = server_dir(&sandbox, "alertmanager")?;
    let alertmanager = Server::alertmanager(
        &am_dir,
        alertmanager_port,
        &alertmanager_config(&address, &token),
    )?;
    let prom_dir = server_dir(&sandbox, "prometheus")?;
    let test_rules_file = prom_dir.join("selfheal-e2e.rules.yml");
    std::fs::write(&test_rules_file, test_rules())?;
    let prometheus = Server::prometheus(
        &prom_dir,
        free_port()?,
        &prometheus_config(&address, &alertmanager.address, &test_rules_file),
    )?;

    // The shipped rules load and evaluate against the live agent.
    prometheus.wait_for_query(
        "selfheal_unit_healthy",
        "unit",
        &[(HEALED, 1.0), (DOOMED, 1.0)],
    )?;
    prometheus.wait_for_query(
        "selfhealing:service_health:ratio",
        "job",
        &[("selfheal", 1.0)],
    )?;
    let rules = prometheus.get_json("/api/v1/rules")?;
    let mut groups: Vec<&str> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str())
        .collect();
    groups.sort_unstable();
    assert_eq!(groups, ["selfheal-e2e", "selfhealing"], "{rules:#}");
    let broken: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter(|r| r["health"] != "ok" && r["health"] != "unknown")
        .collect();
    assert!(
        broken.is_empty(),
        "rules failing against the agent's series: {broken:#?}"
    );

    // Both crash; the agent itself only watches them. Prometheus sees them unhealthy, and
    // Alertmanager tells the agent.
    let healed_pid = kill_main(&sandbox, HEALED, libc::SIGKILL)?;
    kill_main(&sandbox, DOOMED, libc::SIGKILL)?;
    let crash = wait_for_record(&agent, HEALED, "decision", "the crash's decision", |r| {
        r["problem"] == "crash"
    })?;
    assert_eq!(crash["action"], "none", "{crash:#}");

    let waited = wait_for_record_within(
        &agent,
        HEALED,
        "action",
        "the restart the alert asked for",
        ALERT_WAIT,
        restart_done,
    );
    let waited = waited.with_context(|| diagnosis(&agent, &prometheus, &alertmanager));
    waited?;
    let decisions = agent.records(HEALED, "decision")?;
    let evidence = format!("Alertmanager: {HEALED} is unhealthy");
    assert!(
        decisions
            .iter()
            .any(|d| d["problem"] == KIND && d["evidence"] == evidence.as_str()),
        "the alert raised {KIND} with its summary as evidence: {decisions:#?}"
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["problem"] == KIND && d["action"] == "restart"),
        "{decisions:#?}"
    );
    assert_eq!(sandbox.property(HEALED, "ActiveState")?, "active");
    assert_ne!(sandbox.main_pid(HEALED)?, healed_pid);
    let audit = std::fs::read_to_string(sandbox.runtime_dir().join("actions.jsonl"))?;
    assert!(
        audit.lines().any(
            |l| l.contains(KIND) && l.contains(&format!("Alertmanager: {HEALED} is unhealthy"))
        ),
        "the audit log keeps the alert as evidence:\n{audit}"
    );

    wait_for_record_within(
        &agent,
        DOOMED,
        "action",
        "the escalation the alert led to",
        ALERT_WAIT,
        |r| r["action"] == "escalate" && r["outcome"] == "done",
    )
    .with_context(|| diagnosis(&agent, &prometheus, &alertmanager))?;
    assert_eq!(
        sandbox.property(DOOMED, "ActiveState")?,
        "failed",
        "escalating touches nothing"
    );
    // The escalation comes back to Alertmanager for people.
    let mut escalations = Vec::new();
    Sandbox::wait_until(
        "Alertmanager to hold SelfHealingEscalated",
        super::WAIT,
        || {
            let alerts = alertmanager.get_json("/api/v2/alerts")?;
            escalations = alerts
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["labels"]["alertname"] == "SelfHealingEscalated")
                .cloned()
                .collect();
            Ok(!escalations.is_empty())
        },
    )
    .with_context(|| diagnosis(&agent, &prometheus, &alertmanager))?;
    assert_eq!(escalations.len(), 1, "{escalations:#?}");
    assert_eq!(escalations[0]["labels"]["unit"], DOOMED, "{escalations:#?}");
    assert_eq!(escalations[0]["labels"]["kind"], KIND, "{escalations:#?}");
    Ok(())
}
