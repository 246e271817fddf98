//! The engine: the loop around the [`Supervisor`]. It reads every input channel, hands each
//! input to the supervisor with the facts the tracker published about the unit, and carries
//! out the effects (see `perform.rs` and `actuator.rs`). The periodic sampling lives in
//! `tick.rs`; the decisions, in the supervisor.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use log::warn;
use tokio::sync::{mpsc, watch};

use super::{
    Shared,
    commands::Command,
    execute::Finished,
    persist,
    reload::Reload,
    supervisor::{self, Input, Resync, Supervisor, UnitFacts},
    tick::Readings,
};
use crate::{
    act::quarantine::Quarantine,
    detect::{Problem, ProblemKind, exit::ExitRules, leak::LeakDetector, stall::StallDetector},
    policy::{ScaledLimits, StartLimit, UnitContext, UnitPolicyStatus},
    report::{alert_out::AlertPusher, audit::Audit, metrics::Metrics, webhook::AlertObservation},
    sensors::{
        ebpf::{UnitExitCounts, UnitSockets, monotonic_ns},
        probes::ProbeReport,
        sched::SchedSensor,
    },
    units::{
        MonitoredUnit,
        tracker::{Request, UnitChange},
    },
};

/// Everything the engine is built from.
pub struct EngineParts {
    pub conn: zbus::Connection,
    pub state: Shared,
    pub manager_pid: Option<u32>,
    pub supervisor: Supervisor,
    pub sched: Option<SchedSensor>,
    pub sockets: Option<UnitSockets>,
    /// The kernel's per-unit exit counts; their `lost` makes a unit be resynced.
    pub unit_exits: Option<UnitExitCounts>,
    pub quarantine: Option<Quarantine>,
    pub metrics: Arc<Metrics>,
    pub audit: Audit,
    pub pusher: Option<Arc<AlertPusher>>,
    pub state_file: PathBuf,
    pub tick: Duration,
    pub v2_root: PathBuf,
    /// Unix time of the last tick, read by the watchdog: no tick, no ping.
    pub last_tick: Arc<std::sync::atomic::AtomicU64>,
    /// Fleet mode's gate (None when `[fleet]` is off).
    pub fleet: Option<Arc<crate::fleet::Gate>>,
    /// Requests to the unit tracker (adopt after a reload, unwatch a unit let go).
    pub tracker: mpsc::UnboundedSender<Request>,
    /// Each unit's probes and detectors, to the probe runner (at start, on reload).
    pub probe_sets: mpsc::UnboundedSender<crate::sensors::probes::ProbeSet>,
}

/// The inputs the engine reads.
pub struct Inputs {
    pub exits: mpsc::Receiver<selfheal_common::exit::ExitEvent>,
    pub probes: mpsc::Receiver<ProbeReport>,
    pub alerts: mpsc::Receiver<AlertObservation>,
    pub commands: mpsc::Receiver<Command>,
    /// Configs accepted on SIGHUP.
    pub reloads: mpsc::Receiver<Reload>,
    /// What the tracker says changed: units joining (adopted, added by a reload), systemd's
    /// state of a unit, its cgroup in the kernel filter, an adopted unit whose file is gone.
    pub changes: mpsc::UnboundedReceiver<UnitChange>,
}

