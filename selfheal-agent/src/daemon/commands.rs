//! Operator commands that reach into the engine (through the status socket): explain, reset,
//! release. Each carries a channel for its answer.

use std::time::{Instant, SystemTime};

use tokio::sync::oneshot;

use super::engine::Engine;
use crate::report::history::Event;

#[derive(Debug)]
pub enum Command {
    /// Why the unit is in its current state, in plain words.
    Explain {
        unit: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Clears escalation, budgets and the circuit breaker of the unit.
    Reset {
        unit: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Ends a freeze or network quarantine now.
    Release {
        unit: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

impl Engine {
    pub(super) fn on_command(&mut self, command: Command) {
        let unit_name = match &command {
            Command::Explain { unit, .. }
            | Command::Reset { unit, .. }
            | Command::Release { unit, .. } => unit.clone(),
        };
        let index = self
            .p
            .state
            .lock()
            .units
            .iter()
            .position(|u| u.name == unit_name);
        let now = Instant::now();
        let answer = |index: Option<usize>| {
            index.map(|i| i as u32).ok_or_else(|| {
                format!("{unit_name} is not monitored by this agent (see `selfheal-agent status`)")
            })
        };
        match command {
            Command::Explain { reply, .. } => {
                let text = answer(index).map(|u| self.p.policy.explain(u, now, SystemTime::now()));
                let _ = reply.send(text);
            }
            Command::Reset { reply, .. } => {
                let result = answer(index).map(|u| {
                    let decision = self.p.policy.reset(u);
                    let text = decision.reason.clone();
                    self.note(u, format!("operator reset: {text}"));
                    self.apply(decision, None);
                    text
                });
                let _ = reply.send(result);
            }
            Command::Release { reply, .. } => {
                let result = answer(index).map(|u| {
                    let decision = self.p.policy.release(u, now);
                    let text = format!("{} ({})", decision.actions_summary(), decision.reason);
                    self.note(u, format!("operator release: {text}"));
                    self.apply(decision, None);
                    text
                });
                let _ = reply.send(result);
            }
        }
    }

    fn note(&mut self, unit: u32, message: String) {
        if let Some(u) = self.p.state.lock().units.get_mut(unit as usize) {
            u.history.push(SystemTime::now(), Event::Unit { message });
        }
    }
}
