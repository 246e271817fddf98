//! A 3-member etcd cluster on loopback ports, from Debian's `etcd-server` (installed by
//! `cargo xtask setup`), started and torn down by the fleet tests; and etcd's own history of
//! a prefix (`etcdctl watch --prefix --rev=1`), which the tests compare with the agents' audit
//! logs.

pub mod proxy;

use std::{
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::Value;

const BASE: &str = "/run/selfheal-etcd";
static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    pub members: Vec<Member>,
}

/// One event of etcd's history.
#[derive(Debug, Clone)]
pub struct HistoryEvent {
    pub put: bool,
    pub key: String,
    pub value: String,
    pub mod_revision: i64,
    pub lease: i64,
}

/// Ports for etcd members come from below the kernel's ephemeral range (32768 and up by
/// default): a port picked with `bind(0)` and released is in that range, where any outgoing
/// connection of the tests running beside (agents talking to etcd, clients) may take it before
/// etcd binds it, and the member dies. Each call takes the next port of a range that starts at
/// an offset of this process's own, so tests and concurrent test binaries do not meet.
const MEMBER_PORTS: std::ops::Range<u32> = 20_000..32_000;
static NEXT_PORT: AtomicU32 = AtomicU32::new(u32::MAX);

fn free_port() -> anyhow::Result<SocketAddr> {
    let span = MEMBER_PORTS.end - MEMBER_PORTS.start;
    let _ = NEXT_PORT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = MEMBER_PORTS.start + NEXT_PORT.fetch_add(1, Ordering::SeqCst) % span;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return Ok(listener.local_addr()?);
        }
    }
    bail!("no free port in {MEMBER_PORTS:?} for an etcd member")
}

impl EtcdCluster {
    /// Starts three members and waits until the cluster has a leader.
    pub fn start(label: &str) -> anyhow::Result<EtcdCluster> {
        let id = format!(
            "{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let dir = PathBuf::from(BASE).join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut members = Vec::new();
        for i in 0..3 {
            members.push(Member {
                name: format!("m{i}"),
                client: free_port()?,
                peer: free_port()?,
                child: None,
            });
        }
        let mut cluster = EtcdCluster {
            dir,
            token: id,
            members,
        };
        for i in 0..3 {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect();
        let member = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", member.name)))?;
        let mut command = Command::new("etcd");
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.dir.join(&member.name))
            .arg(format!("--listen-client-urls=http://{}", member.client))
            .arg(format!("--advertise-client-urls=http://{}", member.client))
            .arg(format!("--listen-peer-urls=http://{}", member.peer))
            .arg(format!(
                "--initial-advertise-peer-urls=http://{}",
                member.peer
            ))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!("--initial-cluster-token={}", self.token))
            .args(["--heartbeat-interval=100", "--election-timeout=1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the member dies with the test that started it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .context("starting etcd (Debian's etcd-server: run `cargo xtask setup`)")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// `http://127.0.0.1:<port>` of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect()
    }

    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.client).collect()
    }

    /// Runs etcdctl against the members that are up.
    pub fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let endpoints = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=3s")
            .args(args)
            .output()
            .context("running etcdctl (Debian's etcd-client)")?;
        if !out.status.success() {
            bail!("etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.etcdctl(&["endpoint", "health"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!("the etcd cluster did not become healthy: {e:#}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The index of the current leader.
    pub fn leader(&self) -> anyhow::Result<usize> {
        let status: Value =
            serde_json::from_str(&self.etcdctl(&["endpoint", "status", "-w", "json"])?)?;
        let rows = status.as_array().context("endpoint status is a list")?;
        for row in rows {
            if row["Status"]["leader"] == row["Status"]["header"]["member_id"] {
                let endpoint = row["Endpoint"].as_str().unwrap_or_default();
                return self
                    .members
                    .iter()
                    .position(|m| endpoint.ends_with(&m.client.to_string()))
                    .context("the leader's endpoint is not a member");
            }
        }
        bail!("no member is the leader: {status}")
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data dir.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)
    }

    /// Every event under `prefix` since revision 1, from etcd itself.
    pub fn history(&self, prefix: &str) -> anyhow::Result<Vec<HistoryEvent>> {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client.to_string())
            .collect();
        // A watch never ends by itself: read what it prints in its first seconds.
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["watch", "--prefix", "--rev=1", "-w", "json", prefix])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running etcdctl watch")?;
        std::thread::sleep(Duration::from_millis(1500));
        let _ = child.kill();
        let out = child.wait_with_output()?;
        let mut events = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(response) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for event in response["Events"].as_array().into_iter().flatten() {
                let kv = &event["kv"];
                events.push(HistoryEvent {
                    // DELETE is type 1; PUT (0) is left out of the JSON.
                    put: event["type"].as_i64().unwrap_or(0) == 0,
                    key: decode(&kv["key"]),
                    value: decode(&kv["value"]),
                    mod_revision: kv["mod_revision"].as_i64().unwrap_or(0),
                    lease: kv["lease"].as_i64().unwrap_or(0),
                });
            }
        }
        Ok(events)
    }
}

fn decode(value: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap_or_default())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
