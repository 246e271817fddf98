//! The Grafana dashboard against a real Prometheus scraping a running agent: after a scripted
//! crash and its healing, every panel's every query returns data, and the seed's two gauges at
//! the top say what happened: OK before, HEALING after one restart, CRITICAL after three in
//! five minutes.

use anyhow::Context as _;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};
use serde_json::Value;

use super::{
    WAIT, alerting, http_address, kill_main, restart_done, servers, wait_for_record_within,
    wait_watching, workload,
};

const UNIT: &str = "dashboarded.service";

/// Every (panel title, expr) of deploy/grafana-dashboard.json but the fleet row's, with Grafana's interval
/// variables given what Grafana would give them at a 1 s scrape interval.
fn panel_queries() -> anyhow::Result<Vec<(String, String)>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().context("no panels")? {
        let title = panel["title"].as_str().unwrap_or("?");
        // The fleet row's series exist only on agents in fleet mode (etcd), which this
        // single-host test does not run; tests/tests/fleet.rs covers those metrics.
        if title.starts_with("Fleet") {
            continue;
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m");
            queries.push((title.to_owned(), expr));
        }
    }
    Ok(queries)
}

#[test]
fn every_panel_has_data_and_the_status_goes_ok_healing_critical_as_crashes_repeat()
-> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("op-dashboard")?;
    sandbox.install_unit(UNIT, &service_unit("dashboarded", &workload("sleep"), &[]))?;
    sandbox.systemctl(&["start", UNIT])?;
    let config = format!(
        "[policy]\ncooldown = \"2s\"\n\n[[unit]]\nname = \"{UNIT}\"\nrestart = \"on-failure\"\n"
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_watching(&agent, UNIT)?;
    let address = http_address(&agent)?;

    let dir = sandbox.runtime_dir().join("prometheus");
    std::fs::create_dir_all(&dir)?;
    let prometheus = servers::Server::prometheus(
        &dir,
        servers::free_port()?,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: selfheal\n    static_configs:\n      - targets: [\"{address}\"]\n",
            alerting::rules_file()
        ),
    )?;
    prometheus.wait_for_query("selfheal_unit_healthy", "unit", &[(UNIT, 1.0)])?;
    let status = "Self-Healing Status";
    let queries = panel_queries()?;
    let status_expr = &queries
        .iter()
        .find(|(title, _)| title == status)
        .context("no Self-Healing Status panel")?
        .1;
    // Before the fault: all green.
    wait_for_value(&prometheus, status_expr, 0.0)?;

    // The scripted fault: a crash, restarted by the agent and verified healthy again.
    kill_main(&sandbox, UNIT, libc::SIGKILL)?;
    wait_for_record_within(&agent, UNIT, "action", "the restart", WAIT, restart_done)?;
    wait_for_record_within(&agent, UNIT, "decision", "the verification", WAIT, |r| {
        r["problem"] == "verified"
    })?;

    // One restart in the last 5 minutes: HEALING (orange), not CRITICAL.
    wait_for_value(&prometheus, status_expr, 1.0)?;
    let mut empty = Vec::new();
    Sandbox::wait_until("every panel's query to return data", WAIT, || {
        empty.clear();
        for (title, expr) in &queries {
            if prometheus.query(expr)?.is_empty() {
                empty.push(format!("{title}: {expr}"));
            }
        }
        Ok(empty.is_empty())
    })
    .with_context(|| format!("panels without data:\n{}", empty.join("\n")))?;
    // The stall history has a row for the unit, OK or HEALING, never CRITICAL after one crash.
    let history = &queries
        .iter()
        .find(|(title, _)| title == "Service Stall History (5m)")
        .context("no Service Stall History panel")?
        .1;
    let rows = prometheus.query(history)?;
    let row = rows
        .iter()
        .find(|(labels, _)| labels["unit"] == UNIT)
        .with_context(|| format!("no row for {UNIT}: {rows:?}"))?;
    assert!(row.1 < 2.0, "{UNIT} is CRITICAL after one crash: {rows:?}");

    // Two more crashes: three restarts in 5 minutes are "repeated restarts", CRITICAL (red).
    for done in 2..=3 {
        Sandbox::wait_until("the unit to run again", WAIT, || {
            Ok(sandbox.main_pid(UNIT).is_ok_and(|pid| pid != 0))
        })?;
        kill_main(&sandbox, UNIT, libc::SIGKILL)?;
        Sandbox::wait_until(&format!("restart number {done}"), WAIT, || {
            let records = agent.records(UNIT, "action")?;
            Ok(records.iter().filter(|r| restart_done(r)).count() >= done)
        })
        .with_context(|| format!("agent log:\n{}", agent.log_text()))?;
    }
    wait_for_value(&prometheus, status_expr, 2.0)?;
    Ok(())
}

#[test]
fn the_seed_gauges_show_ok_healing_critical_in_green_orange_red() -> anyhow::Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana-dashboard.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let panels = dashboard["panels"].as_array().context("no panels")?;
    for (index, title) in ["Self-Healing Status", "Service Stall History (5m)"]
        .iter()
        .enumerate()
    {
        // At the top, in the seed's order.
        let panel = &panels[index];
        assert_eq!(panel["title"], *title);
        assert_eq!(panel["gridPos"]["y"], 0, "{title} is not at the top");
        let states = &panel["fieldConfig"]["defaults"]["mappings"][0]["options"];
        for (value, text, colour) in [
            ("0", "OK", "green"),
            ("1", "HEALING", "orange"),
            ("2", "CRITICAL", "red"),
        ] {
            assert_eq!(states[value]["text"], text, "{title}: {states}");
            assert_eq!(states[value]["color"], colour, "{title}: {states}");
        }
    }
    Ok(())
}

/// Waits until `expr`, a single unlabelled value, equals `value`.
fn wait_for_value(prometheus: &servers::Server, expr: &str, value: f64) -> anyhow::Result<()> {
    let mut last = Vec::new();
    Sandbox::wait_until(&format!("{expr} to be {value}"), WAIT, || {
        last = prometheus.query(expr)?;
        Ok(matches!(last.as_slice(), [(_, v)] if *v == value))
    })
    .with_context(|| format!("last answer: {last:?}"))
}
