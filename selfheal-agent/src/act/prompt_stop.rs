//! A restart must not wait for the unit's stop timeout when its main process cannot answer the
//! stop: a stopped process (SIGSTOP, `T`) keeps SIGTERM — and nginx's SIGQUIT from `ExecStop=`
//! — pending until it is continued, and one that blocks or ignores SIGTERM never acts on it.
//! systemd then waits `TimeoutStopSec=` (90 s by default) before its own SIGKILL. For those
//! units the restart sends SIGCONT and SIGKILL to every process of the unit through systemd
//! (`KillUnit`) right after queueing the restart job, so the stop is over at once. A task in
//! uninterruptible sleep (`D`) would survive SIGKILL too: such a unit is `hung`, which the
//! policy escalates instead of restarting.

use crate::systemd::ManagerProxy;

/// Why a main process will not answer the stop on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unresponsive {
    /// Stopped by a signal or traced: signals other than SIGKILL and SIGCONT stay pending.
    Stopped,
    /// SIGTERM is blocked or ignored.
    IgnoresTerm,
}

impl Unresponsive {
    /// The signals that end it, in order.
    pub fn signals(self) -> &'static [(libc::c_int, &'static str)] {
        match self {
            Self::Stopped => &[(libc::SIGCONT, "SIGCONT"), (libc::SIGKILL, "SIGKILL")],
            Self::IgnoresTerm => &[(libc::SIGKILL, "SIGKILL")],
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::Stopped => "its main process was stopped",
            Self::IgnoresTerm => "its main process blocks or ignores SIGTERM",
        }
    }
}

/// Judges a process from its `/proc/<pid>/stat` and `/proc/<pid>/status` texts.
pub fn judge(stat: &str, status: &str) -> Option<Unresponsive> {
    // The state follows the command name, which may itself hold spaces and parentheses.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    if matches!(state, "T" | "t") {
        return Some(Unresponsive::Stopped);
    }
    let term_bit = 1u64 << (libc::SIGTERM - 1);
    let masked = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|mask| mask & term_bit != 0)
    };
    (masked("SigBlk:") || masked("SigIgn:")).then_some(Unresponsive::IgnoresTerm)
}

/// Reads the main process; `None` when it answers SIGTERM or is gone already.
pub fn inspect(pid: u32) -> Option<Unresponsive> {
    if pid == 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    judge(&stat, &status)
}

/// Sends the signals that end `why` to every process of `unit`; returns what the audit record
/// says about it.
pub async fn force(conn: &zbus::Connection, unit: &str, why: Unresponsive) -> String {
    let manager = match ManagerProxy::new(conn).await {
        Ok(manager) => manager,
        Err(e) => return format!("could not reach systemd to end the stop promptly: {e}"),
    };
    let mut sent = Vec::new();
    for &(signal, name) in why.signals() {
        match manager.kill_unit(unit, "all", signal).await {
            Ok(()) => sent.push(name),
            Err(e) => return format!("KillUnit({unit}, all, {name}) failed: {e}"),
        }
    }
    format!(
        "sent {} to all its processes through systemd (KillUnit) so the stop did not wait for its timeout: {}",
        sent.join(" then "),
        why.reason()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\n";

    #[test]
    fn a_stopped_or_traced_process_is_stopped_even_with_parentheses_in_its_name() {
        let stat = "42 (we ird) name) T 1 42 42 0 -1";
        assert_eq!(judge(stat, RUNNING), Some(Unresponsive::Stopped));
        assert_eq!(judge("42 (x) t 1 42", RUNNING), Some(Unresponsive::Stopped));
    }

    #[test]
    fn sigterm_blocked_or_ignored_will_not_be_answered() {
        let stat = "42 (server) S 1 42 42";
        let ignored = "SigBlk:\t0000000000000000\nSigIgn:\t0000000000004000\n";
        let blocked = "SigBlk:\t0000000000004000\nSigIgn:\t0000000000000000\n";
        assert_eq!(judge(stat, ignored), Some(Unresponsive::IgnoresTerm));
        assert_eq!(judge(stat, blocked), Some(Unresponsive::IgnoresTerm));
    }

    #[test]
    fn a_running_or_sleeping_process_that_takes_sigterm_answers_the_stop() {
        // SIGPIPE ignored (bit 13) is common and harmless.
        assert_eq!(judge("42 (server) R 1", RUNNING), None);
        assert_eq!(judge("42 (server) S 1", RUNNING), None);
        assert_eq!(judge("42 (server) D 1", RUNNING), None);
        assert_eq!(judge("garbage", RUNNING), None);
    }

    #[test]
    fn this_test_process_answers_sigterm() {
        assert_eq!(inspect(std::process::id()), None);
        assert_eq!(inspect(0), None);
    }
}
