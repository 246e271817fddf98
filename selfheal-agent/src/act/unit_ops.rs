//! The systemd operations behind fallback, scale and freeze: start/stop a unit and wait for its
//! job, freeze/thaw, and set resource properties at runtime.

use std::{path::Path, time::Duration};

use futures_util::StreamExt as _;
use zbus::zvariant::Value;

use crate::systemd::ManagerProxy;

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// Starts or stops `unit` and waits for the job; Ok(result) is systemd's job result ("done"…).
pub async fn run_job(conn: &zbus::Connection, verb: &str, unit: &str) -> Result<String, String> {
    let manager = ManagerProxy::new(conn).await.map_err(|e| e.to_string())?;
    let mut removed = manager
        .receive_job_removed()
        .await
        .map_err(|e| e.to_string())?;
    let job = match verb {
        "start" => manager.start_unit(unit, "replace").await,
        "stop" => manager.stop_unit(unit, "replace").await,
        "restart" => manager.restart_unit(unit, "replace").await,
        other => return Err(format!("unknown job verb {other}")),
    }
    .map_err(|e| format!("{verb} {unit} refused: {e}"))?;
    let wait = async {
        while let Some(signal) = removed.next().await {
            if let Ok(args) = signal.args()
                && *args.job() == *job
            {
                return Ok(args.result().to_string());
            }
        }
        Err("the bus connection closed while waiting for the job".to_owned())
    };
    match tokio::time::timeout(JOB_TIMEOUT, wait).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the {verb} job of {unit} did not finish within {JOB_TIMEOUT:?}"
        )),
    }
}

/// Starts `unit` (a fallback, an instance) and checks it is running: a "done" job only says
/// the start ran, while a unit that exited at once has not taken over anything. Ok(note) with
/// the state read back; Err with the evidence otherwise.
pub async fn start_verified(conn: &zbus::Connection, unit: &str) -> Result<String, String> {
    match run_job(conn, "start", unit).await? {
        r if r == "done" => {}
        r => return Err(format!("job ended with \"{r}\"")),
    }
    let state = active_state(conn, unit).await?;
    match state.as_str() {
        "active" | "reloading" => Ok(format!("{unit} is {state} after the job")),
        _ => Err(format!(
            "the start job of {unit} ended \"done\" but the unit is {state}, not active"
        )),
    }
}

/// The unit's ActiveState, read from systemd now (no cached property).
async fn active_state(conn: &zbus::Connection, unit: &str) -> Result<String, String> {
    let failed = |e: zbus::Error| format!("reading the ActiveState of {unit}: {e}");
    let manager = ManagerProxy::new(conn).await.map_err(failed)?;
    let path = match manager.get_unit(unit).await {
        Ok(path) => path,
        // An inactive unit may already be unloaded (garbage-collected): that is its state.
        Err(zbus::Error::MethodError(name, _, _)) if name.as_str().ends_with("NoSuchUnit") => {
            return Ok("inactive (unloaded)".into());
        }
        Err(e) => return Err(failed(e)),
    };
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination("org.freedesktop.systemd1")
        .and_then(|b| b.path(path))
        .map_err(failed)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(failed)?;
    let interface =
        zbus::names::InterfaceName::from_static_str_unchecked("org.freedesktop.systemd1.Unit");
    let value = props
        .get(interface, "ActiveState")
        .await
        .map_err(|e| failed(e.into()))?;
    String::try_from(value).map_err(|e| failed(e.into()))
}

/// How long the kernel gets to report a cgroup frozen or thawed.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);
const NOT_SUPPORTED: &str = "org.freedesktop.DBus.Error.NotSupported";

