//! Exit records from the kernel into the supervisor. Whether the process was the unit's main
//! one is decided from what the tracker knows (its main pid, systemd's ExecMainPID) and the
//! record's parent: only a process the service manager forked whose pid the tracker has not
//! seen yet (a main process that died before its MainPID reached us, or a control process)
//! needs systemd's word. That question is asked on a task of its own and its answer comes back
//! as an input, so no exit ever waits for a D-Bus round trip.

use std::time::Instant;

use log::warn;
use selfheal_common::exit::ExitEvent;

use super::{engine::Engine, signal_name, supervisor::Input};
use crate::{
    detect::exit::ExitFacts, report::history::Event, sensors::ebpf::monotonic_ns,
    systemd::read_snapshot, units::ProcessRole,
};

/// An exit whose role systemd decided.
pub struct Answered {
    event: ExitEvent,
    role: ProcessRole,
    kernel_to_agent_us: u64,
    /// The supervisor was acting on the unit when the record arrived.
    during_action: bool,
}

impl Engine {
    pub(super) fn on_exit(&mut self, event: ExitEvent) {
        // Both clocks are CLOCK_MONOTONIC; taken first, before anything else.
        let kernel_to_agent_us = monotonic_ns().saturating_sub(event.ktime_ns) / 1000;
        let known = {
            let state = self.p.state.lock();
            let Some(unit) = state.unit(event.unit) else {
                return;
            };
            match unit.role_of(event.tgid, event.ppid, self.p.manager_pid) {
                Some(role) => Ok(role),
                None => Err((unit.name.clone(), unit.object_path.clone())),
            }
        };
        match known {
            Ok(role) => self.exited(&event, role, kernel_to_agent_us, false),
            Err((name, path)) => {
                let during_action = self.p.supervisor.acting(event.unit);
                let conn = self.p.conn.clone();
                let answers = self.roles_tx.clone();
                tokio::spawn(async move {
                    let fresh = match path {
                        Some(path) => read_snapshot(&conn, &name, &path).await.ok(),
                        None => None,
                    };
                    let role = match fresh {
                        Some(s) if s.exec_main_pid == event.tgid || s.main_pid == event.tgid => {
                            ProcessRole::Main
                        }
                        Some(_) => ProcessRole::Child,
                        None => {
                            warn!(
                                "{name}: cannot ask systemd about exited pid {}; treating it as \
                                 a child",
                                event.tgid
                            );
                            ProcessRole::Child
                        }
                    };
                    let _ = answers
                        .send(Answered {
                            event,
                            role,
                            kernel_to_agent_us,
                            during_action,
                        })
                        .await;
                });
            }
        }
    }

    pub(super) fn on_role(&mut self, answered: Answered) {
        let Answered {
            event,
            role,
            kernel_to_agent_us,
            during_action,
        } = answered;
        self.exited(&event, role, kernel_to_agent_us, during_action);
    }

    fn exited(
        &mut self,
        event: &ExitEvent,
        role: ProcessRole,
        kernel_to_agent_us: u64,
        during_action: bool,
    ) {
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
        let facts = ExitFacts {
            pid: event.tgid,
            role,
            status: event.status(),
            signal,
            oom_killed: event.oom_killed(),
        };
        self.sync_facts(event.unit);
        self.feed(Input::Exit {
            unit: event.unit,
            facts,
            record,
            during_action,
        });
        self.note_incident(event.unit, Instant::now());
    }
}
