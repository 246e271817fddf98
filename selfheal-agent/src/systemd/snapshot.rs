//! One consistent read of the unit properties the agent cares about.

use std::collections::HashMap;

use serde::Serialize;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use super::{SystemdError, type_interface};

/// What systemd says about a unit at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnitSnapshot {
    /// "loaded", "not-found", "masked", "error"…
    pub load_state: String,
    /// "active", "inactive", "failed", "activating", "deactivating", "reloading"…
    pub active_state: String,
    pub sub_state: String,
    /// Cgroup path relative to the v2 root, empty while the unit has no processes.
    pub control_group: String,
    /// The slice the unit lives in, e.g. "system.slice".
    pub slice: String,
    pub main_pid: u32,
    /// PID of the last main process, kept by systemd after it exited.
    pub exec_main_pid: u32,
    /// How that process ended: CLD_EXITED (1), CLD_KILLED (2), CLD_DUMPED (3); 0 while it runs.
    pub exec_main_code: i32,
    /// Its exit status (CLD_EXITED) or the signal that killed it.
    pub exec_main_status: i32,
    /// systemd's verdict on the last run: "success", "exit-code", "signal", "start-limit-hit"…
    pub result: String,
    /// Type of the job pending on the unit ("start", "stop", "restart"…), empty when none.
    pub job_type: String,
    /// When the unit last left the inactive state (CLOCK_MONOTONIC µs): unchanged after a
    /// start that systemd refused outright, such as one over its start limit.
    pub inactive_exit_us: u64,
    /// systemd's own rate limit on starts: at most `start_limit_burst` starts per interval.
    pub start_limit_burst: u32,
    pub start_limit_interval_us: u64,
    /// Resource limits systemd applies (u64::MAX: none).
    pub memory_max: u64,
    pub memory_high: u64,
    pub tasks_max: u64,
    /// CPUQuota= as CPU time per second of wall time, µs (u64::MAX: none).
    pub cpu_quota_per_sec_us: u64,
    /// `SuccessExitStatus=`: exits that count as clean besides status 0 and SIGHUP, SIGINT,
    /// SIGTERM, SIGPIPE.
    pub success_exit: ExitStatusSet,
    /// `RestartPreventExitStatus=`: exits after which `Restart=on-failure` does not restart.
    pub restart_prevent: ExitStatusSet,
}

/// Exit statuses and signals, as systemd's `(aiai)` exit-status properties list them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExitStatusSet {
    pub statuses: Vec<i32>,
    pub signals: Vec<i32>,
}

impl ExitStatusSet {
    /// Whether an exit with this status (or by this signal) is in the set.
    pub fn contains(&self, status: Option<u32>, signal: Option<u32>) -> bool {
        let has = |list: &[i32], v: Option<u32>| {
            v.and_then(|v| i32::try_from(v).ok())
                .is_some_and(|v| list.contains(&v))
        };
        match signal {
            Some(_) => has(&self.signals, signal),
            None => has(&self.statuses, status),
        }
    }
}

fn exit_statuses(props: &HashMap<String, OwnedValue>, key: &str) -> ExitStatusSet {
    props
        .get(key)
        .and_then(|v| <(Vec<i32>, Vec<i32>)>::try_from(v.clone()).ok())
        .map(|(statuses, signals)| ExitStatusSet { statuses, signals })
        .unwrap_or_default()
}

fn string(props: &HashMap<String, OwnedValue>, key: &str) -> String {
    props
        .get(key)
        .and_then(|v| String::try_from(v.clone()).ok())
        .unwrap_or_default()
}

fn uint(props: &HashMap<String, OwnedValue>, key: &str) -> u32 {
    props
        .get(key)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or_default()
}

fn int(props: &HashMap<String, OwnedValue>, key: &str) -> i32 {
    props
        .get(key)
        .and_then(|v| i32::try_from(v).ok())
        .unwrap_or_default()
}

fn uint64(props: &HashMap<String, OwnedValue>, key: &str) -> u64 {
    props
        .get(key)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or_default()
}

