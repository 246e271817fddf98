//! A bounded per-unit record of what happened: exits, decisions, actions and their outcomes.

use std::{
    collections::VecDeque,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::units::ProcessRole;

/// Records kept per unit for `status`; older ones are dropped first.
pub const HISTORY_LEN: usize = 32;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The kernel saw a process of the unit exit.
    Exit {
        pid: u32,
        comm: String,
        role: ProcessRole,
        /// Exit status when it called exit().
        status: Option<u32>,
        /// Signal number when a signal killed it.
        signal: Option<u32>,
        signal_name: Option<String>,
        oom_killed: bool,
        core_dumped: bool,
        /// From the kernel's exit (its `bpf_ktime_get_ns()`) to the engine receiving the record,
        /// in microseconds: what `cargo xtask bench` reports as detection latency.
        #[serde(default)]
        kernel_to_agent_us: Option<u64>,
    },
    /// What the policy decided about a problem, and why.
    Decision {
        problem: String,
        action: String,
        reason: String,
        /// What the detector saw (the problem's evidence); empty for the policy's follow-ups.
        #[serde(default)]
        evidence: String,
    },
    /// The result of an action on the unit.
    Action {
        action: String,
        /// "done", "failed" or "skipped".
        outcome: String,
        detail: String,
        duration_ms: u64,
    },
    /// A change in what the agent knows about the unit (appeared, disappeared…).
    Unit { message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    records: VecDeque<Record>,
    /// Restarts done by the agent (all time, not bounded like the records).
    pub restarts: u64,
}

impl History {
    pub fn push(&mut self, at: SystemTime, event: Event) {
        if matches!(&event, Event::Action { action, outcome, .. } if action == "restart" && outcome == "done")
        {
            self.restarts += 1;
        }
        if self.records.len() == HISTORY_LEN {
            self.records.pop_front();
        }
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.records.push_back(Record { at_ms, event });
    }

    pub fn records(&self) -> impl DoubleEndedIterator<Item = &Record> {
        self.records.iter()
    }
}

impl Event {
    /// One line for logs and the status tree.
    pub fn summary(&self) -> String {
        match self {
            Event::Exit {
                pid,
                comm,
                role,
                status,
                signal_name,
                signal,
                oom_killed,
                core_dumped,
                ..
            } => {
                let who = match role {
                    ProcessRole::Main => "main process",
                    ProcessRole::Child => "child process",
                };
                let how = if *oom_killed {
                    "was OOM-killed".to_owned()
                } else if let Some(sig) = signal {
                    let name = signal_name
                        .clone()
                        .unwrap_or_else(|| format!("signal {sig}"));
                    let core = if *core_dumped { " (core dumped)" } else { "" };
                    format!("was killed by {name}{core}")
                } else {
                    format!("exited with status {}", status.unwrap_or(0))
                };
                format!("{who} {pid} ({comm}) {how}")
            }
            Event::Decision {
                problem,
                action,
                reason,
                ..
            } => format!("{problem}: {action} ({reason})"),
            Event::Action {
                action,
                outcome,
                detail,
                duration_ms,
            } => {
                format!("{action} {outcome} after {duration_ms} ms: {detail}")
            }
            Event::Unit { message } => message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_newest_records() {
        let mut h = History::default();
        for i in 0..(HISTORY_LEN + 5) {
            h.push(
                SystemTime::now(),
                Event::Unit {
                    message: i.to_string(),
                },
            );
        }
        assert_eq!(h.records().count(), HISTORY_LEN);
        assert_eq!(
            h.records().next().unwrap().event,
            Event::Unit {
                message: "5".into()
            }
        );
    }

    #[test]
    fn only_successful_restarts_are_counted() {
        let mut h = History::default();
        let action = |outcome: &str| Event::Action {
            action: "restart".into(),
            outcome: outcome.into(),
            detail: String::new(),
            duration_ms: 1,
        };
        h.push(SystemTime::now(), action("done"));
        h.push(SystemTime::now(), action("failed"));
        assert_eq!(h.restarts, 1);
    }
}
