//! Exit detector: turns a process exit into a problem when it ends the unit's service.

use std::time::Instant;

use super::{Problem, ProblemKind};
use crate::{systemd::ExitStatusSet, units::ProcessRole};

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

/// The unit's own meaning of success, read from systemd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitRules {
    /// `SuccessExitStatus=`: also clean.
    pub success: ExitStatusSet,
    /// `RestartPreventExitStatus=`: not clean, but `Restart=on-failure` must not restart it.
    pub restart_prevent: ExitStatusSet,
}

/// A problem when the unit's main process ended; children come and go without one. An exit
/// the unit declares successful, or one that prevents its restart, is an `exit` (which
/// `restart = "on-failure"` leaves alone) and its evidence says which setting made it so.
pub fn judge(
    unit: u32,
    facts: &ExitFacts,
    rules: &ExitRules,
    mut evidence: String,
    now: Instant,
) -> Option<Problem> {
    if facts.role != ProcessRole::Main {
        return None;
    }
    let listed =
        |set: &ExitStatusSet| !facts.oom_killed && set.contains(facts.status, facts.signal);
    let kind = if is_clean(facts) {
        ProblemKind::Exit
    } else if listed(&rules.success) {
        evidence.push_str("; clean by the unit's SuccessExitStatus=");
        ProblemKind::Exit
    } else if listed(&rules.restart_prevent) {
        evidence.push_str("; the unit's RestartPreventExitStatus= forbids restarting it");
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
            &ExitRules::default(),
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
            &ExitRules::default(),
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
        assert_eq!(
            judge(
                0,
                &facts,
                &ExitRules::default(),
                String::new(),
                Instant::now()
            ),
            None
        );
    }

    #[test]
    fn the_units_success_and_restart_prevent_statuses_make_an_exit_not_a_crash() {
        let rules = ExitRules {
            success: ExitStatusSet {
                statuses: vec![75],
                signals: vec![libc::SIGUSR1],
            },
            restart_prevent: ExitStatusSet {
                statuses: vec![3],
                signals: Vec::new(),
            },
        };
        let kind_of = |facts: ExitFacts| {
            judge(0, &facts, &rules, String::new(), Instant::now()).map(|p| (p.kind, p.evidence))
        };
        let (kind, evidence) = kind_of(main_exit(Some(75), None, false)).unwrap();
        assert_eq!(kind, ProblemKind::Exit);
        assert!(evidence.contains("SuccessExitStatus="), "{evidence}");
        let usr1 = main_exit(None, Some(libc::SIGUSR1 as u32), false);
        assert_eq!(kind_of(usr1).unwrap().0, ProblemKind::Exit);
        let (kind, evidence) = kind_of(main_exit(Some(3), None, false)).unwrap();
        assert_eq!(kind, ProblemKind::Exit);
        assert!(evidence.contains("RestartPreventExitStatus="), "{evidence}");
        assert_eq!(
            kind_of(main_exit(Some(4), None, false)).unwrap().0,
            ProblemKind::Crash
        );
        // Out of memory is a crash whatever the unit lists.
        assert_eq!(
            kind_of(main_exit(Some(75), None, true)).unwrap().0,
            ProblemKind::Crash
        );
    }
}
