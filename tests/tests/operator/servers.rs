//! A real Prometheus and a real Alertmanager (Debian's binaries), each a child process of the
//! test with its config and storage in a directory of its own, on a free loopback port;
//! stopped when dropped.

use std::{
    io::Read as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use selfheal_tests::Sandbox;
use serde_json::Value;

use super::http;

/// Prometheus replays its (empty) write-ahead log and loads rules before it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A port nobody listens on now. Another process could take it before the server binds it;
/// the server then fails to start, loudly.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

pub struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
    pub address: String,
}

impl Server {
    /// `prometheus` with `config` (prometheus.yml) on `port`, its TSDB under `dir`.
    pub fn prometheus(dir: &Path, port: u16, config: &str) -> anyhow::Result<Server> {
        let address = format!("127.0.0.1:{port}");
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"));
        Server::start("prometheus", "prometheus", command, dir, address)
    }

    /// `prometheus-alertmanager` with `config` (alertmanager.yml) on `port`, without
    /// clustering, its storage under `dir`.
    pub fn alertmanager(dir: &Path, port: u16, config: &str) -> anyhow::Result<Server> {
        let address = format!("127.0.0.1:{port}");
        let config_file = dir.join("alertmanager.yml");
        std::fs::write(&config_file, config)?;
        let mut command = Command::new("prometheus-alertmanager");
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            // Empty: no gossip port, no peers; one Alertmanager on its own.
            .arg("--cluster.listen-address=");
        Server::start(
            "alertmanager",
            "prometheus-alertmanager",
            command,
            dir,
            address,
        )
    }

    fn start(
        name: &'static str,
        package: &str,
        mut command: Command,
        dir: &Path,
        address: String,
    ) -> anyhow::Result<Server> {
        let log = dir.join(format!("{name}.log"));
        let output = std::fs::File::create(&log)?;
        command
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        let child = command.spawn().with_context(|| {
            format!("starting {name}: install Debian's `{package}` (or run `cargo xtask setup`)")
        })?;
        let mut server = Server {
            name,
            child,
            log,
            address,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Both answer `GET /-/ready` with 200 once they serve.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{} exited with {status} while starting:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if http::get(&self.address, "/-/ready").is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} was not ready on {} within {READY_TIMEOUT:?}:\n{}",
                self.name,
                self.address,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path` (query string included) as JSON.
    pub fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let response = http::get(&self.address, path)?;
        anyhow::ensure!(response.status == 200, "{} {path}: {response:?}", self.name);
        response.json()
    }

    /// Prometheus: the instant vector of `query`, as (labels, value) pairs.
    pub fn query(&self, query: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let answer = self.get_json(&format!("/api/v1/query?query={}", encode(query)))?;
        anyhow::ensure!(answer["status"] == "success", "query {query}: {answer:#}");
        Ok(answer["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let value = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), value))
            })
            .collect())
    }

    /// Prometheus: waits until `query` returns exactly `expected` for each series, by `label`.
    pub fn wait_for_query(
        &self,
        query: &str,
        label: &str,
        expected: &[(&str, f64)],
    ) -> anyhow::Result<()> {
        let mut last = Vec::new();
        Sandbox::wait_until(
            &format!("Prometheus to answer {query} with {expected:?}"),
            super::WAIT,
            || {
                last = self.query(query)?;
                Ok(expected.iter().all(|(name, value)| {
                    last.iter()
                        .any(|(labels, v)| labels[label] == *name && v == value)
                }))
            },
        )
        .with_context(|| {
            format!(
                "last answer: {last:?}\nPrometheus log:\n{}",
                self.log_text()
            )
        })
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query-string value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
