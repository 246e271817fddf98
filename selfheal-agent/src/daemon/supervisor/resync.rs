//! A unit re-read from systemd after the kernel lost exit records of it. systemd keeps the
//! last main process's pid and how it ended (`ExecMainPID`, `ExecMainCode`,
//! `ExecMainStatus`); when the unit is found dead or failed and that exit was never seen as a
//! record, it is turned into the exit the record would have carried, so it is acted on the
//! same way.

use crate::{detect::exit::ExitFacts, report::history::Event, units::ProcessRole};

/// `si_code` values of a child's end, as systemd reports them in `ExecMainCode`.
const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

/// What systemd says about the unit now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resync {
    /// "active", "failed", "inactive", "activating"…
    pub active_state: String,
    /// systemd's verdict on the last run ("oom-kill", "signal", "exit-code"…).
    pub result: String,
    pub exec_main_pid: u32,
    pub exec_main_code: i32,
    pub exec_main_status: i32,
}

impl Resync {
    /// The main process's exit, when the unit is dead or failed and its last main process
    /// has ended; `None` while the unit runs (nothing was missed that matters to it).
    pub fn main_exit(&self) -> Option<(ExitFacts, Event)> {
        if !matches!(self.active_state.as_str(), "failed" | "inactive") || self.exec_main_pid == 0 {
            return None;
        }
        let code = u32::try_from(self.exec_main_status).ok();
        let (status, signal) = match self.exec_main_code {
            CLD_EXITED => (code, None),
            CLD_KILLED | CLD_DUMPED => (None, code),
            _ => return None,
        };
        let oom_killed = self.result == "oom-kill";
        let facts = ExitFacts {
            pid: self.exec_main_pid,
            role: ProcessRole::Main,
            status,
            signal,
            oom_killed,
        };
        let record = Event::Exit {
            pid: self.exec_main_pid,
            comm: "(read from systemd)".to_owned(),
            role: ProcessRole::Main,
            status,
            signal,
            signal_name: signal.map(crate::daemon::engine::signal_name),
            oom_killed,
            core_dumped: self.exec_main_code == CLD_DUMPED,
            kernel_to_agent_us: None,
        };
        Some((facts, record))
    }
}
