//! Issue 7 end to end: health probes and operator-written detectors feed the agent's detector,
//! whose problems go through the policy to real actions on real units. HTTP services are the
//! `selfheal-workload http` mode, steered by rewriting its state file ("STATUS DELAY_MS").

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use selfheal_tests::agent::{WAIT, wait_for_record};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit, workload_bin};
use serde_json::Value;

/// An HTTP service unit whose answers the test steers through a state file.
struct HttpUnit {
    port: u16,
    state: PathBuf,
}

impl HttpUnit {
    /// Installs and starts `name` answering `state` ("200 0", "500 0", "200 300"...).
    fn start(sandbox: &Sandbox, name: &str, state: &str) -> anyhow::Result<HttpUnit> {
        let port = free_port()?;
        let unit = HttpUnit {
            port,
            state: sandbox.runtime_dir().join(format!("{name}.state")),
        };
        unit.answer(state)?;
        let exec = format!(
            "{} http {port} {}",
            workload_bin().display(),
            unit.state.display()
        );
        sandbox.install_unit(name, &service_unit(name, &exec, &[]))?;
        sandbox.systemctl(&["start", name])?;
        Sandbox::wait_until(&format!("{name} to listen on {port}"), WAIT, || {
            Ok(TcpStream::connect(("127.0.0.1", port)).is_ok())
        })?;
        Ok(unit)
    }

    /// Changes how the service answers from its next request on. Written whole (rename), so a
    /// request never reads half a state and fails by accident.
    fn answer(&self, state: &str) -> anyhow::Result<()> {
        let tmp = self.state.with_extension("tmp");
        std::fs::write(&tmp, state)?;
        std::fs::rename(&tmp, &self.state).context("replacing the state file")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }
}

/// A port nobody listens on right now (the kernel's pick, released at once).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn http_probe(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[unit.probe]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{url}\"\n\
         interval = \"200ms\"\ntimeout = \"2s\"\n{extra}\n"
    )
}

/// The agent, watching one unit: what a test reads through `status --json`.
struct Watching {
    agent: Agent,
    unit: &'static str,
}

impl Watching {
    /// Starts the agent on `[[unit]] name = unit` followed by `tables` (probes, detectors...).
    fn start(sandbox: &Sandbox, unit: &'static str, tables: &str) -> anyhow::Result<Watching> {
        let config = format!("[[unit]]\nname = \"{unit}\"\n\n{tables}\n");
        let agent = Agent::start(sandbox, &config, &[])?;
        Ok(Watching { agent, unit })
    }

    fn unit(&self) -> anyhow::Result<Value> {
        self.agent.unit(self.unit)
    }

    /// The probe as status shows it (`units[].view.probes[]`).
    fn probe(&self, name: &str) -> anyhow::Result<Value> {
        let view = self.unit()?["view"].clone();
        view["probes"]
            .as_array()
            .and_then(|probes| probes.iter().find(|p| p["name"] == name).cloned())
            .with_context(|| format!("no probe {name} in {}'s view: {view:#}", self.unit))
    }

    fn wait_probe(
        &self,
        name: &str,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let mut found = Value::Null;
        Sandbox::wait_until(what, WAIT, || {
            found = self.probe(name)?;
            Ok(matches(&found))
        })
        .with_context(|| format!("last seen: {found:#}\n{}", self.agent.log_text()))?;
        Ok(found)
    }

    fn wait_up(&self, name: &str, up: bool) -> anyhow::Result<Value> {
        self.wait_probe(name, &format!("probe {name} up = {up}"), |p| p["up"] == up)
    }

    fn wait_record(&self, kind: &str, matches: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let what = format!("a {kind} record on {}", self.unit);
        wait_for_record(&self.agent, self.unit, kind, &what, matches)
    }

    /// Waits for the decision on a problem of kind `problem`.
    fn decision(&self, problem: &str) -> anyhow::Result<Value> {
        self.wait_record("decision", |r| r["problem"] == problem)
    }

