//! The engine: observations → detectors → policy → actuators, and outcomes back to the policy.
//! It owns the pure parts (detectors, policy) and calls the impure ones (sensors, actuators)
//! around them; everything it learns is published to the shared state for status and health.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use log::{info, warn};
use selfheal_common::exit::ExitEvent;
use tokio::sync::{mpsc, watch};

use super::{
    Shared,
    commands::Command,
    execute::{Finished, Target, execute_gated},
    persist,
};
use crate::{
    act::quarantine::Quarantine,
    detect::{
        Problem, ProblemKind,
        exit::{ExitFacts, ExitRules, judge},
        leak::LeakDetector,
        probe::{ProbeDetector, ProbeEvent},
        stall::StallDetector,
    },
    policy::{Action, ActionOutcome, Decision, Policy, StartLimit, UnitContext},
    report::{
        alert_out::AlertPusher,
        audit::{Audit, AuditRecord},
        history::Event,
        metrics::Metrics,
        webhook::AlertObservation,
    },
    sensors::{
        ebpf::{UnitSockets, monotonic_ns},
        probes::ProbeReport,
        sched::SchedSensor,
    },
    systemd::read_snapshot,
    units::ProcessRole,
};

/// Everything the engine is built from.
pub struct EngineParts {
    pub conn: zbus::Connection,
    pub state: Shared,
    pub manager_pid: Option<u32>,
    pub dry_run: bool,
    pub policy: Policy,
    pub probes: ProbeDetector,
    pub sched: Option<SchedSensor>,
    pub sockets: Option<UnitSockets>,
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
}

/// The inputs the engine reads.
pub struct Inputs {
    pub exits: mpsc::Receiver<ExitEvent>,
    pub probes: mpsc::Receiver<ProbeReport>,
    pub alerts: mpsc::Receiver<AlertObservation>,
    pub commands: mpsc::Receiver<Command>,
}

pub struct Engine {
    pub(super) p: EngineParts,
    pub(super) stall: StallDetector,
    pub(super) leak: LeakDetector,
    /// Actions running per unit: exits they cause are not problems.
    pub(super) acting: HashMap<u32, usize>,
    /// Main pid last seen per unit, to notice (re)starts for the probes' grace period.
    pub(super) main_pids: HashMap<u32, u32>,
    /// The problem kind each escalated unit was escalated for (the policy keeps only the
    /// reason), so /health and status can name it.
    pub(super) escalated: HashMap<u32, String>,
    /// The limits systemd had before the agent first scaled each unit: what `scale` multiplies
    /// when the config names no bases.
    scale_bases: HashMap<u32, crate::policy::ScaledLimits>,
    /// When each unit's open incident began, for `selfheal_recovery_duration_seconds`.
    pub(super) incidents: HashMap<u32, Instant>,
    finished_tx: mpsc::Sender<Finished>,
    finished_rx: Option<mpsc::Receiver<Finished>>,
    dirty: bool,
}

impl Engine {
    pub fn new(parts: EngineParts) -> Self {
        let (finished_tx, finished_rx) = mpsc::channel(256);
        Self {
            p: parts,
            stall: StallDetector::new(),
            leak: LeakDetector::new(),
            acting: HashMap::new(),
            main_pids: HashMap::new(),
            escalated: HashMap::new(),
            scale_bases: HashMap::new(),
            incidents: HashMap::new(),
            finished_tx,
            finished_rx: Some(finished_rx),
            dirty: false,
        }
    }

