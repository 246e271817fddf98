//! Probes against real local servers and real processes.

mod config;
mod server;

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::{runner::probe_once, *};
use server::{Reply, TestServer};

const UNIT_NAME: &str = "web.service";

fn spec(name: &str, check: Check, timeout_ms: u64) -> ProbeSpec {
    ProbeSpec {
        unit: 1,
        unit_name: UNIT_NAME.into(),
        name: name.into(),
        check,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(timeout_ms),
        dependency: false,
    }
}

fn http(server: &TestServer, expect_status: Option<u16>, body_contains: Option<&str>) -> Check {
    Check::Http {
        url: HttpUrl::try_from(format!("http://{}/health", server.addr)).unwrap(),
        expect_status,
        body_contains: body_contains.map(str::to_owned),
    }
}

fn exec(script: &str) -> Check {
    Check::Exec {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
    }
}

async fn once(check: Check) -> ProbeResult {
    probe_once(&spec("p", check, 2000)).await
}

#[tokio::test]
async fn an_http_probe_is_healthy_on_2xx_and_failing_on_500() {
    let server = TestServer::start(Reply::status(200)).await;
    let result = once(http(&server, None, None)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.detail, "HTTP 200");
    assert_eq!(
        server.requests()[0].lines().next(),
        Some("GET /health HTTP/1.1")
    );
    assert!(server.requests()[0].contains(&format!("Host: {}", server.addr)));

    server.set(Reply::status(500));
    let result = once(http(&server, None, None)).await;
    assert!(!result.ok);
    assert_eq!(result.detail, "HTTP 500, expected 2xx");
}

#[tokio::test]
async fn an_expected_status_replaces_any_2xx() {
    let server = TestServer::start(Reply::status(503)).await;
    assert!(once(http(&server, Some(503), None)).await.ok);
    server.set(Reply::status(204));
    let result = once(http(&server, Some(503), None)).await;
    assert_eq!(
        (result.ok, result.detail.as_str()),
        (false, "HTTP 204, expected 503")
    );
}

#[tokio::test]
async fn body_contains_searches_plain_and_chunked_bodies() {
    let server = TestServer::start(Reply::body(200, "status: ok")).await;
    assert!(once(http(&server, None, Some("ok"))).await.ok);
    let result = once(http(&server, None, Some("ready"))).await;
    assert_eq!(
        (result.ok, result.detail.as_str()),
        (false, "HTTP 200, but the body does not contain \"ready\"")
    );
    server.set(Reply {
        chunked: true,
        ..Reply::body(200, "all systems ready")
    });
    assert!(once(http(&server, None, Some("systems ready"))).await.ok);
}

#[tokio::test]
async fn a_server_that_keeps_the_connection_open_is_read_to_its_content_length() {
    let server = TestServer::start(Reply {
        keep_open: true,
        ..Reply::body(200, "ok")
    })
    .await;
    let result = once(http(&server, None, Some("ok"))).await;
    assert!(result.ok, "{result:?}");
    assert!(result.latency < Duration::from_secs(1), "{result:?}");
}

