//! The files in `deploy/` agree with the agent and with the tools that read them: the
//! Prometheus rules pass `promtool` and fire as documented, the Grafana dashboard asks only for
//! series the agent exports, the agent's metrics pass `promtool check metrics`, the systemd unit
//! has the settings the agent needs, and the Alertmanager example passes `amtool`.
//!
//! Needs Debian's `prometheus` (promtool), `prometheus-alertmanager` (amtool) and `systemd`
//! (systemd-analyze); `cargo xtask setup` installs them. No root needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use selfheal_agent::{
    detect::{ProblemKind, StallKind},
    report::metrics::{CircuitState, FAMILIES, Metrics},
};
use serde_json::Value;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn read(file: &str) -> String {
    let path = deploy(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs `tool` with `args` (and `stdin`), failing the test with how to install it if missing.
fn run(tool: &str, package: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(tool);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install {package} ({tool}): `apt-get install {package}`, or `cargo xtask setup`")
    });
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait")
}

fn assert_clean(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch directory for this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("selfheal-deploy-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write scratch file");
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The values of every `key:` line in a YAML file (enough for our flat rule files).
fn yaml_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            line.strip_prefix(key)?.strip_prefix(':').map(str::trim)
        })
        .collect()
}

/// Metric names a PromQL expression uses: identifiers starting with "selfheal", outside
/// quoted strings.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    for token in unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if token.starts_with("selfheal") {
            names.insert(token.to_owned());
        }
    }
    names
}

/// Whether the agent exports `name`, counting a histogram's `_bucket`/`_sum`/`_count`.
fn exported(name: &str) -> bool {
    FAMILIES.iter().any(|family| {
        name == *family
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_prefix(family) == Some(suffix))
    })
}

fn recorded_names() -> BTreeSet<String> {
    yaml_values(&read("selfhealing_rules.yml"), "record")
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana-dashboard.json")).expect("the dashboard is JSON")
}

/// Every (panel title, expr) of the dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().map(move |t| {
                let expr = t["expr"].as_str().expect("a Prometheus target has expr");
                (title.clone(), expr.to_owned())
            })
        })
        .collect()
}

#[test]
fn the_rules_pass_promtool_check_rules() {
    let path = deploy("selfhealing_rules.yml");
    let out = run(
        "promtool",
        "prometheus",
        &["check", "rules", &path.to_string_lossy()],
        None,
    );
    assert_clean("promtool check rules", &out);
}

#[test]
fn the_rules_record_the_seed_names_from_the_agents_series() {
    let recorded = recorded_names();
    for name in [
        "selfhealing:service_health:ratio",
        "selfhealing:stall_duration:seconds",
    ] {
        assert!(
            recorded.contains(name),
            "{name} is not recorded: {recorded:?}"
        );
    }
    let rules = read("selfhealing_rules.yml");
    for expr in yaml_values(&rules, "expr") {
        for name in metric_names(expr) {
            assert!(
                exported(&name) || recorded.contains(&name),
                "the rules use {name}, which the agent does not export ({expr})"
            );
        }
    }
    let alerts = yaml_values(&rules, "alert");
    for alert in [
        "ServiceStalled",
        "SelfHealingExhausted",
        "ConsecutiveFailures",
    ] {
        assert!(alerts.contains(&alert), "no {alert} alert in {alerts:?}");
    }
}

/// `promtool test rules` input: the alerts fire when the seed says, with its labels.
const RULE_TESTS: &str = r#"
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'selfheal_stall_seconds{job="selfheal",instance="h:9464",unit="web.service",kind="hung"}'
        values: '0+60x10'
      - series: 'selfheal_stall_seconds{job="selfheal",instance="h:9464",unit="web.service",kind="spinning"}'
        values: '0x10'
      - series: 'selfheal_unit_healthy{job="selfheal",instance="h:9464",unit="web.service"}'
        values: '0x10'
      - series: 'selfheal_unit_healthy{job="selfheal",instance="h:9464",unit="db.service"}'
        values: '1x10'
      - series: 'selfhealing_restarts_total{job="selfheal",instance="h:9464",unit="web.service"}'
        values: '0+1x10'
      - series: 'selfhealing_restarts_total{job="selfheal",instance="h:9464",unit="db.service"}'
        values: '0 0 1 1 1 1 1 1 1 1 1'
      - series: 'selfhealing_consecutive_failures{job="selfheal",instance="h:9464",unit="web.service"}'
        values: '0 1 2 3 3 3 3 3 3 3 3'
    promql_expr_test:
      - expr: selfhealing:service_health:ratio
        eval_time: 1m
        exp_samples:
          - labels: 'selfhealing:service_health:ratio{job="selfheal",instance="h:9464"}'
            value: 0.5
      - expr: selfhealing:stall_duration:seconds
        eval_time: 3m
        exp_samples:
          - labels: 'selfhealing:stall_duration:seconds{job="selfheal",instance="h:9464",unit="web.service"}'
            value: 180
    alert_rule_test:
      - eval_time: 7m
        alertname: ServiceStalled
        exp_alerts: []
      - eval_time: 8m
        alertname: ServiceStalled
        exp_alerts:
          - exp_labels:
              severity: critical
              action: selfheal
              job: selfheal
              instance: "h:9464"
              unit: web.service
            exp_annotations:
              summary: "web.service has been stalled for 8m 0s"
              description: "web.service on h:9464 has made no progress for more than 5 minutes; selfheal is healing it."
      - eval_time: 10m
        alertname: SelfHealingExhausted
        exp_alerts:
          - exp_labels:
              severity: warning
              job: selfheal
              instance: "h:9464"
              unit: web.service
            exp_annotations:
              summary: "web.service was restarted more than 3 times in an hour"
              description: "selfheal restarted web.service on h:9464 10 times in the last hour; restarts are not fixing it."
      - eval_time: 2m
        alertname: ConsecutiveFailures
        exp_alerts: []
      - eval_time: 3m
        alertname: ConsecutiveFailures
        exp_alerts:
          - exp_labels:
              severity: critical
              job: selfheal
              instance: "h:9464"
              unit: web.service
            exp_annotations:
              summary: "3 healing actions on web.service failed in a row"
              description: "selfheal's last 3 actions on web.service on h:9464 failed; see `selfheal-agent status` on that host."
