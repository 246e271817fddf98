//! One tokio task per probe and per detector, each with its own interval: a probe that hangs
//! until its timeout holds up only its own next attempt. The runner takes each unit's set from
//! the engine and replaces it when a reload changes it.

use std::{collections::HashMap, future::Future, time::Instant};

use log::{info, warn};
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::{AbortHandle, JoinSet},
    time::{self, Interval, MissedTickBehavior},
};

use super::{
    Check, CustomFinding, DetectorSpec, HostPort, ProbeReport, ProbeResult, ProbeSpec,
    custom::{self, Verdict},
    exec::{self, io_text},
    http,
};

/// One unit's probes and detectors: they replace whatever ran for the unit (an empty set stops
/// them).
#[derive(Debug, Default)]
pub struct ProbeSet {
    pub unit: u32,
    pub probes: Vec<ProbeSpec>,
    pub detectors: Vec<DetectorSpec>,
}

impl ProbeSet {
    /// One unit's set from its probe and detector tables (see [`super::specs`]).
    pub fn of(
        unit: u32,
        unit_name: &str,
        probes: &[super::ProbeConfig],
        detectors: &[super::DetectorConfig],
    ) -> Result<Self, super::ProbeConfigError> {
        let (probes, detectors) = super::specs(unit, unit_name, probes, detectors)?;
        Ok(Self {
            unit,
            probes,
            detectors,
        })
    }
}

/// Starts every probe and detector; each task ends when `shutdown` turns true (or its sender
/// is dropped) or `reports` is closed. Dropping the set aborts them.
pub fn spawn_probes(
    probes: Vec<ProbeSpec>,
    detectors: Vec<DetectorSpec>,
    reports: mpsc::Sender<ProbeReport>,
    shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    spawn_set(
        &mut tasks,
        ProbeSet {
            unit: 0,
            probes,
            detectors,
        },
        &reports,
        &shutdown,
    );
    tasks
}

/// Spawns the set's tasks into `tasks`; returns their handles.
fn spawn_set(
    tasks: &mut JoinSet<()>,
    set: ProbeSet,
    reports: &mpsc::Sender<ProbeReport>,
    shutdown: &watch::Receiver<bool>,
) -> Vec<AbortHandle> {
    let mut handles = Vec::new();
    for spec in set.probes {
        handles.push(tasks.spawn(run_probe(spec, reports.clone(), shutdown.clone())));
    }
    for spec in set.detectors {
        handles.push(tasks.spawn(run_detector(spec, reports.clone(), shutdown.clone())));
    }
    handles
}

