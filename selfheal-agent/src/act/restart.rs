//! Restart through systemd: `RestartUnit(name, "replace")`, wait for the job's result, then
//! check that the unit is really active. A main process that cannot answer the stop is ended
//! at once ([`prompt_stop`]) instead of after the unit's stop timeout.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use zbus::zvariant::OwnedObjectPath;

use super::{Outcome, prompt_stop};
use crate::systemd::{ManagerProxy, UnitSnapshot, read_snapshot};

/// How long a restart job may take before we call it failed.
const JOB_TIMEOUT: Duration = Duration::from_secs(90);

pub struct RestartRequest {
    pub unit: u32,
    pub name: String,
    pub object_path: OwnedObjectPath,
    pub delay: Duration,
    /// The unit as the tracker knows it from systemd's signals; `None` reads it first (two
    /// round trips before the restart is even asked for).
    pub known: Option<UnitSnapshot>,
}

pub async fn restart(conn: &zbus::Connection, req: RestartRequest) -> Outcome {
    let started = Instant::now();
    // 0 until RestartUnit is sent.
    let issued = AtomicU64::new(0);
    let outcome = |result, detail: String| Outcome {
        unit: req.unit,
        action: "restart",
        result,
        detail,
        duration: started.elapsed(),
        issued_ns: Some(issued.load(Ordering::Relaxed)).filter(|ns| *ns != 0),
    };
    if !req.delay.is_zero() {
        tokio::time::sleep(req.delay).await;
    }
    let before = match (req.known.clone(), req.delay.is_zero()) {
        // Right after the decision the tracker's picture is as fresh as a read would be.
        (Some(known), true) => Some(known),
        _ => read_snapshot(conn, &req.name, &req.object_path).await.ok(),
    };
    // A stop requested meanwhile (by an operator or systemd) wins over our restart.
    if before.as_ref().is_some_and(|s| s.job_type == "stop") {
        return outcome("skipped", "a stop job is pending on the unit".into());
    }
    let main_pid = before.as_ref().map_or(0, |s| s.main_pid);
    let unresponsive = prompt_stop::inspect(main_pid);
    let old_main = unresponsive.and_then(|_| prompt_stop::OldMain::open(main_pid));
    let mut notes = Vec::new();
    if let Some(why) = unresponsive {
        notes.push(prompt_stop::continue_all(conn, &req.name, why).await);
    }
    let (result, killed) = run_job(conn, &req.name, unresponsive, old_main.as_ref(), &issued).await;
    notes.extend(killed);
    notes.retain(|n| !n.is_empty());
    let forced = (!notes.is_empty()).then(|| notes.join("; "));
    let with_forced = |detail: String| match &forced {
        Some(note) => format!("{note}; {detail}"),
        None => detail,
    };
    match result {
        Err(detail) => outcome("failed", with_forced(detail)),
        Ok(job_result) if job_result != "done" => {
            let why = match read_snapshot(conn, &req.name, &req.object_path).await {
                Ok(after) => failure_reason(before.as_ref(), &after),
                Err(e) => e.to_string(),
            };
            outcome(
                "failed",
                with_forced(format!("restart job ended with \"{job_result}\": {why}")),
            )
        }
        Ok(_) => match read_snapshot(conn, &req.name, &req.object_path).await {
            Ok(s) if s.active_state == "active" => outcome(
                "done",
                with_forced(format!("active ({}), main pid {}", s.sub_state, s.main_pid)),
            ),
            Ok(s) => outcome(
                "failed",
                with_forced(format!(
                    "the unit is {} ({}) after the restart; systemd reports Result={}",
                    s.active_state, s.sub_state, s.result
                )),
            ),
            Err(e) => outcome(
                "failed",
                with_forced(format!("cannot verify the restart: {e}")),
            ),
        },
    }
}

/// systemd's reason for a failed start. When the unit never left the inactive state, systemd
/// refused the start outright; with a start limit configured that is `start-limit-hit`, which
/// systemd 252 does not put in `Result` when the unit had already failed.
fn failure_reason(before: Option<&UnitSnapshot>, after: &UnitSnapshot) -> String {
    let state = format!("{}/{}", after.active_state, after.sub_state);
    let never_started = before.is_some_and(|b| b.inactive_exit_us == after.inactive_exit_us);
    if after.result == "start-limit-hit" || (never_started && after.start_limit_burst > 0) {
        format!(
            "systemd refused to start it: start-limit-hit (at most {} starts per {:?}); {state}",
            after.start_limit_burst,
            Duration::from_micros(after.start_limit_interval_us)
        )
    } else {
        format!("systemd reports Result={} ({state})", after.result)
    }
}

/// Issues the restart, kills an unresponsive old main process once the job is queued, and
/// waits for the job to be removed; returns the job's result and what the kill did.
async fn run_job(
    conn: &zbus::Connection,
    name: &str,
    unresponsive: Option<prompt_stop::Unresponsive>,
    old_main: Option<&prompt_stop::OldMain>,
    issued: &AtomicU64,
) -> (Result<String, String>, Option<String>) {
    let mut killed = None;
    let result = wait_job(conn, name, unresponsive, old_main, &mut killed, issued).await;
    (result, killed)
}

async fn wait_job(
    conn: &zbus::Connection,
    name: &str,
    unresponsive: Option<prompt_stop::Unresponsive>,
    old_main: Option<&prompt_stop::OldMain>,
    killed: &mut Option<String>,
    issued: &AtomicU64,
) -> Result<String, String> {
    // No property cache: nothing but the two calls below goes over the bus.
    let manager = ManagerProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    // Listen before asking, so the JobRemoved signal cannot slip past.
    let mut removed = manager
        .receive_job_removed()
        .await
        .map_err(|e| e.to_string())?;
    issued.store(crate::sensors::ebpf::monotonic_ns(), Ordering::Relaxed);
    let job = manager
        .restart_unit(name, "replace")
        .await
        .map_err(|e| format!("RestartUnit({name}) refused: {e}"))?;
    // After the job is queued: killed earlier, the unit would fail on its own and systemd's
    // `Restart=` could race ours.
    if let Some(why) = unresponsive {
        *killed = Some(prompt_stop::kill_old(old_main, why));
    }
    let wait = async {
        while let Some(signal) = removed.next().await {
            if let Ok(args) = signal.args()
                && *args.job() == *job
            {
                return Ok(args.result().to_string());
            }
        }
        Err("the bus connection closed while waiting for the restart job".to_owned())
    };
    match tokio::time::timeout(JOB_TIMEOUT, wait).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "the restart job did not finish within {JOB_TIMEOUT:?}"
        )),
    }
}