"#;

#[test]
fn the_alerts_fire_as_the_seed_documents() {
    let scratch = Scratch::new("rule-tests");
    let rules = deploy("selfhealing_rules.yml");
    let spec = format!("rule_files:\n  - {}\n{RULE_TESTS}", rules.display());
    let spec = scratch.write("rules_test.yml", &spec);
    let out = run("promtool", "prometheus", &["test", "rules", &spec], None);
    assert_clean("promtool test rules", &out);
}

#[test]
fn the_dashboard_asks_only_for_exported_series_and_recorded_rules() {
    let recorded = recorded_names();
    let queries = dashboard_queries();
    assert!(queries.len() >= 8, "too few queries: {queries:?}");
    for (title, expr) in queries {
        let names = metric_names(&expr);
        assert!(
            !names.is_empty(),
            "panel {title:?} uses no selfheal series: {expr}"
        );
        for name in names {
            assert!(
                exported(&name) || recorded.contains(&name),
                "panel {title:?} uses {name}, which the agent does not export: {expr}"
            );
        }
    }
}

#[test]
fn the_dashboard_queries_are_valid_promql() {
    // promtool has no PromQL checker of its own: each query becomes a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, (_, expr)) in dashboard_queries().iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m");
        let expr = serde_json::to_string(&expr).expect("quoted");
        rules.push_str(&format!(
            "      - record: dashboard:query_{index}\n        expr: {expr}\n"
        ));
    }
    let scratch = Scratch::new("dashboard-promql");
    let path = scratch.write("dashboard_rules.yml", &rules);
    let out = run("promtool", "prometheus", &["check", "rules", &path], None);
    assert_clean("promtool check rules on the dashboard's queries", &out);
}

#[test]
fn the_dashboard_keeps_the_seed_panels_where_the_seed_put_them() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    let panel = |title: &str| {
        panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"))
            .clone()
    };
    let status = panel("Self-Healing Status");
    assert_eq!(status["type"], "gauge");
    assert_eq!(
        (
            status["gridPos"]["x"].as_u64(),
            status["gridPos"]["y"].as_u64()
        ),
        (Some(0), Some(0))
    );
    let colors: Vec<&str> = status["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()
        .expect("threshold steps")
        .iter()
        .filter_map(|s| s["color"].as_str())
        .collect();
    assert_eq!(colors, ["green", "orange", "red"]);
    let stalls = panel("Service Stall History (5m)");
    assert_eq!(
        (
            stalls["gridPos"]["x"].as_u64(),
            stalls["gridPos"]["y"].as_u64()
        ),
        (Some(12), Some(0))
    );
    for title in [
        "Restarts by unit",
        "Actions by outcome",
        "Recovery duration p95",
        "Circuit breakers",
    ] {
        panel(title);
    }
}

