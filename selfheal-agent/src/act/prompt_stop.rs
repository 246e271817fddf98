//! A restart must not wait for the unit's stop timeout when its main process cannot answer the
//! stop: a stopped process (SIGSTOP, `T`) keeps SIGTERM — and nginx's SIGQUIT from `ExecStop=`
//! — pending until it is continued, and one that blocks or ignores SIGTERM never acts on it.
//! systemd then waits `TimeoutStopSec=` (90 s by default) before its own SIGKILL. For those
//! units the restart continues every process of the unit through systemd (`KillUnit`, SIGCONT:
//! harmless to running ones) before queueing the restart job, and kills the old main process
//! through a pidfd right after: the pidfd names that process only, so the kill can never hit
//! the new main process should systemd already have started it (a `KillUnit` SIGKILL sent at
//! that moment would). A task in uninterruptible sleep (`D`) would survive SIGKILL too: such a
//! unit is `hung`, which the policy escalates instead of restarting.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

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

/// The old main process, held by a pidfd so that a signal cannot reach a later process that
/// reuses its pid.
pub struct OldMain {
    pid: u32,
    fd: OwnedFd,
}

impl OldMain {
    pub fn open(pid: u32) -> Option<Self> {
        let pid_t = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0)?;
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_t, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the fd was just returned by the kernel and is owned by nobody else.
        Some(Self {
            pid,
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// SIGKILL; Ok(false) when the process had already ended.
    pub fn kill(&self) -> std::io::Result<bool> {
        let null = std::ptr::null::<libc::siginfo_t>();
        // SAFETY: pidfd_send_signal(2) with our pidfd, a signal number, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                libc::SIGKILL,
                null,
                0,
            )
        };
        match rc {
            0 => Ok(true),
            _ => match std::io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
                e => Err(e),
            },
        }
    }
}

/// Before the restart is queued: continues every process of a stopped unit through systemd.
/// Returns what the audit record says about it (empty when nothing was needed).
pub async fn continue_all(conn: &zbus::Connection, unit: &str, why: Unresponsive) -> String {
    if why != Unresponsive::Stopped {
        return String::new();
    }
    let sent = async {
        ManagerProxy::new(conn)
            .await?
            .kill_unit(unit, "all", libc::SIGCONT)
            .await
    };
    match sent.await {
        Ok(()) => "sent SIGCONT to all its processes through systemd (KillUnit)".to_owned(),
        Err(e) => format!("KillUnit({unit}, all, SIGCONT) failed: {e}"),
    }
}

/// After the restart is queued: kills the old main process so the stop does not wait.
pub fn kill_old(old: Option<&OldMain>, why: Unresponsive) -> String {
    let Some(old) = old else {
        return format!("{}, and it could not be held to kill it", why.reason());
    };
    let what = match old.kill() {
        Ok(true) => format!("then SIGKILL to the old main process {}", old.pid),
        Ok(false) => format!("the old main process {} had already ended", old.pid),
        Err(e) => format!("SIGKILL to the old main process {} failed: {e}", old.pid),
    };
    format!(
        "{what} so the stop did not wait for its timeout: {}",
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

    #[test]
    fn the_old_main_is_killed_through_its_pidfd_and_a_gone_one_is_no_error() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        let old = OldMain::open(child.id()).expect("pidfd");
        assert!(old.kill().expect("kill"), "it was alive");
        let status = child.wait().expect("reaped");
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!old.kill().expect("no error"), "already ended");
        assert!(OldMain::open(0).is_none());
    }
}
