//! Operator commands as the status socket sends them to the engine: explain, reset, release,
//! and the explanations of every unit for a status document. Each carries a channel for its
//! answer; the supervisor answers them.

use tokio::sync::oneshot;

#[derive(Debug)]
pub enum Command {
    /// Why the unit is in its current state, in plain words.
    Explain {
        unit: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Why each unit is in its current state, by unit name: rendered only when `status` is
    /// asked, never at a tick.
    ExplainAll {
        reply: oneshot::Sender<Vec<(String, String)>>,
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
