//! Operator commands (from the status socket): explain, reset, release. The supervisor answers
//! them from the policy's state; reset and release may hand out actions like any decision.

use std::time::{Instant, SystemTime};

use super::{Effects, Supervisor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Why the unit is in its current state, in plain words.
    Explain,
    /// Clears escalation, budgets and the circuit breaker of the unit.
    Reset,
    /// Ends a freeze or network quarantine now.
    Release,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("{0} is not monitored by this agent (see `selfheal-agent status`)")]
    NotMonitored(String),
}

impl Supervisor {
    pub fn command(
        &mut self,
        command: Command,
        unit: &str,
        now: Instant,
        wall: SystemTime,
    ) -> (Result<String, CommandError>, Effects) {
        let mut fx = Effects::default();
        let Some(index) = self.units.index_of(unit) else {
            return (Err(CommandError::NotMonitored(unit.to_owned())), fx);
        };
        let text = match command {
            Command::Explain => self.explain(index, now, wall),
            Command::Reset => {
                let decision = self.policy.reset(index);
                let text = decision.reason.clone();
                fx.note(index, format!("operator reset: {text}"));
                self.apply(decision, None, now, &mut fx);
                text
            }
            Command::Release => {
                let decision = self.policy.release(index, now);
                let text = format!("{} ({})", decision.actions_summary(), decision.reason);
                fx.note(index, format!("operator release: {text}"));
                self.apply(decision, None, now, &mut fx);
                text
            }
        };
        (Ok(text), fx)
    }
}