    /// Waits for `action` ("restart", "start_fallback x.service") to be done.
    fn done(&self, action: &str) -> anyhow::Result<Value> {
        self.wait_record("action", |r| {
            r["action"] == action && r["outcome"] == "done"
        })
    }

    fn records(&self, kind: &str) -> anyhow::Result<Vec<Value>> {
        self.agent.records(self.unit, kind)
    }

    /// Waits until the agent has published its view `n` more times: the `checks` of a probe
    /// that runs several times a tick change at every publish. The tick that notices a new
    /// main pid starts after the publish seen last, so two publishes after the pid shows in
    /// status mean the agent has taken note of the (re)start.
    fn wait_publishes(&self, name: &str, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let seen = self.probe(name)?["checks"].clone();
            self.wait_probe(name, "the agent's next tick", |p| p["checks"] != seen)?;
        }
        Ok(())
    }
}

/// The decision plans the incident's first restart (after its backoff delay, so the decision's
/// immediate actions are "none").
fn plans_a_restart(decision: &Value) -> bool {
    decision["action"] == "restart" || text(&decision["reason"]).contains("restart attempt 1 of")
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn start_sleeper(sandbox: &Sandbox, name: &str) -> anyhow::Result<()> {
    let sleeper = format!("{} sleep", workload_bin().display());
    sandbox.install_unit(name, &service_unit(name, &sleeper, &[]))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn an_http_service_answering_500_five_times_in_a_row_is_restarted() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("probe500")?;
    let web = HttpUnit::start(&sandbox, "web.service", "200 0")?;
    let probes = http_probe("health", &web.url(), "grace = \"0s\"");
    let agent = Watching::start(&sandbox, "web.service", &probes)?;
    agent.wait_up("health", true)?;
    let pid = sandbox.main_pid("web.service")?;

    web.answer("500 0")?;
    let decision = agent.decision("consecutive_failures")?;
    assert!(plans_a_restart(&decision), "{decision:#}");
    let evidence = text(&decision["evidence"]);
    assert!(
        evidence.contains("failed 5 times in a row (threshold 5)") && evidence.contains("HTTP 500"),
        "{decision:#}"
    );
    agent.done("restart")?;
    web.answer("200 0")?;
    let new_pid = sandbox.main_pid("web.service")?;
    assert!(new_pid != 0 && new_pid != pid, "main pid {pid} → {new_pid}");
    agent.wait_up("health", true)?;
    Ok(())
}

#[test]
fn three_failures_under_a_threshold_of_five_then_recovery_change_nothing() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("probeblip")?;
    let web = HttpUnit::start(&sandbox, "web.service", "200 0")?;
    // A slow interval, so the test sees the third failure (status is published each 1 s tick)
    // well before a fifth could happen.
    let probes = format!(
        "[[unit.probe]]\nname = \"health\"\nkind = \"http\"\nurl = \"{}\"\n\
         interval = \"2s\"\ntimeout = \"1s\"\ngrace = \"0s\"\nconsecutive_failures = 5\n",
        web.url()
    );
    let agent = Watching::start(&sandbox, "web.service", &probes)?;
    agent.wait_up("health", true)?;
    let pid = sandbox.main_pid("web.service")?;

    web.answer("500 0")?;
    let failing = agent.wait_probe("health", "3 failures in a row", |p| {
        p["consecutive_failures"].as_u64() >= Some(3)
    })?;
    web.answer("200 0")?;
    assert!(
        failing["consecutive_failures"].as_u64() < Some(5),
        "the test was too slow to stop the failures at 3: {failing:#}"
    );
    let checks = failing["checks"].as_u64().unwrap_or_default();
    // Two more probes: the fourth and fifth failures would have been these.
    let healthy = agent.wait_probe("health", "2 more probes", |p| {
        p["checks"].as_u64() >= Some(checks + 2) && p["up"] == true
    })?;
    assert_eq!(healthy["consecutive_failures"], 0, "{healthy:#}");
    assert!(healthy["failures"].as_u64() >= Some(3), "{healthy:#}");
    let decisions = agent.records("decision")?;
    assert!(decisions.is_empty(), "{decisions:#?}");
    assert!(agent.records("action")?.is_empty());
    assert_eq!(sandbox.main_pid("web.service")?, pid);
    Ok(())
}

