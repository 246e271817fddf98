//! The policy: problems in, decisions out. Pure: it keeps its own state, calls nothing, and
//! takes the time as a parameter. The actuators report outcomes back through [`Policy::finished`].
//!
//! For now it applies each unit's restart policy (`always`, `on-failure`, `never`) with its
//! delay, refuses to fight systemd or an operator stopping the unit, and never runs two
//! actions on one unit at once.

use std::{collections::HashSet, time::Duration};

use crate::{
    config::{RestartPolicy, UnitPolicy},
    detect::{Problem, ProblemKind},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Restart { delay: Duration },
    Skip { reason: String },
}

impl Decision {
    pub fn action_name(&self) -> &'static str {
        match self {
            Decision::Restart { .. } => "restart",
            Decision::Skip { .. } => "none",
        }
    }
}

/// What the policy needs to know about the unit besides the problem.
#[derive(Clone, Copy, Debug)]
pub struct UnitContext<'a> {
    pub policy: &'a UnitPolicy,
    /// A stop job is pending or ran: the exit was asked for.
    pub stopping: bool,
}

#[derive(Debug, Default)]
pub struct Policy {
    /// Units with an action in progress.
    in_flight: HashSet<u32>,
}

impl Policy {
    pub fn decide(&mut self, problem: &Problem, unit: UnitContext<'_>) -> Decision {
        let skip = |reason: &str| Decision::Skip {
            reason: reason.to_owned(),
        };
        if unit.stopping {
            return skip("the unit is being stopped by systemd or an operator");
        }
        if self.in_flight.contains(&problem.unit) {
            return skip("an action on this unit is already in progress");
        }
        let clean = problem.kind == ProblemKind::Exit;
        if !unit.policy.restart.wants_restart(clean) {
            return skip(match unit.policy.restart {
                RestartPolicy::Never => "restart = \"never\"",
                _ => "restart = \"on-failure\" and the exit was clean",
            });
        }
        self.in_flight.insert(problem.unit);
        Decision::Restart {
            delay: unit.policy.restart_delay,
        }
    }

    /// The action on `unit` has ended, whatever its outcome.
    pub fn finished(&mut self, unit: u32) {
        self.in_flight.remove(&unit);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn unit(restart: RestartPolicy) -> UnitPolicy {
        UnitPolicy {
            name: "web.service".into(),
            restart,
            restart_delay: Duration::from_secs(2),
        }
    }

    fn problem(kind: ProblemKind) -> Problem {
        Problem {
            unit: 7,
            kind,
            detected_at: Instant::now(),
            evidence: String::new(),
            pid: Some(1),
            unkillable: false,
        }
    }

    fn ctx(policy: &UnitPolicy) -> UnitContext<'_> {
        UnitContext {
            policy,
            stopping: false,
        }
    }

    #[test]
    fn on_failure_restarts_a_crash_after_the_delay() {
        let p = unit(RestartPolicy::OnFailure);
        let d = Policy::default().decide(&problem(ProblemKind::Crash), ctx(&p));
        assert_eq!(
            d,
            Decision::Restart {
                delay: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn on_failure_leaves_a_clean_exit_alone() {
        let p = unit(RestartPolicy::OnFailure);
        let d = Policy::default().decide(&problem(ProblemKind::Exit), ctx(&p));
        assert!(matches!(d, Decision::Skip { .. }));
    }

    #[test]
    fn always_restarts_a_clean_exit_and_never_restarts_nothing() {
        let always = unit(RestartPolicy::Always);
        let never = unit(RestartPolicy::Never);
        let exit = problem(ProblemKind::Exit);
        assert!(matches!(
            Policy::default().decide(&exit, ctx(&always)),
            Decision::Restart { .. }
        ));
        let crash = problem(ProblemKind::Crash);
        assert!(matches!(
            Policy::default().decide(&crash, ctx(&never)),
            Decision::Skip { .. }
        ));
    }

    #[test]
    fn a_unit_being_stopped_is_not_restarted() {
        let p = unit(RestartPolicy::Always);
        let d = Policy::default().decide(
            &problem(ProblemKind::Crash),
            UnitContext {
                policy: &p,
                stopping: true,
            },
        );
        assert!(matches!(d, Decision::Skip { reason } if reason.contains("stopped")));
    }

    #[test]
    fn one_action_at_a_time_per_unit_until_it_finishes() {
        let p = unit(RestartPolicy::Always);
        let mut policy = Policy::default();
        let crash = problem(ProblemKind::Crash);
        assert!(matches!(
            policy.decide(&crash, ctx(&p)),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            policy.decide(&crash, ctx(&p)),
            Decision::Skip { .. }
        ));
        policy.finished(7);
        assert!(matches!(
            policy.decide(&crash, ctx(&p)),
            Decision::Restart { .. }
        ));
    }
}
