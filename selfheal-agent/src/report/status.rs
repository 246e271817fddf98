//! The status socket: a unix socket (root-only, 0600) where the running agent answers
//! `selfheal-agent status` with a JSON document, one request per connection.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use log::warn;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, watch},
};

use super::{health::HealthReport, history::Record};
use crate::{
    daemon::{
        commands::Command,
        publish::{Snapshot, Snapshots},
    },
    systemd::Bus,
    units::view::UnitView,
};

/// Longest request line the server reads.
const MAX_REQUEST: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusDoc {
    /// The `/health` document: overall healthy/degraded/critical and its checks.
    pub health: HealthReport,
    pub agent: AgentInfo,
    pub kernel: KernelInfo,
    pub units: Vec<UnitStatus>,
    /// The config's unit patterns, in file order; their instances are in `units`.
    #[serde(default)]
    pub patterns: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// "system" or "user".
    pub bus: String,
    pub dry_run: bool,
    /// Address of /metrics, /health and the webhook.
    #[serde(default)]
    pub http: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KernelInfo {
    pub hooks: Vec<HookInfo>,
    /// The kernel programs' counters (see `selfheal_common::counters`), summed over CPUs.
    pub counters: BTreeMap<String, u64>,
    /// Thread ids in the kernel's scheduler map: tasks of monitored units, nothing else.
    #[serde(default)]
    pub tracked_tasks: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HookInfo {
    pub hook: String,
    pub attached: bool,
    pub detail: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UnitStatus {
    pub name: String,
    /// The `[[unit]]` pattern that adopted the unit; `null` for a unit named exactly.
    #[serde(default)]
    pub pattern: Option<String>,
    pub exists: bool,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub main_pid: u32,
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    pub restart: String,
    pub restarts: u64,
    /// Oldest first.
    pub history: Vec<Record>,
    /// The engine's picture: policy, stalls, scheduler, resources, probes.
    #[serde(default)]
    pub view: UnitView,
}

/// One request line on the status socket: `{"command": "...", "unit": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    command: String,
    #[serde(default)]
    unit: Option<String>,
}

/// Parses a request line as the server does (public for the fuzzer).
pub fn parse_request(line: &str) -> Result<Request, serde_json::Error> {
    serde_json::from_str(line)
}

/// How long a status request waits for the units' explanations before it answers without them.
const EXPLAIN_WAIT: Duration = Duration::from_secs(2);

/// Every unit's explanation, by name, asked of the engine: words are rendered on request, never
/// at a tick. Empty when the engine does not answer within [`EXPLAIN_WAIT`] (the rest of the
/// status is still worth having).
async fn explanations(commands: &mpsc::Sender<Command>) -> HashMap<String, String> {
    let (reply, answer) = oneshot::channel();
    if commands.send(Command::ExplainAll { reply }).await.is_err() {
        return HashMap::new();
    }
    match tokio::time::timeout(EXPLAIN_WAIT, answer).await {
        Ok(Ok(words)) => words.into_iter().collect(),
        _ => {
            warn!("status: the engine did not explain the units within {EXPLAIN_WAIT:?}");
            HashMap::new()
        }
    }
}

fn document(snapshot: &Snapshot, mut explained: HashMap<String, String>) -> StatusDoc {
    let now_ns = crate::sensors::ebpf::monotonic_ns();
    StatusDoc {
        health: super::health::assess(&snapshot.health_input()),
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: snapshot.started.elapsed().as_secs(),
            bus: match snapshot.bus {
                Bus::System => "system",
                Bus::User => "user",
            }
            .to_owned(),
            dry_run: snapshot.dry_run,
            http: snapshot.http_address.clone(),
        },
        kernel: KernelInfo {
            hooks: snapshot
                .hooks
                .iter()
                .map(|h| HookInfo {
                    hook: h.hook.to_owned(),
                    attached: h.attached,
                    detail: h.detail.clone(),
                })
                .collect(),
            counters: snapshot
                .kernel_counters
                .as_ref()
                .map(|c| {
                    c.snapshot()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect()
                })
                .unwrap_or_default(),
            tracked_tasks: snapshot.tracked_tasks.clone(),
        },
        units: snapshot
            .units
            .iter()
            .map(|u| UnitStatus {
                name: u.name.clone(),
                pattern: u.pattern.clone(),
                exists: u.exists,
                load_state: u.load_state.clone(),
                active_state: u.active_state.clone(),
                sub_state: u.sub_state.clone(),
                main_pid: u.main_pid,
                cgroup: u.cgroup.clone(),
                cgroup_id: u.cgroup_id,
                restart: u.restart.to_string(),
                restarts: u.history.restarts,
                history: u.history.records().cloned().collect(),
                view: {
                    let mut view = u.view.read_at(now_ns);
                    view.explain = explained.remove(&u.name).unwrap_or_default();
                    view
                },
            })
            .collect(),
        patterns: snapshot.patterns.clone(),
    }
}

/// Binds the socket: parent directory created, a stale socket replaced, mode 0600.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the status socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another selfheal agent is already running: {} answers (stop it, or set agent.status_socket)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale status socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the status socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to root", path.display()))?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    state: Snapshots,
    commands: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(answer(stream, state.clone(), commands.clone())); }
                Err(e) => warn!("status socket: {e}"),
            },
        }
    }
}