/// The ratio in "... (3.0×, threshold 2×)".
fn ratio_in(evidence: &str) -> Option<f64> {
    let end = evidence.find("×, threshold")?;
    let start = evidence[..end].rfind('(')? + 1;
    evidence[start..end].parse().ok()
}

#[test]
fn answers_three_times_slower_than_the_baseline_are_a_degradation_with_the_ratio()
-> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("probeslow")?;
    let web = HttpUnit::start(&sandbox, "web.service", "200 100")?;
    let probes = http_probe("health", &web.url(), "grace = \"0s\"\nbaseline_ops = 5");
    let agent = Watching::start(&sandbox, "web.service", &probes)?;
    let learned = agent.wait_probe("health", "a baseline", |p| p["baseline_ms"].is_number())?;
    let baseline = learned["baseline_ms"].as_f64().unwrap_or_default();
    assert!((95.0..200.0).contains(&baseline), "{learned:#}");

    web.answer("200 300")?;
    let decision = agent.decision("performance_degradation")?;
    let evidence = text(&decision["evidence"]);
    assert!(
        evidence.contains("probe \"health\": median latency") && evidence.contains("vs baseline"),
        "{decision:#}"
    );
    let ratio = ratio_in(evidence).with_context(|| format!("no ratio in {decision:#}"))?;
    assert!(
        (2.4..=3.6).contains(&ratio),
        "ratio {ratio} in {decision:#}"
    );
    assert!(plans_a_restart(&decision), "{decision:#}");
    agent.done("restart")?;
    Ok(())
}

#[test]
fn a_slowdown_inside_the_start_up_grace_period_is_not_judged() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("probegrace")?;
    let web = HttpUnit::start(&sandbox, "web.service", "200 100")?;
    let grace = Duration::from_secs(10);
    let probes = http_probe("health", &web.url(), "grace = \"10s\"\nbaseline_ops = 5");
    let agent = Watching::start(&sandbox, "web.service", &probes)?;
    // The agent's start counts as the unit's: the baseline is learned once that grace is over.
    agent.wait_probe("health", "a baseline", |p| p["baseline_ms"].is_number())?;
    let pid = u64::from(sandbox.main_pid("web.service")?);

    let restarted_ms = now_ms();
    sandbox.systemctl(&["restart", "web.service"])?;
    Sandbox::wait_until("the agent to see the new main pid", WAIT, || {
        let seen = agent.unit()?["main_pid"].as_u64();
        Ok(seen.is_some_and(|p| p != pid && p != 0))
    })?;
    agent.wait_publishes("health", 2)?;
    web.answer("200 300")?;
    let slow_ms = now_ms();
    // What this test proves needs the slowdown to begin inside the grace period.
    assert!(
        slow_ms < restarted_ms + grace.as_millis() as u64,
        "the slowdown began after the grace period: the test proves nothing"
    );

    // Still slow once the grace period is over: now it counts.
    let decision = agent.decision("performance_degradation")?;
    let detected_ms = decision["at_ms"].as_u64().unwrap_or_default();
    assert!(
        detected_ms >= restarted_ms + grace.as_millis() as u64,
        "detected {} ms after the restart, inside the {grace:?} grace period: {decision:#}",
        detected_ms.saturating_sub(restarted_ms)
    );
    // Slow answers from inside the grace period on: only judged once it was over.
    assert!(detected_ms >= slow_ms, "{decision:#}");
    Ok(())
}