/// Reads the unit's generic and type-specific properties (two GetAll calls).
pub async fn read_snapshot(
    conn: &zbus::Connection,
    unit: &str,
    path: &OwnedObjectPath,
) -> Result<UnitSnapshot, SystemdError> {
    let call_err = |source| SystemdError::Call {
        call: "GetAll",
        unit: unit.to_owned(),
        source,
    };
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination("org.freedesktop.systemd1")
        .map_err(call_err)?
        .path(path.clone())
        .map_err(call_err)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(call_err)?;
    let generic = props
        .get_all(
            "org.freedesktop.systemd1.Unit"
                .try_into()
                .map_err(|e: zbus::names::Error| call_err(e.into()))?,
        )
        .await
        .map_err(|e| call_err(e.into()))?;
    let mut snapshot = UnitSnapshot {
        load_state: string(&generic, "LoadState"),
        active_state: string(&generic, "ActiveState"),
        sub_state: string(&generic, "SubState"),
        inactive_exit_us: uint64(&generic, "InactiveExitTimestampMonotonic"),
        start_limit_burst: uint(&generic, "StartLimitBurst"),
        start_limit_interval_us: uint64(&generic, "StartLimitIntervalUSec"),
        ..UnitSnapshot::default()
    };
    if let Some(job) = generic.get("Job")
        && let Ok((id, job_path)) = <(u32, OwnedObjectPath)>::try_from(job.clone())
        && id != 0
    {
        snapshot.job_type = super::JobProxy::builder(conn)
            .path(job_path)
            .map_err(call_err)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(call_err)?
            .job_type()
            .await
            .unwrap_or_default();
    }
    if let Some(iface) = type_interface(unit) {
        let specific = props
            .get_all(
                iface
                    .try_into()
                    .map_err(|e: zbus::names::Error| call_err(e.into()))?,
            )
            .await
            .map_err(|e| call_err(e.into()))?;
        snapshot.control_group = string(&specific, "ControlGroup");
        snapshot.slice = string(&specific, "Slice");
        snapshot.main_pid = uint(&specific, "MainPID");
        snapshot.exec_main_pid = uint(&specific, "ExecMainPID");
        snapshot.exec_main_code = int(&specific, "ExecMainCode");
        snapshot.exec_main_status = int(&specific, "ExecMainStatus");
        snapshot.result = string(&specific, "Result");
        snapshot.memory_max = uint64(&specific, "MemoryMax");
        snapshot.memory_high = uint64(&specific, "MemoryHigh");
        snapshot.tasks_max = uint64(&specific, "TasksMax");
        snapshot.cpu_quota_per_sec_us = uint64(&specific, "CPUQuotaPerSecUSec");
        snapshot.success_exit = exit_statuses(&specific, "SuccessExitStatus");
        snapshot.restart_prevent = exit_statuses(&specific, "RestartPreventExitStatus");
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_status_set_matches_statuses_and_signals_separately() {
        let set = ExitStatusSet {
            statuses: vec![3, 75],
            signals: vec![libc::SIGUSR1],
        };
        assert!(set.contains(Some(75), None));
        assert!(!set.contains(Some(4), None));
        assert!(set.contains(None, Some(libc::SIGUSR1 as u32)));
        // A death by signal 3 (SIGQUIT) is not exit status 3.
        assert!(!set.contains(None, Some(3)));
        assert!(!ExitStatusSet::default().contains(Some(0), None));
    }

    #[test]
    fn systemds_aiai_value_is_read_into_the_set() {
        let value = zbus::zvariant::Value::from((vec![3i32, 75], vec![10i32]));
        let props = HashMap::from([(
            "SuccessExitStatus".to_owned(),
            OwnedValue::try_from(value).expect("owned"),
        )]);
        let set = exit_statuses(&props, "SuccessExitStatus");
        assert_eq!(set.statuses, [3, 75]);
        assert_eq!(set.signals, [10]);
        assert_eq!(exit_statuses(&props, "Missing"), ExitStatusSet::default());
    }
}