async fn answer(stream: UnixStream, state: Snapshots, commands: mpsc::Sender<Command>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let mut text = match reader.read_line(&mut line).await {
        Err(e) => {
            serde_json::json!({ "error": format!("cannot read the request: {e}") }).to_string()
        }
        Ok(_) => match parse_request(&line) {
            Ok(req) => handle(req, &state, &commands).await,
            Err(e) => serde_json::json!({
                "error": format!("malformed request: {e}; send {{\"command\":\"status\"}}")
            })
            .to_string(),
        },
    };
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

/// The answer to `req`, as JSON text.
async fn handle(req: Request, state: &Snapshots, commands: &mpsc::Sender<Command>) -> String {
    let unit = req.unit.clone().unwrap_or_default();
    let engine = |make: fn(String, oneshot::Sender<Result<String, String>>) -> Command| async move {
        let (tx, rx) = oneshot::channel();
        if commands.send(make(unit.clone(), tx)).await.is_err() {
            return serde_json::json!({ "error": "the agent is shutting down" });
        }
        match rx.await {
            Ok(Ok(text)) => serde_json::json!({ "unit": unit, "text": text }),
            Ok(Err(e)) => serde_json::json!({ "error": e }),
            Err(_) => serde_json::json!({ "error": "the agent dropped the request" }),
        }
    };
    let reply = match req.command.as_str() {
        // Written straight from the document: no JSON tree of every unit in between.
        "status" => {
            let explained = explanations(commands).await;
            let snapshot = state.borrow().clone();
            return serde_json::to_string(&document(&snapshot, explained)).unwrap_or_else(|e| {
                serde_json::json!({ "error": format!("cannot serialize the status: {e}") })
                    .to_string()
            });
        }
        "history" => {
            let snapshot = state.borrow().clone();
            let units: Vec<serde_json::Value> = snapshot
                .units
                .iter()
                .filter(|u| req.unit.as_ref().is_none_or(|n| *n == u.name))
                .map(|u| serde_json::json!({ "name": u.name, "history": u.history.records().collect::<Vec<_>>() }))
                .collect();
            if units.is_empty() {
                serde_json::json!({ "error": format!("{} is not monitored by this agent", req.unit.unwrap_or_default()) })
            } else {
                serde_json::json!({ "units": units })
            }
        }
        "explain" if req.unit.is_some() => {
            engine(|unit, reply| Command::Explain { unit, reply }).await
        }
        "reset" if req.unit.is_some() => engine(|unit, reply| Command::Reset { unit, reply }).await,
        "release" if req.unit.is_some() => {
            engine(|unit, reply| Command::Release { unit, reply }).await
        }
        "explain" | "reset" | "release" => {
            serde_json::json!({ "error": format!("\"{}\" needs a unit", req.command) })
        }
        other => serde_json::json!({
            "error": format!("unknown command \"{other}\"; expected status, history, explain, reset or release")
        }),
    };
    reply.to_string()
}

/// Sends one request to the agent at `path` and returns its JSON answer.
pub async fn request(
    path: &PathBuf,
    command: &str,
    unit: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let stream = connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut body = serde_json::json!({ "command": command, "unit": unit }).to_string();
    body.push('\n');
    write.write_all(body.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let value: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("the agent at {} sent malformed JSON", path.display()))?;
    if let Some(err) = value.get("error") {
        bail!(
            "{}",
            err.as_str().map_or_else(|| err.to_string(), str::to_owned)
        );
    }
    Ok(value)
}

async fn connect(path: &PathBuf) -> anyhow::Result<UnixStream> {
    match UnixStream::connect(path).await {
        Ok(stream) => Ok(stream),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            bail!(
                "no selfheal agent is running: nothing answers at {} ({e}). Start it with `selfheal-agent run` \
             (or `systemctl start selfheal`), or pass --socket if it uses another path",
                path.display()
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!(
                "cannot open {}: permission denied; the status socket is root-only, run as root",
                path.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("connecting to {}", path.display())),
    }
}

/// Asks the agent listening on `path` for its status.
pub async fn query(path: &PathBuf) -> anyhow::Result<StatusDoc> {
    let value = request(path, "status", None).await?;
    serde_json::from_value(value)
        .context("the agent's status has an unexpected shape (agent and CLI versions differ?)")
}