#[test]
fn a_dependency_going_down_starts_the_fallback_and_leaves_the_unit_running() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("probedep")?;
    let db = HttpUnit::start(&sandbox, "db.service", "200 0")?;
    start_sleeper(&sandbox, "web.service")?;
    start_sleeper(&sandbox, "web-fallback.service")?;
    sandbox.systemctl(&["start", "web.service"])?;
    let tables = format!(
        "[unit.remediation]\nfallback = \"web-fallback.service\"\n\n\
         [[unit.probe]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{}\"\n\
         dependency = true\ninterval = \"200ms\"\ntimeout = \"1s\"\n",
        db.port
    );
    let agent = Watching::start(&sandbox, "web.service", &tables)?;
    let up = agent.wait_up("db", true)?;
    assert_eq!(up["dependency"], true, "{up:#}");
    let pid = sandbox.main_pid("web.service")?;

    sandbox.systemctl(&["stop", "db.service"])?;
    let decision = agent.decision("integration_failure")?;
    assert_eq!(
        decision["action"], "start_fallback web-fallback.service",
        "{decision:#}"
    );
    assert!(
        text(&decision["evidence"]).contains("dependency probe \"db\" failed 5 times in a row"),
        "{decision:#}"
    );
    agent.done("start_fallback web-fallback.service")?;
    assert_eq!(
        sandbox.property("web-fallback.service", "ActiveState")?,
        "active"
    );
    assert_eq!(
        sandbox.main_pid("web.service")?,
        pid,
        "web.service was restarted"
    );
    assert_eq!(agent.unit()?["restarts"], 0);
    let actions = agent.records("action")?;
    assert!(
        actions.iter().all(|r| r["action"] != "restart"),
        "{actions:#?}"
    );
    Ok(())
}

#[test]
fn a_custom_detector_raises_its_kind_with_its_evidence() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("probecustom")?;
    start_sleeper(&sandbox, "worker.service")?;
    sandbox.systemctl(&["start", "worker.service"])?;
    // One detector fails by exit status (its configured kind), one names a kind in JSON.
    let tables = r#"
[unit.remediation.custom]
queue_backlog = ["restart"]

[[unit.detector]]
name = "queue-depth"
command = ["/bin/sh", "-c", "echo queue depth 9000; exit 2"]
kind = "queue_backlog"
interval = "300ms"

[[unit.detector]]
name = "disk"
command = ["/bin/sh", "-c", "echo '{\"problem\": \"disk_full\", \"evidence\": \"/var at 99 %\"}'"]
kind = "disk_check"
interval = "300ms"
"#;
    let agent = Watching::start(&sandbox, "worker.service", tables)?;

    let backlog = agent.decision("queue_backlog")?;
    let expected = "detector \"queue-depth\": exit status 2: queue depth 9000";
    assert_eq!(backlog["evidence"], expected, "{backlog:#}");
    assert!(plans_a_restart(&backlog), "{backlog:#}");
    agent.done("restart")?;

    let disk = agent.decision("disk_full")?;
    assert_eq!(
        disk["evidence"], "detector \"disk\": /var at 99 %",
        "{disk:#}"
    );
    // No ladder names disk_full: recorded, not acted on.
    assert_eq!(disk["action"], "none", "{disk:#}");
    let decisions = agent.records("decision")?;
    assert!(
        decisions.iter().all(|r| r["problem"] != "disk_check"),
        "the configured kind was raised although the JSON named another: {decisions:#?}"
    );
    Ok(())
}