#[tokio::test]
async fn a_probe_slower_than_its_timeout_fails_at_the_timeout() {
    let server = TestServer::start(Reply {
        delay: Duration::from_secs(5),
        ..Reply::status(200)
    })
    .await;
    let result = probe_once(&spec("slow", http(&server, None, None), 200)).await;
    assert_eq!(
        (result.ok, result.detail.as_str()),
        (false, "timed out after 200ms")
    );
    assert!(
        result.latency >= Duration::from_millis(200) && result.latency < Duration::from_secs(2),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_tcp_probe_succeeds_on_a_listening_port_and_fails_fast_on_a_closed_one() {
    let server = TestServer::start(Reply::status(200)).await;
    let open = Check::Tcp {
        address: HostPort::try_from(server.addr.to_string()).unwrap(),
    };
    assert!(once(open).await.ok);

    let closed_port = server::closed_port().await;
    let closed = Check::Tcp {
        address: HostPort::try_from(format!("127.0.0.1:{closed_port}")).unwrap(),
    };
    let result = once(closed).await;
    assert!(!result.ok);
    assert!(
        result.detail.starts_with("cannot connect to 127.0.0.1:"),
        "{}",
        result.detail
    );
    assert!(result.latency < Duration::from_secs(1), "{result:?}");
}

#[tokio::test]
async fn an_exec_probe_is_healthy_on_exit_status_0_only() {
    assert!(once(exec("exit 0")).await.ok);
    let result = once(exec("echo 'db unreachable' >&2; exit 3")).await;
    assert_eq!(
        (result.ok, result.detail.as_str()),
        (false, "exit status 3: db unreachable")
    );
    let missing = Check::Exec {
        command: vec!["/nonexistent/check".into()],
    };
    let result = once(missing).await;
    assert!(!result.ok);
    assert!(
        result.detail.starts_with("cannot run /nonexistent/check"),
        "{}",
        result.detail
    );
}

#[tokio::test]
async fn an_exec_probe_knows_which_unit_it_checks() {
    let result = once(exec(&format!("test \"$SELFHEAL_UNIT\" = {UNIT_NAME}"))).await;
    assert!(result.ok, "{result:?}");
}

#[tokio::test]
async fn an_exec_probe_that_times_out_is_killed_with_its_children() {
    let dir = std::env::temp_dir().join(format!("selfheal-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("grandchild.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    let result = probe_once(&spec("hang", exec(&script), 300)).await;
    assert_eq!(
        (result.ok, result.detail.as_str()),
        (false, "timed out after 300ms")
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stat = format!("/proc/{}/stat", pid.trim());
    let deadline = Instant::now() + Duration::from_secs(3);
    // Killed: gone, or a zombie waiting for its new parent to reap it.
    while std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(
            Instant::now() < deadline,
            "the probe's child {pid} survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_hung_probe_does_not_delay_another() {
    let hung = TestServer::start(Reply {
        delay: Duration::from_secs(60),
        ..Reply::status(200)
    })
    .await;
    let fast = TestServer::start(Reply::status(200)).await;
    let probes = vec![
        spec("hung", http(&hung, None, None), 1000),
        spec("fast", http(&fast, None, None), 1000),
    ];
    let (tx, mut rx) = mpsc::channel(64);
    let (stop, shutdown) = watch::channel(false);
    let tasks = spawn_probes(probes, Vec::new(), tx, shutdown);

    let started = Instant::now();
    let mut fast_at = Vec::new();
    let mut hung_results = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        let Ok(Some(ProbeReport::Result(result))) =
            tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
        else {
            continue;
        };
        match result.probe.as_str() {
            "fast" => fast_at.push(result.at),
            _ => hung_results.push(result),
        }
    }
    stop.send(true).unwrap();
    // Every 100 ms for 1.5 s is 15; the hung probe's 1 s timeouts must not stretch the gaps.
    assert!(fast_at.len() >= 10, "only {} fast results", fast_at.len());
    let widest = fast_at.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(widest < Duration::from_millis(500), "a gap of {widest:?}");
    assert!(
        hung_results
            .iter()
            .all(|r| r.detail == "timed out after 1s")
    );
    assert!(!hung_results.is_empty());
    drop(tasks);
}

#[tokio::test]
async fn probes_stop_on_shutdown_even_mid_attempt() {
    let hung = TestServer::start(Reply {
        delay: Duration::from_secs(60),
        ..Reply::status(200)
    })
    .await;
    let (tx, _rx) = mpsc::channel(64);
    let (stop, shutdown) = watch::channel(false);
    let probe = spec("hung", http(&hung, None, None), 30_000);
    let (sets, runner) = mpsc::unbounded_channel();
    let run = tokio::spawn(run_probes(runner, tx, shutdown));
    sets.send(ProbeSet {
        unit: 1,
        probes: vec![probe],
        detectors: Vec::new(),
    })
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), run)
        .await
        .expect("the probe task did not stop")
        .unwrap();
}

fn detector(name: &str, script: &str) -> DetectorSpec {
    DetectorSpec {
        unit: 1,
        unit_name: UNIT_NAME.into(),
        name: name.into(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        kind: "queue_backlog".into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn custom_detectors_report_findings_and_stay_silent_when_they_cannot_run() {
    let detectors = vec![
        detector(
            "json",
            r#"echo '{"problem": "disk_full", "evidence": "/var 99 %"}'"#,
        ),
        detector("exit", "echo 9000 queued; exit 1"),
        detector("fine", "exit 0"),
        DetectorSpec {
            command: vec!["/nonexistent/detector".into()],
            ..detector("broken", "")
        },
    ];
    let (tx, mut rx) = mpsc::channel(64);
    let (stop, shutdown) = watch::channel(false);
    let _tasks = spawn_probes(Vec::new(), detectors, tx, shutdown);
    let mut seen = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while seen.len() < 3 && Instant::now() < deadline {
        if let Ok(Some(ProbeReport::Finding(f))) =
            tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
        {
            seen.insert(f.detector.clone(), (f.ok, f.kind, f.evidence));
        }
    }
    stop.send(true).unwrap();
    let expected = [
        (
            "exit",
            (false, "queue_backlog", "exit status 1: 9000 queued"),
        ),
        ("fine", (true, "queue_backlog", "exit status 0")),
        ("json", (false, "disk_full", "/var 99 %")),
    ];
    let seen: Vec<_> = seen
        .iter()
        .map(|(name, (ok, kind, evidence))| {
            (name.as_str(), (*ok, kind.as_str(), evidence.as_str()))
        })
        .collect();
    assert_eq!(seen, expected);
}

/// What a reload does to a unit whose probes changed: its old probes stop, its new ones run, and
/// an empty set stops them all.
#[tokio::test]
async fn a_new_set_for_a_unit_replaces_its_probes_and_an_empty_one_stops_them() {
    let server = TestServer::start(Reply::status(200)).await;
    let (tx, mut rx) = mpsc::channel(64);
    let (stop, shutdown) = watch::channel(false);
    let (sets, runner) = mpsc::unbounded_channel();
    let run = tokio::spawn(run_probes(runner, tx, shutdown));
    let set = |names: &[&str]| ProbeSet {
        unit: 1,
        probes: names
            .iter()
            .map(|n| spec(n, http(&server, None, None), 1000))
            .collect(),
        detectors: Vec::new(),
    };
    // The names of the results that arrive within `window`.
    async fn heard(
        rx: &mut mpsc::Receiver<ProbeReport>,
        window: Duration,
    ) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(report)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if let ProbeReport::Result(r) = report {
                names.insert(r.probe);
            }
        }
        names
    }
    sets.send(set(&["old"])).unwrap();
    assert_eq!(
        heard(&mut rx, Duration::from_millis(400)).await,
        ["old".to_owned()].into()
    );
    sets.send(set(&["new"])).unwrap();
    // Results already sent before the switch drain first.
    let _ = heard(&mut rx, Duration::from_millis(150)).await;
    assert_eq!(
        heard(&mut rx, Duration::from_millis(400)).await,
        ["new".to_owned()].into()
    );
    sets.send(set(&[])).unwrap();
    let _ = heard(&mut rx, Duration::from_millis(150)).await;
    assert!(heard(&mut rx, Duration::from_millis(400)).await.is_empty());
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), run)
        .await
        .expect("the runner did not stop")
        .unwrap();
}
