//! Exit detector: turns a process exit into a problem when it ends the unit's service.

use std::time::Instant;

use super::{Problem, ProblemKind};
use crate::units::ProcessRole;

/// How a process ended, as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitFacts {
    pub pid: u32,
    pub role: ProcessRole,
    pub status: Option<u32>,
    pub signal: Option<u32>,
    pub oom_killed: bool,
}

/// systemd's definition of a clean exit (see `Restart=on-failure` in systemd.service(5)):
/// status 0, or death by SIGHUP, SIGINT, SIGTERM or SIGPIPE. An OOM kill is never clean.
pub fn is_clean(facts: &ExitFacts) -> bool {
    if facts.oom_killed {
        return false;
    }
    match (facts.status, facts.signal) {
        (_, Some(sig)) => {
            [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGPIPE].contains(&(sig as i32))
        }
        (Some(status), None) => status == 0,
        (None, None) => true,
    }
}

/// A problem when the unit's main process ended; children come and go without one.
pub fn judge(unit: u32, facts: &ExitFacts, evidence: String, now: Instant) -> Option<Problem> {
    if facts.role != ProcessRole::Main {
        return None;
    }
    let kind = if is_clean(facts) {
        ProblemKind::Exit
    } else {
        ProblemKind::Crash
    };
    Some(Problem {
        unit,
        kind,
        detected_at: now,
        evidence,
        pid: Some(facts.pid),
        unkillable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main_exit(status: Option<u32>, signal: Option<u32>, oom_killed: bool) -> ExitFacts {
        ExitFacts {
            pid: 42,
            role: ProcessRole::Main,
            status,
            signal,
            oom_killed,
        }
    }

    #[test]
    fn non_zero_status_is_a_crash() {
        let p = judge(
            0,
            &main_exit(Some(3), None, false),
            String::new(),
            Instant::now(),
        );
        assert_eq!(p.map(|p| p.kind), Some(ProblemKind::Crash));
    }

    #[test]
    fn status_zero_is_a_clean_exit() {
        let p = judge(
            0,
            &main_exit(Some(0), None, false),
            String::new(),
            Instant::now(),
        );
        assert_eq!(p.map(|p| p.kind), Some(ProblemKind::Exit));
    }

    #[test]
    fn sigkill_and_sigsegv_are_crashes_but_sigterm_is_clean() {
        assert!(!is_clean(&main_exit(
            None,
            Some(libc::SIGKILL as u32),
            false
        )));
        assert!(!is_clean(&main_exit(
            None,
            Some(libc::SIGSEGV as u32),
            false
        )));
        assert!(is_clean(&main_exit(
            None,
            Some(libc::SIGTERM as u32),
            false
        )));
        assert!(is_clean(&main_exit(
            None,
            Some(libc::SIGPIPE as u32),
            false
        )));
    }

    #[test]
    fn an_oom_kill_is_never_clean() {
        assert!(!is_clean(&main_exit(Some(0), None, true)));
    }

    #[test]
    fn a_child_exit_is_no_problem_whatever_its_status() {
        let facts = ExitFacts {
            role: ProcessRole::Child,
            ..main_exit(None, Some(9), true)
        };
        assert_eq!(judge(0, &facts, String::new(), Instant::now()), None);
    }
}
