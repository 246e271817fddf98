//! The engine: kernel observations → detectors → policy → actuators, and outcomes back.

use std::time::{Instant, SystemTime};

use log::{info, warn};
use selfheal_common::exit::ExitEvent;
use tokio::sync::{mpsc, watch};

use super::Shared;
use crate::{
    act::{
        Outcome,
        restart::{RestartRequest, restart},
    },
    detect::exit::{ExitFacts, judge},
    policy::{Decision, Policy, UnitContext},
    report::history::Event,
    systemd::read_snapshot,
    units::ProcessRole,
};

pub struct Engine {
    conn: zbus::Connection,
    state: Shared,
    manager_pid: Option<u32>,
    dry_run: bool,
    policy: Policy,
}

impl Engine {
    pub fn new(
        conn: zbus::Connection,
        state: Shared,
        manager_pid: Option<u32>,
        dry_run: bool,
    ) -> Self {
        Self {
            conn,
            state,
            manager_pid,
            dry_run,
            policy: Policy::default(),
        }
    }

    pub async fn run(
        mut self,
        mut exits: mpsc::Receiver<ExitEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (outcome_tx, mut outcomes) = mpsc::channel::<Outcome>(64);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(event) = exits.recv() => self.on_exit(event, &outcome_tx).await,
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome),
            }
        }
    }

    async fn on_exit(&mut self, event: ExitEvent, outcomes: &mpsc::Sender<Outcome>) {
        let index = event.unit as usize;
        let role = self.role(index, &event).await;
        let Some(role) = role else { return };
        let signal = event.signal();
        let history_event = Event::Exit {
            pid: event.tgid,
            comm: String::from_utf8_lossy(event.comm_bytes()).into_owned(),
            role,
            status: event.status(),
            signal,
            signal_name: signal.map(signal_name),
            oom_killed: event.oom_killed(),
            core_dumped: event.core_dumped(),
        };
        let evidence = history_event.summary();
        let facts = ExitFacts {
            pid: event.tgid,
            role,
            status: event.status(),
            signal,
            oom_killed: event.oom_killed(),
        };
        let problem = judge(event.unit, &facts, evidence.clone(), Instant::now());

        let mut state = self.state.lock();
        let Some(unit) = state.units.get_mut(index) else {
            return;
        };
        info!("{}: {evidence}", unit.name);
        unit.history.push(SystemTime::now(), history_event);
        let Some(problem) = problem else { return };
        let decision = self.policy.decide(
            &problem,
            UnitContext {
                policy: &unit.policy,
                stopping: unit.stopping,
            },
        );
        let reason = match &decision {
            Decision::Restart { delay } if delay.is_zero() => {
                format!("restart = \"{}\"", unit.policy.restart)
            }
            Decision::Restart { delay } => {
                format!("restart = \"{}\", after {delay:?}", unit.policy.restart)
            }
            Decision::Skip { reason } => reason.clone(),
        };
        let action = if self.dry_run && matches!(decision, Decision::Restart { .. }) {
            "restart (dry run: not acting)".to_owned()
        } else {
            decision.action_name().to_owned()
        };
        info!(
            "{}: {}: {action} ({reason})",
            unit.name,
            problem.kind.name()
        );
        unit.history.push(
            SystemTime::now(),
            Event::Decision {
                problem: problem.kind.name().to_owned(),
                action,
                reason,
            },
        );
        let Decision::Restart { delay } = decision else {
            return;
        };
        if self.dry_run {
            self.policy.finished(event.unit);
            return;
        }
        let Some(object_path) = unit.object_path.clone() else {
            self.policy.finished(event.unit);
            return;
        };
        let request = RestartRequest {
            unit: event.unit,
            name: unit.name.clone(),
            object_path,
            delay,
        };
        drop(state);
        let conn = self.conn.clone();
        let outcomes = outcomes.clone();
        tokio::spawn(async move {
            let outcome = restart(&conn, request).await;
            let _ = outcomes.send(outcome).await;
        });
    }

    /// Main or child: from what the unit table knows, else from a fresh look at systemd.
    async fn role(&self, index: usize, event: &ExitEvent) -> Option<ProcessRole> {
        let (known, name, path) = {
            let state = self.state.lock();
            let unit = state.units.get(index)?;
            (
                unit.role_of(event.tgid, event.ppid, self.manager_pid),
                unit.name.clone(),
                unit.object_path.clone(),
            )
        };
        if let Some(role) = known {
            return Some(role);
        }
        let fresh = match path {
            Some(path) => read_snapshot(&self.conn, &name, &path).await.ok(),
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

    fn on_outcome(&mut self, outcome: Outcome) {
        self.policy.finished(outcome.unit);
        let mut state = self.state.lock();
        let Some(unit) = state.units.get_mut(outcome.unit as usize) else {
            return;
        };
        let event = Event::Action {
            action: outcome.action.to_owned(),
            outcome: outcome.result.to_owned(),
            detail: outcome.detail,
            duration_ms: outcome.duration.as_millis() as u64,
        };
        if outcome.result == "failed" {
            warn!("{}: {}", unit.name, event.summary());
        } else {
            info!("{}: {}", unit.name, event.summary());
        }
        unit.history.push(SystemTime::now(), event);
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