#[test]
fn a_probe_hanging_until_its_timeout_does_not_slow_the_others() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("probehang")?;
    let web = HttpUnit::start(&sandbox, "web.service", "200 0")?;
    // Accepts connections (the kernel's backlog does) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let silent_url = format!("http://{}/health", silent.local_addr()?);
    // Thresholds out of reach: this test is about timing, not remediation.
    let quiet = "grace = \"0s\"\nconsecutive_failures = 1000";
    let probes = http_probe("hung", &silent_url, quiet) + &http_probe("fast", &web.url(), quiet);
    let agent = Watching::start(&sandbox, "web.service", &probes)?;
    let hung = agent.wait_up("hung", false)?;
    assert!(
        text(&hung["detail"]).contains("timed out after 2s"),
        "{hung:#}"
    );
    assert!(hung["latency_ms"].as_f64() >= Some(1900.0), "{hung:#}");

    let fast_before = agent.probe("fast")?["checks"].as_u64().unwrap_or_default();
    let hung_before = hung["checks"].as_u64().unwrap_or_default();
    // 15 more checks at 200 ms: meanwhile the hung probe, 2 s per check, runs about 2. Queued
    // behind the hung probe's timeouts, the fast one would run one check per hung check.
    let fast = agent.wait_probe("fast", "15 more fast checks", |p| {
        p["checks"].as_u64() >= Some(fast_before + 15)
    })?;
    let hung = agent.probe("hung")?;
    assert_eq!(fast["up"], true, "{fast:#}");
    // Its own answer, not the hung probe's 2 s timeout.
    assert!(
        fast["latency_ms"].as_f64() < hung["latency_ms"].as_f64(),
        "{fast:#}\n{hung:#}"
    );
    let hung_checks = hung["checks"].as_u64().unwrap_or_default() - hung_before;
    assert!(
        hung_checks <= 7,
        "{hung_checks} checks of the hung probe during 15 fast ones: the fast probe waited \
         behind it, or it did not wait for its timeout"
    );
    drop(silent);
    Ok(())
}

/// The value of `metric` whose labels include all of `labels` (`name="value"` pairs).
fn metric(exposition: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
        let (names, value) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|label| names.split(',').any(|n| n == *label))
            .then(|| value.trim().parse().ok())?
    })
}

impl Watching {
    /// `GET /metrics` at the agent's HTTP address (`agent.http` in status).
    fn metrics(&self) -> anyhow::Result<String> {
        let address = text(&self.agent.status()?["agent"]["http"]).to_owned();
        let mut stream = TcpStream::connect(&address).context("connecting to agent.http")?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
            _ => bail!("GET /metrics at {address}: {response:.300}"),
        }
    }

    /// `selfheal-agent status`, the text view.
    fn status_text(&self) -> anyhow::Result<String> {
        let socket = self.agent.socket().to_string_lossy().into_owned();
        let out = self.agent.cli(&["status", "--socket", &socket])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[test]
fn probe_results_are_exported_as_metrics_and_shown_in_status() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("probemetrics")?;
    let web = HttpUnit::start(&sandbox, "web.service", "200 0")?;
    let probes = http_probe("health", &web.url(), "consecutive_failures = 1000");
    let agent = Watching::start(&sandbox, "web.service", &probes)?;
    let labels = [r#"unit="web.service""#, r#"probe="health""#];

    let up = agent.wait_up("health", true)?;
    assert_eq!(up["dependency"], false, "{up:#}");
    assert_eq!(up["detail"], "HTTP 200", "{up:#}");
    assert!(up["latency_ms"].is_number(), "{up:#}");
    let exposition = agent.metrics()?;
    assert_eq!(
        metric(&exposition, "selfheal_probe_up", &labels),
        Some(1.0),
        "{exposition}"
    );
    let took = metric(&exposition, "selfheal_probe_duration_seconds", &labels);
    assert!(
        took.is_some_and(|s| s > 0.0 && s < 2.0),
        "{took:?} in {exposition}"
    );
    let shown = agent.status_text()?;
    assert!(shown.contains("Probe health: up"), "{shown}");

    web.answer("500 0")?;
    Sandbox::wait_until("selfheal_probe_up to drop to 0", WAIT, || {
        Ok(metric(&agent.metrics()?, "selfheal_probe_up", &labels) == Some(0.0))
    })?;
    let down = agent.wait_up("health", false)?;
    assert!(text(&down["detail"]).contains("HTTP 500"), "{down:#}");
    Sandbox::wait_until("the text status to show the probe down", WAIT, || {
        Ok(agent.status_text()?.contains("Probe health: DOWN"))
    })?;
    Ok(())
}