pub struct Engine {
    pub(super) p: EngineParts,
    pub(super) stall: StallDetector,
    pub(super) leak: LeakDetector,
    /// Main pid last seen per unit by the sampler, to forget a previous incarnation's stalls
    /// and leaks.
    pub(super) main_pids: HashMap<u32, u32>,
    /// The limits systemd had before the agent first scaled each unit: what `scale` multiplies
    /// when the config names no bases.
    pub(super) scale_bases: HashMap<u32, ScaledLimits>,
    /// When each unit's open incident began, for `selfheal_recovery_duration_seconds`.
    pub(super) incidents: HashMap<u32, Instant>,
    /// Units whose published view was built while nothing about them was in progress or timed
    /// (`Policy::settled`, no stall, leak episode, incident or probe): it stays true until
    /// an input names the unit (`perform`, `publish_policy` take it out) or the config is
    /// reloaded, so while the unit is still (`SchedSensor::still`) it is neither sampled nor
    /// rebuilt.
    /// Shared with the pass that reads (see `tick.rs`); written through [`Self::unsettle`].
    pub(super) settled_views: Arc<HashSet<u32>>,
    /// The units the passes sample while the unit table stays as it was (see `tick.rs`).
    pub(super) plan: Option<Arc<super::tick::SamplePlan>>,
    /// What sampling each unit needs, built when its cgroup or the config changes.
    pub(super) sample_specs: HashMap<u32, Arc<super::tick::SampleSpec>>,
    /// The gauges last set for each unit (see `tick.rs`).
    pub(super) gauges: HashMap<u32, super::tick::UnitGauges>,
    pub(super) finished_tx: mpsc::Sender<Finished>,
    finished_rx: Option<mpsc::Receiver<Finished>>,
    /// A sampling pass is reading; its readings come back through `readings_tx`.
    pub(super) sampling: bool,
    /// Quiet units' last resource readings; with the pass while it reads.
    pub(super) reading_cache: Option<crate::sensors::resources::ReadingCache>,
    pub(super) readings_tx: mpsc::Sender<Readings>,
    readings_rx: Option<mpsc::Receiver<Readings>>,
    pub(super) dirty: bool,
    /// Lost exit records per unit already answered by a resync (see `lost_exits.rs`).
    pub(super) lost_seen: HashMap<u32, u64>,
    pub(super) resync_tx: mpsc::Sender<(u32, Resync)>,
    resync_rx: Option<mpsc::Receiver<(u32, Resync)>>,
    /// Exits whose role systemd was asked about, answered (see `exits.rs`).
    pub(super) roles_tx: mpsc::Sender<super::exits::Answered>,
    roles_rx: Option<mpsc::Receiver<super::exits::Answered>>,
    /// Units to let go once their action in progress ends (see `membership.rs`).
    pub(super) leaving: super::membership::Leaving,
}

impl Engine {
    pub fn new(parts: EngineParts) -> Self {
        let (finished_tx, finished_rx) = mpsc::channel(256);
        let (readings_tx, readings_rx) = mpsc::channel(1);
        let (resync_tx, resync_rx) = mpsc::channel(64);
        let (roles_tx, roles_rx) = mpsc::channel(256);
        Self {
            p: parts,
            stall: StallDetector::new(),
            leak: LeakDetector::new(),
            main_pids: HashMap::new(),
            scale_bases: HashMap::new(),
            incidents: HashMap::new(),
            settled_views: Arc::default(),
            plan: None,
            sample_specs: HashMap::new(),
            gauges: HashMap::new(),
            finished_tx,
            finished_rx: Some(finished_rx),
            sampling: false,
            reading_cache: Some(Default::default()),
            readings_tx,
            readings_rx: Some(readings_rx),
            dirty: false,
            lost_seen: HashMap::new(),
            resync_tx,
            resync_rx: Some(resync_rx),
            roles_tx,
            roles_rx: Some(roles_rx),
            leaving: HashMap::new(),
        }
    }