/// Runs each unit's set as the engine sends it, a new set for a unit replacing its old one,
/// until `shutdown` turns true or the engine drops its sender; then stops every task.
pub async fn run_probes(
    mut sets: mpsc::UnboundedReceiver<ProbeSet>,
    reports: mpsc::Sender<ProbeReport>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    let mut by_unit: HashMap<u32, Vec<AbortHandle>> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            set = sets.recv() => {
                let Some(set) = set else { break };
                for task in by_unit.remove(&set.unit).unwrap_or_default() {
                    task.abort();
                }
                let unit = set.unit;
                let handles = spawn_set(&mut tasks, set, &reports, &shutdown);
                if !handles.is_empty() {
                    by_unit.insert(unit, handles);
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.shutdown().await;
}

async fn run_probe(
    spec: ProbeSpec,
    reports: mpsc::Sender<ProbeReport>,
    shutdown: watch::Receiver<bool>,
) {
    let mut schedule = Schedule::new(spec.interval, shutdown);
    while let Some(report) = schedule.next(probe_once(&spec)).await {
        if !schedule.send(&reports, ProbeReport::Result(report)).await {
            return;
        }
    }
}

pub(super) async fn probe_once(spec: &ProbeSpec) -> ProbeResult {
    let started = Instant::now();
    let verdict = attempt(spec).await;
    let at = Instant::now();
    let (ok, detail) = match verdict {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    ProbeResult {
        unit: spec.unit,
        probe: spec.name.clone(),
        ok,
        latency: at - started,
        detail,
        at,
        dependency: spec.dependency,
    }
}

/// `Ok(detail)` when healthy, `Err(detail)` when not; never longer than the timeout.
async fn attempt(spec: &ProbeSpec) -> Result<String, String> {
    let timeout = spec.timeout;
    let timed_out = |_| Err(format!("timed out after {timeout:?}"));
    match &spec.check {
        Check::Http {
            url,
            expect_status,
            body_contains,
        } => {
            let check = http::check(url, *expect_status, body_contains.as_deref());
            time::timeout(timeout, check)
                .await
                .unwrap_or_else(timed_out)
        }
        Check::Tcp { address } => time::timeout(timeout, connect(address))
            .await
            .unwrap_or_else(timed_out),
        Check::Exec { command } => match exec::run(command, &spec.unit_name, timeout).await {
            Ok(run) if run.status.success() => Ok(run.describe()),
            Ok(run) => Err(run.describe()),
            Err(error) => Err(error.to_string()),
        },
    }
}

async fn connect(address: &HostPort) -> Result<String, String> {
    match TcpStream::connect((address.host.as_str(), address.port)).await {
        Ok(_) => Ok(format!("connected to {address}")),
        Err(e) => Err(format!("cannot connect to {address}: {}", io_text(&e))),
    }
}

async fn run_detector(
    spec: DetectorSpec,
    reports: mpsc::Sender<ProbeReport>,
    shutdown: watch::Receiver<bool>,
) {
    let mut schedule = Schedule::new(spec.interval, shutdown);
    // A command that cannot run is the operator's to fix, not a problem of the unit: it is
    // logged (once per distinct error), and no finding is sent.
    let mut failing: Option<String> = None;
    let who = format!("{}: detector {:?}", spec.unit_name, spec.name);
    while let Some(outcome) = schedule
        .next(exec::run(&spec.command, &spec.unit_name, spec.timeout))
        .await
    {
        let run = match outcome {
            Ok(run) => run,
            Err(error) => {
                let text = error.to_string();
                if failing.as_ref() != Some(&text) {
                    warn!("{who}: {text}; no verdict until it runs");
                }
                failing = Some(text);
                continue;
            }
        };
        if failing.take().is_some() {
            info!("{who}: runs again");
        }
        let (ok, kind, evidence) = match custom::verdict(&run, &spec.kind) {
            Verdict::Healthy { evidence } => (true, spec.kind.clone(), evidence),
            Verdict::Problem { kind, evidence } => (false, kind, evidence),
        };
        let finding = CustomFinding {
            unit: spec.unit,
            detector: spec.name.clone(),
            kind,
            evidence,
            at: Instant::now(),
            ok,
        };
        if !schedule.send(&reports, ProbeReport::Finding(finding)).await {
            return;
        }
    }
}

/// A task's clock and its way out.
struct Schedule {
    ticks: Interval,
    shutdown: watch::Receiver<bool>,
}

impl Schedule {
    fn new(period: std::time::Duration, shutdown: watch::Receiver<bool>) -> Self {
        let mut ticks = time::interval(period);
        // After an attempt that overran the interval, keep a full interval between attempts
        // rather than firing the missed ones in a burst.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { ticks, shutdown }
    }

    /// Runs `work` at the next tick; `None` once shutdown is asked for, even mid-attempt.
    async fn next<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let ticks = &mut self.ticks;
        tokio::select! {
            biased;
            () = stopped(&mut self.shutdown) => None,
            out = async {
                ticks.tick().await;
                work.await
            } => Some(out),
        }
    }

    /// `false` when the receiver is gone or shutdown was asked for while waiting for room.
    async fn send(&mut self, reports: &mpsc::Sender<ProbeReport>, report: ProbeReport) -> bool {
        tokio::select! {
            biased;
            () = stopped(&mut self.shutdown) => false,
            sent = reports.send(report) => sent.is_ok(),
        }
    }
}

/// Returns once shutdown is asked for or can no longer be (the sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