#[test]
fn the_agents_metrics_pass_promtool_check_metrics() {
    let metrics = Metrics::new();
    let unit = "crypto-agent@BTC_USDT.service";
    metrics.watch_unit(unit);
    metrics.problem_detected(unit, &ProblemKind::Crash);
    metrics.problem_detected(unit, &ProblemKind::Custom("ServiceStalled".into()));
    metrics.action_finished(unit, "restart", "done");
    metrics.action_finished(unit, "restart", "failed");
    metrics.set_consecutive_failures(unit, 1);
    metrics.recovered(unit, Duration::from_millis(1500));
    metrics.escalated(unit, &ProblemKind::Stall(StallKind::Hung));
    metrics.set_circuit(unit, CircuitState::HalfOpen);
    metrics.set_quarantined(unit, true);
    metrics.set_unit_healthy(unit, false);
    metrics.set_stall(unit, StallKind::Hung, Duration::from_secs(301));
    metrics.set_kernel_counters(&[
        ("process_exits", 12),
        ("events_lost", 1),
        ("oom_victims", 0),
    ]);
    metrics.set_hook_attached("sched_process_exit", true);
    metrics.set_hook_attached("oom_mark_victim", false);
    metrics.set_scheduler(unit, 0.25, Duration::from_micros(800));
    metrics.set_resource(
        unit,
        "fds",
        900.0,
        Some(1024.0),
        Some(Duration::from_secs(120)),
    );
    metrics.set_resource(unit, "threads", 12.0, None, None);
    metrics.probe_finished(unit, "http", false, Duration::from_millis(250));
    metrics.fleet.set_slot_held("web", true);
    metrics.fleet.waited("web");
    metrics.fleet.denied("web", "breaker");
    metrics.fleet.set_breaker("web", 2);
    metrics.fleet.set_connected("prod", false);
    let text = metrics.render();
    for family in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} is not rendered:\n{text}"
        );
    }
    let out = run("promtool", "prometheus", &["check", "metrics"], Some(&text));
    assert_clean("promtool check metrics", &out);
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        findings.trim().is_empty(),
        "promtool check metrics found:\n{findings}\nin:\n{text}"
    );
}

/// `[Section]` → key → values (a key may repeat).
fn unit_file(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        sections
            .entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

#[test]
fn the_unit_file_has_what_the_agent_needs_and_nothing_that_breaks_it() {
    let unit = unit_file(&read("selfheal.service"));
    let service = &unit["Service"];
    let value = |key: &str| service.get(key).map(|v| v.join(" ")).unwrap_or_default();
    for (key, expected) in [
        ("Type", "notify"),
        ("WatchdogSec", "30s"),
        ("ExecStart", "/usr/local/bin/selfheal-agent run"),
        ("Restart", "on-failure"),
        ("RuntimeDirectory", "selfheal"),
        ("StateDirectory", "selfheal"),
        ("LogsDirectory", "selfheal"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("UMask", "0077"),
        ("ProtectClock", "yes"),
        ("PrivateIPC", "yes"),
        ("PrivateMounts", "yes"),
        ("PrivateDevices", "yes"),
        ("SystemCallErrorNumber", "EPERM"),
        ("MemoryMin", "64M"),
        ("OOMScoreAdjust", "-900"),
    ] {
        assert_eq!(value(key), expected, "{key}");
    }
    let capabilities: BTreeSet<&str> = service["CapabilityBoundingSet"][0]
        .split_whitespace()
        .collect();
    let needed = [
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_DAC_READ_SEARCH",
    ];
    assert_eq!(
        capabilities,
        needed.into_iter().collect(),
        "CapabilityBoundingSet"
    );
    // Exactly the families the code opens: no netlink anywhere in it.
    let families: BTreeSet<String> = value("RestrictAddressFamilies")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let used = ["AF_UNIX", "AF_INET", "AF_INET6"].map(str::to_owned);
    assert_eq!(families, used.into(), "RestrictAddressFamilies");
    // The allow-list names the loader's calls that @system-service lacks.
    let filter = value("SystemCallFilter");
    for call in [
        "@system-service",
        "bpf",
        "perf_event_open",
        "mount",
        "~@resources",
    ] {
        assert!(
            filter.split_whitespace().any(|c| c == call),
            "SystemCallFilter lacks {call}: {filter}"
        );
    }
    // Each would stop the agent from loading its programs or writing cgroupfs.
    for key in [
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "ProtectProc",
    ] {
        assert!(!service.contains_key(key), "{key} would break the agent");
    }
}

/// The highest exposure `systemd-analyze security` may give the shipped unit (issue 16).
const MAX_EXPOSURE: f64 = 4.0;

#[test]
fn the_unit_files_exposure_is_at_most_4() {
    let out = run(
        "systemd-analyze",
        "systemd",
        &[
            "security",
            "--offline=true",
            "--no-pager",
            &deploy("selfheal.service").to_string_lossy(),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "→ Overall exposure level for selfheal.service: 3.5 OK 🙂"
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for selfheal.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure in:\n{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}:\n{stdout}"
    );
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    // verify insists that ExecStart's binary exists: point it at one that does.
    let text = read("selfheal.service").replace(
        "ExecStart=/usr/local/bin/selfheal-agent run",
        "ExecStart=/bin/true run",
    );
    let scratch = Scratch::new("unit-verify");
    let path = scratch.write("selfheal.service", &text);
    let out = run("systemd-analyze", "systemd", &["verify", &path], None);
    assert_clean("systemd-analyze verify", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("selfheal.service"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify:\n{}",
        complaints.join("\n")
    );
}

#[test]
fn the_alertmanager_example_passes_amtool_and_routes_to_the_webhook() {
    let path = deploy("alertmanager.yml");
    let out = run(
        "amtool",
        "prometheus-alertmanager",
        &["check-config", &path.to_string_lossy()],
        None,
    );
    assert_clean("amtool check-config", &out);
    let text = read("alertmanager.yml");
    assert!(
        text.contains("/selfheal/trigger"),
        "no route to the agent's webhook"
    );
    assert!(
        text.contains("credentials_file:"),
        "the token must come from a file"
    );
}