    pub async fn run(mut self, mut inputs: Inputs, mut shutdown: watch::Receiver<bool>) {
        let Some(mut finished) = self.finished_rx.take() else {
            return;
        };
        let mut tick = tokio::time::interval(self.p.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Exits first: the exit an action causes must be seen before its outcome.
                biased;
                _ = shutdown.changed() => break,
                Some(event) = inputs.exits.recv() => self.on_exit(event).await,
                Some(done) = finished.recv() => self.on_finished(done),
                Some(report) = inputs.probes.recv() => self.on_probe(report),
                Some(alert) = inputs.alerts.recv() => self.on_alert(alert),
                Some(command) = inputs.commands.recv() => self.on_command(command),
                _ = tick.tick() => self.on_tick().await,
                // A backoff of 1 s must not wait for the next tick as well.
                _ = wake_at(self.p.policy.next_due()) => self.on_due(),
            }
            if self.dirty {
                self.dirty = false;
                if let Err(e) = persist::save(&self.p.policy, &self.p.state_file) {
                    warn!("cannot save state to {}: {e}", self.p.state_file.display());
                }
            }
        }
        if let Err(e) = persist::save(&self.p.policy, &self.p.state_file) {
            warn!("cannot save state to {}: {e}", self.p.state_file.display());
        }
    }

    async fn on_exit(&mut self, event: ExitEvent) {
        // Both clocks are CLOCK_MONOTONIC; taken first, before any D-Bus round trip below.
        let kernel_to_agent_us = monotonic_ns().saturating_sub(event.ktime_ns) / 1000;
        let index = event.unit as usize;
        let Some(role) = self.role(index, &event).await else {
            return;
        };
        let signal = event.signal();
        let record = Event::Exit {
            pid: event.tgid,
            comm: String::from_utf8_lossy(event.comm_bytes()).into_owned(),
            role,
            status: event.status(),
            signal,
            signal_name: signal.map(signal_name),
            oom_killed: event.oom_killed(),
            core_dumped: event.core_dumped(),
            kernel_to_agent_us: Some(kernel_to_agent_us),
        };
        let evidence = record.summary();
        let facts = ExitFacts {
            pid: event.tgid,
            role,
            status: event.status(),
            signal,
            oom_killed: event.oom_killed(),
        };
        let ours = self.acting.get(&event.unit).is_some_and(|n| *n > 0);
        let (name, context, rules) = {
            let mut state = self.p.state.lock();
            let Some(unit) = state.units.get_mut(index) else {
                return;
            };
            info!("{}: {evidence}", unit.name);
            unit.history.push(SystemTime::now(), record);
            let rules = ExitRules {
                success: unit.systemd.success_exit.clone(),
                restart_prevent: unit.systemd.restart_prevent.clone(),
            };
            (unit.name.clone(), context_of(unit, ours), rules)
        };
        let Some(problem) = judge(event.unit, &facts, &rules, evidence, Instant::now()) else {
            return;
        };
        if ours {
            info!("{name}: exit caused by the agent's own action; not a problem");
            return;
        }
        self.raise(problem, context);
    }

    /// A detector found a problem: the policy decides, the decision is applied.
    pub(super) fn raise(&mut self, problem: Problem, context: UnitContext) {
        if let Some(name) = self.unit_name(problem.unit) {
            self.p.metrics.problem_detected(&name, &problem.kind);
        }
        let now = Instant::now();
        let decision = self.p.policy.decide(&problem, &context, now);
        if self
            .p
            .policy
            .unit_status(problem.unit, now)
            .is_some_and(|s| s.incident.is_some())
        {
            self.incidents
                .entry(problem.unit)
                .or_insert(problem.detected_at);
        }
        self.apply(decision, Some(&problem));
    }

    /// Records a decision and starts its actions.
    pub(super) fn apply(&mut self, decision: Decision, problem: Option<&Problem>) {
        self.dirty = true;
        let Some(name) = self.unit_name(decision.unit) else {
            return;
        };
        let mut summary = decision.actions_summary();
        if self.p.dry_run && !decision.actions.is_empty() {
            summary.push_str(" (dry run: not acting)");
        }
        let evidence = problem.map(|p| p.evidence.as_str()).unwrap_or_default();
        if decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::Escalate { .. }))
        {
            let kind = problem.map_or_else(|| decision.cause.clone(), |p| p.kind.name().to_owned());
            self.escalated.insert(decision.unit, kind);
        }
        info!(
            "{name}: {}: {summary} ({})",
            decision.cause, decision.reason
        );
        self.p.audit.record(&AuditRecord::Decision {
            unit: &name,
            problem: &decision.cause,
            evidence,
            actions: &summary,
            reason: &decision.reason,
            dry_run: self.p.dry_run,
        });
        let target = {
            let mut state = self.p.state.lock();
            let Some(unit) = state.units.get_mut(decision.unit as usize) else {
                return;
            };
            unit.history.push(
                SystemTime::now(),
                Event::Decision {
                    problem: decision.cause.clone(),
                    action: summary,
                    reason: decision.reason.clone(),
                    evidence: evidence.to_owned(),
                },
            );
            (unit.object_path.clone(), unit.watched_cgroup.clone())
        };
        for action in decision.actions {
            self.start_action(decision.unit, &name, action, target.clone(), problem);
        }
    }

    fn start_action(
        &mut self,
        unit: u32,
        name: &str,
        mut action: Action,
        (object_path, cgroup): (Option<zbus::zvariant::OwnedObjectPath>, Option<String>),
        problem: Option<&Problem>,
    ) {
        let now = Instant::now();
        if let Action::Scale { factor, limits, .. } = &mut action {
            self.fill_scale_bases(unit, *factor, limits);
        }
        let finish = |outcome: ActionOutcome| Finished {
            unit,
            action: action.clone(),
            outcome,
            note: String::new(),
            took: Duration::ZERO,
            slot: None,
        };
        if self.p.dry_run {
            self.on_finished(finish(ActionOutcome::NotExecuted("dry run".into())));
            return;
        }
        match &action {
            Action::Quarantine | Action::Release => {
                let outcome =
                    self.isolate_network(unit, matches!(action, Action::Quarantine), cgroup);
                self.p.metrics.set_quarantined(
                    name,
                    matches!(action, Action::Quarantine) && outcome == ActionOutcome::Done,
                );
                self.on_finished(finish(outcome));
            }
            Action::Escalate { reason } => {
                let kind =
                    problem.map_or(ProblemKind::Custom("escalation".into()), |p| p.kind.clone());
                self.p.metrics.escalated(name, &kind);
                warn!("{name}: ESCALATED to an operator: {reason}");
                if let Some(pusher) = self.p.pusher.clone() {
                    let (name, reason) = (name.to_owned(), reason.clone());
                    tokio::spawn(async move {
                        if let Err(e) = pusher.push_escalation(&name, &kind, &reason).await {
                            warn!("{name}: cannot alert Alertmanager about the escalation: {e}");
                        }
                    });
                }
                self.on_finished(finish(ActionOutcome::Done));
            }
            _ => {
                *self.acting.entry(unit).or_default() += 1;
                let conn = self.p.conn.clone();
                let tx = self.finished_tx.clone();
                let target = Target {
                    unit,
                    name: name.to_owned(),
                    object_path,
                    cgroup_dir: cgroup.map(|c| self.p.v2_root.join(c.trim_start_matches('/'))),
                };
                let (gate, live) = (self.p.fleet.clone(), self.live(unit));
                tokio::spawn(async move {
                    let done = execute_gated(gate, live, conn, target, action).await;
                    let _ = tx.send(done).await;
                });
            }
        }
        let _ = now;
    }

    /// Limits the config gives no base for are scaled from what systemd had before the agent
    /// first scaled the unit (nothing is sent for limits that were unlimited).
    fn fill_scale_bases(
        &mut self,
        unit: u32,
        factor: f64,
        limits: &mut crate::policy::ScaledLimits,
    ) {
        let base = *self.scale_bases.entry(unit).or_insert_with(|| {
            let state = self.p.state.lock();
            let finite = |v: u64| (v != 0 && v < (1 << 62)).then_some(v);
            state
                .units
                .get(unit as usize)
                .map_or_else(Default::default, |u| crate::policy::ScaledLimits {
                    cpu_quota_percent: finite(u.systemd.cpu_quota_per_sec_us).map(|us| us / 10_000),
                    memory_max: finite(u.systemd.memory_max),
                    memory_high: finite(u.systemd.memory_high),
                    tasks_max: finite(u.systemd.tasks_max),
                })
        });
        let scaled = |v: Option<u64>| v.map(|v| (v as f64 * factor).round() as u64);
        limits.cpu_quota_percent = limits.cpu_quota_percent.or(scaled(base.cpu_quota_percent));
        limits.memory_max = limits.memory_max.or(scaled(base.memory_max));
        limits.memory_high = limits.memory_high.or(scaled(base.memory_high));
        limits.tasks_max = limits.tasks_max.or(scaled(base.tasks_max));
    }

    fn isolate_network(&mut self, unit: u32, on: bool, cgroup: Option<String>) -> ActionOutcome {
        let Some(quarantine) = self.p.quarantine.as_mut() else {
            return ActionOutcome::NotExecuted(
                "network quarantine is not available on this kernel".into(),
            );
        };
        if !on {
            quarantine.release(unit);
            return ActionOutcome::Done;
        }
        let Some(cgroup) = cgroup else {
            return ActionOutcome::Failed("the unit has no cgroup to quarantine".into());
        };
        let dir = self.p.v2_root.join(cgroup.trim_start_matches('/'));
        match quarantine.isolate(unit, &dir) {
            Ok(()) => ActionOutcome::Done,
            Err(e) => ActionOutcome::Failed(e),
        }
    }

    fn on_finished(&mut self, done: Finished) {
        self.dirty = true;
        if !matches!(
            done.action,
            Action::Quarantine | Action::Release | Action::Escalate { .. }
        ) && let Some(n) = self.acting.get_mut(&done.unit)
        {
            *n = n.saturating_sub(1);
        }
        self.p
            .policy
            .on_outcome(done.unit, &done.action, &done.outcome, Instant::now());
        let Some(name) = self.unit_name(done.unit) else {
            return;
        };
        let (result, detail) = (done.result(), done.detail());
        self.p
            .metrics
            .action_finished(&name, done.action.name(), result);
        self.p.audit.record(&AuditRecord::Action {
            unit: &name,
            action: &done.action.describe(),
            outcome: result,
            detail: &detail,
            duration_ms: done.took.as_millis() as u64,
            slot: done.slot.as_ref(),
        });
        let event = Event::Action {
            action: done.action.describe(),
            outcome: result.to_owned(),
            detail,
            duration_ms: done.took.as_millis() as u64,
        };
        if result == "failed" {
            warn!("{name}: {}", event.summary());
        } else {
            info!("{name}: {}", event.summary());
        }
        if let Some(unit) = self.p.state.lock().units.get_mut(done.unit as usize) {
            unit.history.push(SystemTime::now(), event);
        }
        // Follow-ups (the next backoff step, a fallback) come out of the policy's tick.
        for decision in self.p.policy.tick(Instant::now()) {
            self.apply(decision, None);
        }
    }

    fn on_probe(&mut self, report: ProbeReport) {
        let events = match &report {
            ProbeReport::Result(result) => {
                if let Some(name) = self.unit_name(result.unit) {
                    self.p
                        .metrics
                        .probe_finished(&name, &result.probe, result.ok, result.latency);
                }
                self.p.probes.on_result(result)
            }
            ProbeReport::Finding(finding) => self.p.probes.on_finding(finding),
        };
        for event in events {
            match event {
                ProbeEvent::Detected(problem) => {
                    let context = self.context(problem.unit);
                    self.raise(problem, context);
                }
                ProbeEvent::Cleared {
                    unit,
                    kind,
                    evidence,
                    ..
                } => self.cleared(unit, &kind, &evidence),
            }
        }
    }

    fn on_alert(&mut self, alert: AlertObservation) {
        let index = self
            .p
            .state
            .lock()
            .units
            .iter()
            .position(|u| u.name == alert.unit_name);
        let Some(index) = index else { return };
        let unit = index as u32;
        if alert.firing {
            let problem = Problem {
                unit,
                kind: alert.kind,
                detected_at: Instant::now(),
                evidence: format!("Alertmanager: {}", alert.summary),
                pid: None,
                unkillable: false,
            };
            let context = self.context(unit);
            self.raise(problem, context);
        } else {
            self.cleared(
                unit,
                &alert.kind,
                &format!("Alertmanager: {} resolved", alert.summary),
            );
        }
    }

    /// A problem went away: the policy counts its recovery, history says so.
    pub(super) fn cleared(&mut self, unit: u32, kind: &ProblemKind, evidence: &str) {
        self.dirty = true;
        self.p.policy.on_cleared(unit, kind, Instant::now());
        if let Some(u) = self.p.state.lock().units.get_mut(unit as usize) {
            info!("{}: {} cleared: {evidence}", u.name, kind.name());
            u.history.push(
                SystemTime::now(),
                Event::Unit {
                    message: format!("{} cleared: {evidence}", kind.name()),
                },
            );
        }
    }

    pub(super) fn context(&self, unit: u32) -> UnitContext {
        let ours = self.acting.get(&unit).is_some_and(|n| *n > 0);
        self.p
            .state
            .lock()
            .units
            .get(unit as usize)
            .map(|u| context_of(u, ours))
            .unwrap_or_default()
    }

    /// Whether systemd reports the unit active: restarting it then disrupts a serving unit.
    fn live(&self, unit: u32) -> bool {
        let state = self.p.state.lock();
        state
            .units
            .get(unit as usize)
            .is_some_and(|u| u.systemd.active_state == "active")
    }

    pub(super) fn unit_name(&self, unit: u32) -> Option<String> {
        self.p
            .state
            .lock()
            .units
            .get(unit as usize)
            .map(|u| u.name.clone())
    }

    /// Main or child: from what the unit table knows, else from a fresh look at systemd.
    async fn role(&self, index: usize, event: &ExitEvent) -> Option<ProcessRole> {
        let (known, name, path) = {
            let state = self.p.state.lock();
            let unit = state.units.get(index)?;
            (
                unit.role_of(event.tgid, event.ppid, self.p.manager_pid),
                unit.name.clone(),
                unit.object_path.clone(),
            )
        };
        if let Some(role) = known {
            return Some(role);
        }
        let fresh = match path {
            Some(path) => read_snapshot(&self.p.conn, &name, &path).await.ok(),
            None => None,
        };
        Some(match fresh {
            Some(s) if s.exec_main_pid == event.tgid || s.main_pid == event.tgid => {
                ProcessRole::Main
            }
            Some(_) => ProcessRole::Child,
            None => {
                warn!(
                    "{name}: cannot ask systemd about exited pid {}; treating it as a child",
                    event.tgid
                );
                ProcessRole::Child
            }
        })
    }
}

impl Engine {
    /// The policy has work due (a scheduled restart, a verification deadline, a breaker going
    /// half-open): do it now rather than at the next tick.
    fn on_due(&mut self) {
        for decision in self.p.policy.tick(Instant::now()) {
            self.apply(decision, None);
        }
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

fn context_of(unit: &crate::units::MonitoredUnit, acting: bool) -> UnitContext {
    UnitContext {
        stopping: unit.stopping || acting,
        start_limit: StartLimit {
            burst: unit.systemd.start_limit_burst,
            interval: Duration::from_micros(unit.systemd.start_limit_interval_us),
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