/// Freezes or thaws `unit` with systemd's FreezeUnit/ThawUnit. Where systemd cannot (its
/// freezer wants cgroup v2 for every controller, so not on the hybrid layout), the unit's v2
/// cgroup `cgroup_dir` is frozen directly through `cgroup.freeze`. Returns a note saying so.
pub async fn freeze(
    conn: &zbus::Connection,
    unit: &str,
    frozen: bool,
    cgroup_dir: Option<&Path>,
) -> Result<String, String> {
    let manager = ManagerProxy::new(conn).await.map_err(|e| e.to_string())?;
    let (result, verb) = if frozen {
        (manager.freeze_unit(unit).await, "FreezeUnit")
    } else {
        (manager.thaw_unit(unit).await, "ThawUnit")
    };
    match result {
        // systemd answers before every task reached the freezer: read the kernel's word.
        Ok(()) => match cgroup_dir.filter(|dir| dir.join("cgroup.events").exists()) {
            Some(dir) => wait_frozen(dir, frozen)
                .await
                .map(|()| format!("{}/cgroup.events confirms it", dir.display())),
            None => Ok(String::new()),
        },
        Err(e) if is_not_supported(&e) => {
            let Some(dir) = cgroup_dir else {
                return Err(format!(
                    "{verb} {unit}: {e}; and the unit has no cgroup to freeze directly"
                ));
            };
            cgroup_freeze(dir, frozen).await?;
            Ok(format!(
                "through {}/cgroup.freeze (systemd cannot freeze units on this host)",
                dir.display()
            ))
        }
        Err(e) => Err(format!("{verb} {unit}: {e}")),
    }
}

fn is_not_supported(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::MethodError(name, _, _) => name.as_str() == NOT_SUPPORTED,
        zbus::Error::FDO(e) => matches!(**e, zbus::fdo::Error::NotSupported(_)),
        _ => false,
    }
}

/// Writes the cgroup v2 freezer and waits until `cgroup.events` confirms it: freezing takes
/// effect once every task has reached a safe point.
async fn cgroup_freeze(dir: &Path, frozen: bool) -> Result<(), String> {
    let control = dir.join("cgroup.freeze");
    tokio::fs::write(&control, if frozen { "1" } else { "0" })
        .await
        .map_err(|e| format!("writing {}: {e}", control.display()))?;
    wait_frozen(dir, frozen).await
}

/// Waits until the v2 cgroup's `cgroup.events` says `frozen 1` (or `frozen 0`), woken by the
/// kernel's notification of the change.
async fn wait_frozen(dir: &Path, frozen: bool) -> Result<(), String> {
    let wanted = if frozen { "frozen 1" } else { "frozen 0" };
    super::cgroup_events::wait_for_line(&dir.join("cgroup.events"), wanted, FREEZE_TIMEOUT)
        .await
        .map_err(|e| format!("{e} after writing {}", dir.join("cgroup.freeze").display()))
}

/// Resource limits set at runtime (not persisted in unit files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// CPU time per second of wall time, in µs (CPUQuota=50% is 500_000).
    pub cpu_quota_per_sec_us: Option<u64>,
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub tasks_max: Option<u64>,
}

pub async fn set_limits(conn: &zbus::Connection, unit: &str, limits: Limits) -> Result<(), String> {
    let manager = ManagerProxy::new(conn).await.map_err(|e| e.to_string())?;
    let mut properties: Vec<(&str, Value<'_>)> = Vec::new();
    if let Some(v) = limits.cpu_quota_per_sec_us {
        properties.push(("CPUQuotaPerSecUSec", Value::U64(v)));
    }
    if let Some(v) = limits.memory_max {
        properties.push(("MemoryMax", Value::U64(v)));
    }
    if let Some(v) = limits.memory_high {
        properties.push(("MemoryHigh", Value::U64(v)));
    }
    if let Some(v) = limits.tasks_max {
        properties.push(("TasksMax", Value::U64(v)));
    }
    if properties.is_empty() {
        return Ok(());
    }
    manager
        .set_unit_properties(unit, true, &properties)
        .await
        .map_err(|e| format!("SetUnitProperties({unit}): {e}"))
}
