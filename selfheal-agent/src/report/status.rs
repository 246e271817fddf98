//! The status socket: a unix socket (root-only, 0600) where the running agent answers
//! `selfheal-agent status` with a JSON document, one request per connection.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use log::warn;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};

use super::history::Record;
use crate::{daemon::Shared, systemd::Bus};

/// Longest request line the server reads.
const MAX_REQUEST: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusDoc {
    pub agent: AgentInfo,
    pub kernel: KernelInfo,
    pub units: Vec<UnitStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// "system" or "user".
    pub bus: String,
    pub dry_run: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct KernelInfo {
    pub hooks: Vec<HookInfo>,
    /// The kernel programs' counters (see `selfheal_common::counters`), summed over CPUs.
    pub counters: BTreeMap<String, u64>,
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
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    command: String,
}

fn document(state: &Shared) -> StatusDoc {
    let state = state.lock();
    StatusDoc {
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: state.started.elapsed().as_secs(),
            bus: match state.bus {
                Bus::System => "system",
                Bus::User => "user",
            }
            .to_owned(),
            dry_run: state.dry_run,
        },
        kernel: KernelInfo {
            hooks: state
                .hooks
                .iter()
                .map(|h| HookInfo {
                    hook: h.hook.to_owned(),
                    attached: h.attached,
                    detail: h.detail.clone(),
                })
                .collect(),
            counters: state
                .kernel_counters
                .as_ref()
                .map(|c| {
                    c.snapshot()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect()
                })
                .unwrap_or_default(),
        },
        units: state
            .units
            .iter()
            .map(|u| UnitStatus {
                name: u.name.clone(),
                exists: u.exists(),
                load_state: u.systemd.load_state.clone(),
                active_state: u.systemd.active_state.clone(),
                sub_state: u.systemd.sub_state.clone(),
                main_pid: u.systemd.main_pid,
                cgroup: u.watched_cgroup.clone(),
                cgroup_id: u.cgroup_id,
                restart: u.policy.restart.to_string(),
                restarts: u.history.restarts,
                history: u.history.records().cloned().collect(),
            })
            .collect(),
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

pub async fn serve(listener: UnixListener, state: Shared, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(answer(stream, state.clone())); }
                Err(e) => warn!("status socket: {e}"),
            },
        }
    }
}

async fn answer(stream: UnixStream, state: Shared) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let reply = match reader.read_line(&mut line).await {
        Err(e) => serde_json::json!({ "error": format!("cannot read the request: {e}") }),
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(req) if req.command == "status" => {
                serde_json::to_value(document(&state)).unwrap_or_default()
            }
            Ok(req) => {
                serde_json::json!({ "error": format!("unknown command \"{}\"; expected \"status\"", req.command) })
            }
            Err(e) => {
                serde_json::json!({ "error": format!("malformed request: {e}; send {{\"command\":\"status\"}}") })
            }
        },
    };
    let mut text = reply.to_string();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

/// Asks the agent listening on `path` for its status.
pub async fn query(path: &PathBuf) -> anyhow::Result<StatusDoc> {
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
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
        Err(e) => return Err(e).with_context(|| format!("connecting to {}", path.display())),
    };
    let (read, mut write) = stream.into_split();
    write.write_all(b"{\"command\":\"status\"}\n").await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let value: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("the agent at {} sent malformed JSON", path.display()))?;
    if let Some(err) = value.get("error") {
        bail!("the agent refused the request: {err}");
    }
    serde_json::from_value(value)
        .context("the agent's status has an unexpected shape (agent and CLI versions differ?)")
}