    pub async fn run(mut self, mut inputs: Inputs, mut shutdown: watch::Receiver<bool>) {
        let (Some(mut finished), Some(mut readings), Some(mut resyncs), Some(mut roles)) = (
            self.finished_rx.take(),
            self.readings_rx.take(),
            self.resync_rx.take(),
            self.roles_rx.take(),
        ) else {
            return;
        };
        let writer = persist::Writer::spawn(self.p.state_file.clone());
        let mut tick = tokio::time::interval(self.p.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Exits first: the exit an action causes must be seen before its outcome.
                biased;
                _ = shutdown.changed() => break,
                // A unit the tracker adopted joins before any record of it is read.
                Some(change) = inputs.changes.recv() => self.on_unit_change(change),
                Some(event) = inputs.exits.recv() => self.on_exit(event),
                Some(exit) = roles.recv() => self.on_role(exit),
                Some(done) = finished.recv() => self.finished(done),
                Some(report) = inputs.probes.recv() => self.on_probe(report),
                Some(alert) = inputs.alerts.recv() => self.on_alert(alert),
                Some(command) = inputs.commands.recv() => self.on_command(command),
                Some(reload) = inputs.reloads.recv() => self.on_reload(reload),
                _ = tick.tick() => self.on_tick(),
                Some(sampled) = readings.recv() => self.on_readings(sampled),
                Some((unit, resync)) = resyncs.recv() => self.on_resynced(unit, resync),
                // A backoff of 1 s must not wait for the next tick as well.
                _ = wake_at(self.p.supervisor.policy().next_due()) => self.feed(Input::Time),
            }
            if !self.leaving.is_empty() {
                self.finish_leaving();
            }
            if self.dirty {
                self.dirty = false;
                self.save(&writer);
            }
        }
        self.save(&writer);
        writer.close().await;
    }

    /// Hands the policy's state to the writer (serialized here, written off the async threads).
    fn save(&self, writer: &persist::Writer) {
        match persist::encode(self.p.supervisor.policy()) {
            Ok(text) => writer.submit(text),
            Err(e) => warn!("cannot save state to {}: {e}", self.p.state_file.display()),
        }
    }

    /// Hands one input to the supervisor and carries out what it asks.
    pub(super) fn feed(&mut self, input: Input) {
        let now = Instant::now();
        let fx = self.p.supervisor.handle(input, now);
        // Every policy change of a unit comes with a history entry or an action for it.
        let mut touched: Vec<u32> = fx.history.iter().map(|(u, _)| *u).collect();
        touched.extend(fx.run.iter().map(|w| w.unit));
        touched.sort_unstable();
        touched.dedup();
        let changed = fx.save;
        self.perform(fx);
        if changed {
            self.publish_policy(&touched, now);
        }
    }

    /// The unit's view must be rebuilt at the next pass (an input named it). The set is copied
    /// only if the pass that reads still holds it.
    pub(super) fn unsettle(&mut self, unit: u32) {
        if self.settled_views.contains(&unit) {
            Arc::make_mut(&mut self.settled_views).remove(&unit);
        }
    }

    /// The policy's view of the units an input changed, published at once: status and
    /// /health must not show an action in progress that has already ended (the rest of each
    /// unit's view, and any unit not named here, is published with the tick's readings).
    pub(super) fn publish_policy(&mut self, units: &[u32], now: Instant) {
        for index in units {
            self.unsettle(*index);
        }
        let policies: Vec<_> = units.iter().map(|u| self.policy_status(*u, now)).collect();
        let mut state = self.p.state.lock();
        for (&index, policy) in units.iter().zip(policies) {
            let Some(unit) = state.unit_mut(index) else {
                continue;
            };
            let view = unit.view_mut();
            view.escalated_problem = policy.as_ref().and_then(|p| p.escalated_problem.clone());
            view.policy = policy;
        }
    }

    /// Tells the supervisor what the tracker knows about the unit now.
    pub(super) fn sync_facts(&mut self, unit: u32) {
        let facts = self.p.state.lock().unit(unit).map(facts_of);
        if let Some(facts) = facts {
            let _ = self
                .p
                .supervisor
                .handle(Input::Facts { unit, facts }, Instant::now());
        }
    }

    /// A sampler's detector found a problem.
    pub(super) fn raise(&mut self, problem: Problem) {
        let (unit, detected_at) = (problem.unit, problem.detected_at);
        self.sync_facts(unit);
        self.feed(Input::Problem(problem));
        self.note_incident(unit, detected_at);
    }

    /// An incident the last input opened is timed from its problem's detection.
    pub(super) fn note_incident(&mut self, unit: u32, detected_at: Instant) {
        let open = self
            .p
            .supervisor
            .policy()
            .unit_status(unit, Instant::now())
            .is_some_and(|s| s.incident.is_some());
        if open {
            self.incidents.entry(unit).or_insert(detected_at);
        }
    }

    /// A problem went away.
    pub(super) fn cleared(&mut self, unit: u32, kind: &ProblemKind, evidence: &str) {
        self.feed(Input::Cleared {
            unit,
            kind: kind.clone(),
            evidence: evidence.to_owned(),
        });
    }

    fn on_probe(&mut self, report: ProbeReport) {
        let unit = match &report {
            ProbeReport::Result(r) => r.unit,
            ProbeReport::Finding(f) => f.unit,
        };
        self.sync_facts(unit);
        self.feed(Input::Probe(report));
        self.note_incident(unit, Instant::now());
    }

    fn on_alert(&mut self, alert: AlertObservation) {
        let unit = self.p.supervisor.index_of(&alert.unit_name);
        if let Some(unit) = unit {
            self.sync_facts(unit);
        }
        self.feed(Input::Alert(alert));
        if let Some(unit) = unit {
            self.note_incident(unit, Instant::now());
        }
    }

    fn on_command(&mut self, command: Command) {
        let (kind, unit, reply) = match command {
            Command::ExplainAll { reply } => {
                let _ = reply.send(self.explain_all());
                return;
            }
            Command::Explain { unit, reply } => (supervisor::Command::Explain, unit, reply),
            Command::Reset { unit, reply } => (supervisor::Command::Reset, unit, reply),
            Command::Release { unit, reply } => (supervisor::Command::Release, unit, reply),
        };
        let (answer, fx) =
            self.p
                .supervisor
                .command(kind, &unit, Instant::now(), SystemTime::now());
        self.perform(fx);
        let _ = reply.send(answer.map_err(|e| e.to_string()));
    }

    /// Every unit's explanation, by name, in the order the units are kept.
    fn explain_all(&self) -> Vec<(String, String)> {
        let units: Vec<(u32, String)> = self
            .p
            .state
            .lock()
            .live_units()
            .map(|(index, u)| (index, u.name.clone()))
            .collect();
        let (now, wall) = (Instant::now(), SystemTime::now());
        units
            .into_iter()
            .map(|(unit, name)| (name, self.p.supervisor.explain(unit, now, wall)))
            .collect()
    }

    /// The policy's status of `unit` as views keep it: the last action's age as an instant, so
    /// that a settled unit's view stays the same (see `LastActionStatus::as_instant`).
    pub(super) fn policy_status(&self, unit: u32, now: Instant) -> Option<UnitPolicyStatus> {
        let mut status = self.p.supervisor.policy().unit_status(unit, now)?;
        if let Some(last) = status.last_action.as_mut() {
            let since = Instant::now().saturating_duration_since(now);
            last.as_instant(monotonic_ns().saturating_sub(since.as_nanos() as u64));
        }
        Some(status)
    }

    pub(super) fn unit_name(&self, unit: u32) -> Option<String> {
        self.p.state.lock().unit(unit).map(|u| u.name.clone())
    }
}

/// Sleeps until `due` when it is still ahead, for ever otherwise: a due time already past is
/// one the policy could not act on yet (an action in flight, an escalated unit), and waking
/// for it again and again would spin; the regular tick retries it.
async fn wake_at(due: Option<Instant>) {
    match due.filter(|due| *due > Instant::now()) {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// What the supervisor needs from the tracker's picture of a unit.
fn facts_of(unit: &MonitoredUnit) -> UnitFacts {
    UnitFacts {
        main_pid: unit.systemd.main_pid,
        context: UnitContext {
            stopping: unit.stopping,
            start_limit: StartLimit {
                burst: unit.systemd.start_limit_burst,
                interval: Duration::from_micros(unit.systemd.start_limit_interval_us),
            },
        },
        exit_rules: ExitRules {
            success: unit.systemd.success_exit.clone(),
            restart_prevent: unit.systemd.restart_prevent.clone(),
        },
    }
}

/// "SIGKILL" for 9, and so on; "signal N" for numbers without a name.
pub fn signal_name(sig: u32) -> String {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match NAMES.get(sig as usize) {
        Some(name) if !name.is_empty() => (*name).to_owned(),
        _ => format!("signal {sig}"),
    }
}
