//! The systemd operations behind fallback, scale and freeze: start/stop a unit and wait for its
//! job, freeze/thaw, and set resource properties at runtime.

use std::time::Duration;

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

pub async fn freeze(conn: &zbus::Connection, unit: &str, frozen: bool) -> Result<(), String> {
    let manager = ManagerProxy::new(conn).await.map_err(|e| e.to_string())?;
    let result = if frozen {
        manager.freeze_unit(unit).await
    } else {
        manager.thaw_unit(unit).await
    };
    result.map_err(|e| {
        format!(
            "{} {unit}: {e}",
            if frozen { "FreezeUnit" } else { "ThawUnit" }
        )
    })
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
