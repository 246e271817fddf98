//! `/health`: the agent's judgement of itself and its units, from facts the engine hands over.
//!
//! Pure: [`assess`] turns a [`HealthInput`] snapshot into the [`HealthReport`] served as JSON.
//! - healthy: every unit active with no problem in progress, every kernel hook attached;
//! - degraded: a unit not active, with a problem being healed or with its circuit breaker open
//!   (healing suspended), or a kernel hook missing;
//! - critical: a unit failed, or one the agent escalated (gave up healing), or a part of the
//!   agent stopped (it is blind to what that part saw).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::metrics::CircuitState;

/// What the engine knows, at the moment `/health` is asked.
#[derive(Clone, Debug, Default)]
pub struct HealthInput {
    pub units: Vec<UnitHealth>,
    pub hooks: Vec<HookHealth>,
    /// Parts of the agent whose task stopped: what the agent no longer sees or does.
    pub blind: Vec<(String, String)>,
    pub uptime: Duration,
}

#[derive(Clone, Debug)]
pub struct UnitHealth {
    pub name: String,
    /// systemd's `ActiveState`: "active", "failed", "inactive", "activating", ...
    pub active_state: String,
    /// The kind of the problem in progress, if any (`ProblemKind::name`).
    pub problem: Option<String>,
    /// The agent has given up on the problem and handed it to an operator.
    pub escalated: bool,
    pub circuit: CircuitState,
    /// A healing action is running.
    pub recovering: bool,
}

#[derive(Clone, Debug)]
pub struct HookHealth {
    pub name: String,
    pub attached: bool,
    /// What the agent cannot see while the hook is missing.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Healthy,
    Degraded,
    Critical,
}

/// The `/health` document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub overall: Overall,
    /// One per unit, then one per kernel hook.
    pub checks: Vec<Check>,
    pub uptime_seconds: u64,
    /// Units with a healing action running.
    pub active_recoveries: usize,
    pub circuit_breakers: CircuitCounts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// "unit" or "kernel_hook".
    pub kind: String,
    pub status: Overall,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitCounts {
    pub closed: usize,
    pub half_open: usize,
    pub open: usize,
}

pub fn assess(input: &HealthInput) -> HealthReport {
    let mut checks: Vec<Check> = input.units.iter().map(unit_check).collect();
    checks.extend(input.hooks.iter().map(hook_check));
    checks.extend(input.blind.iter().map(|(name, detail)| Check {
        name: name.clone(),
        kind: "agent_task".to_owned(),
        status: Overall::Critical,
        detail: format!("stopped: {detail}"),
    }));
    let mut circuits = CircuitCounts::default();
    for unit in &input.units {
        match unit.circuit {
            CircuitState::Closed => circuits.closed += 1,
            CircuitState::HalfOpen => circuits.half_open += 1,
            CircuitState::Open => circuits.open += 1,
        }
    }
    HealthReport {
        overall: checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Overall::Healthy),
        checks,
        uptime_seconds: input.uptime.as_secs(),
        active_recoveries: input.units.iter().filter(|u| u.recovering).count(),
        circuit_breakers: circuits,
    }
}

fn unit_check(unit: &UnitHealth) -> Check {
    let problem = unit.problem.as_deref();
    let (status, detail) = if unit.escalated {
        let what = problem.unwrap_or("a problem");
        (
            Overall::Critical,
            format!("escalated: {what} needs an operator"),
        )
    } else if unit.active_state == "failed" {
        (Overall::Critical, "failed".to_owned())
    } else if let Some(problem) = problem {
        let doing = if unit.recovering {
            "recovering"
        } else {
            "detected"
        };
        (
            Overall::Degraded,
            format!("{}; {problem} {doing}", unit.active_state),
        )
    } else if unit.recovering {
        (
            Overall::Degraded,
            format!("{}; recovering", unit.active_state),
        )
    } else if unit.active_state != "active" {
        (Overall::Degraded, unit.active_state.clone())
    } else {
        (Overall::Healthy, "active".to_owned())
    };
    let (status, detail) = match unit.circuit {
        CircuitState::Closed => (status, detail),
        CircuitState::HalfOpen => (status, format!("{detail}; circuit half-open")),
        // The unit may look fine, but the agent would not heal it now.
        CircuitState::Open => (
            status.max(Overall::Degraded),
            format!("{detail}; circuit open: healing suspended"),
        ),
    };
    Check {
        name: unit.name.clone(),
        kind: "unit".to_owned(),
        status,
        detail,
    }
}

fn hook_check(hook: &HookHealth) -> Check {
    let (status, detail) = if hook.attached {
        (Overall::Healthy, "attached".to_owned())
    } else {
        (Overall::Degraded, format!("missing: {}", hook.detail))
    };
    Check {
        name: hook.name.clone(),
        kind: "kernel_hook".to_owned(),
        status,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, active_state: &str) -> UnitHealth {
        UnitHealth {
            name: name.to_owned(),
            active_state: active_state.to_owned(),
            problem: None,
            escalated: false,
            circuit: CircuitState::Closed,
            recovering: false,
        }
    }

    fn hook(name: &str, attached: bool) -> HookHealth {
        HookHealth {
            name: name.to_owned(),
            attached,
            detail: "process exits are not seen".to_owned(),
        }
    }

    fn input(units: Vec<UnitHealth>, hooks: Vec<HookHealth>) -> HealthInput {
        HealthInput {
            units,
            hooks,
            blind: Vec::new(),
            uptime: Duration::from_secs(185),
        }
    }

    #[test]
    fn all_units_active_and_all_hooks_attached_is_healthy() {
        let report = assess(&input(
            vec![unit("a.service", "active"), unit("b.service", "active")],
            vec![hook("sched_process_exit", true)],
        ));
        assert_eq!(report.overall, Overall::Healthy);
        assert_eq!(report.checks.len(), 3);
        assert_eq!(report.checks[2].kind, "kernel_hook");
        assert_eq!(report.uptime_seconds, 185);
    }

    #[test]
    fn no_units_and_no_hooks_is_healthy() {
        assert_eq!(assess(&HealthInput::default()).overall, Overall::Healthy);
    }

    #[test]
    fn a_unit_recovering_makes_the_agent_degraded() {
        let mut web = unit("web.service", "activating");
        web.problem = Some("crash".to_owned());
        web.recovering = true;
        let report = assess(&input(vec![web, unit("b.service", "active")], vec![]));
        assert_eq!(report.overall, Overall::Degraded);
        assert_eq!(report.checks[0].detail, "activating; crash recovering");
        assert_eq!(report.active_recoveries, 1);
    }

    #[test]
    fn a_problem_detected_but_not_yet_acted_on_is_degraded() {
        let mut web = unit("web.service", "active");
        web.problem = Some("hung".to_owned());
        let report = assess(&input(vec![web], vec![]));
        assert_eq!(report.overall, Overall::Degraded);
        assert_eq!(report.active_recoveries, 0);
    }

    #[test]
    fn a_missing_kernel_hook_makes_the_agent_degraded() {
        let report = assess(&input(
            vec![unit("web.service", "active")],
            vec![
                hook("sched_process_exit", false),
                hook("oom_mark_victim", true),
            ],
        ));
        assert_eq!(report.overall, Overall::Degraded);
        assert_eq!(
            report.checks[1].detail,
            "missing: process exits are not seen"
        );
    }

    #[test]
    fn an_inactive_unit_without_a_problem_is_degraded_not_healthy() {
        let report = assess(&input(vec![unit("late.service", "inactive")], vec![]));
        assert_eq!(report.overall, Overall::Degraded);
    }

    #[test]
    fn a_failed_unit_is_critical_even_with_a_missing_hook() {
        let report = assess(&input(
            vec![unit("web.service", "failed"), unit("b.service", "active")],
            vec![hook("sched_process_exit", false)],
        ));
        assert_eq!(report.overall, Overall::Critical);
        assert_eq!(report.checks[0].status, Overall::Critical);
        assert_eq!(report.checks[1].status, Overall::Healthy);
    }

    #[test]
    fn an_escalated_unit_is_critical_even_when_active() {
        let mut web = unit("web.service", "active");
        web.problem = Some("memory_leak".to_owned());
        web.escalated = true;
        web.circuit = CircuitState::Open;
        let report = assess(&input(vec![web], vec![]));
        assert_eq!(report.overall, Overall::Critical);
        assert_eq!(
            report.checks[0].detail,
            "escalated: memory_leak needs an operator; circuit open: healing suspended"
        );
    }

    #[test]
    fn an_open_circuit_degrades_an_otherwise_healthy_unit() {
        let mut web = unit("web.service", "active");
        web.circuit = CircuitState::Open;
        let report = assess(&input(vec![web], vec![]));
        assert_eq!(report.overall, Overall::Degraded);
        assert_eq!(
            report.checks[0].detail,
            "active; circuit open: healing suspended"
        );
    }

    #[test]
    fn circuit_breakers_are_counted_by_state() {
        let mut open = unit("a.service", "active");
        open.circuit = CircuitState::Open;
        let mut half = unit("b.service", "active");
        half.circuit = CircuitState::HalfOpen;
        let report = assess(&input(
            vec![
                open,
                half,
                unit("c.service", "active"),
                unit("d.service", "active"),
            ],
            vec![],
        ));
        assert_eq!(
            report.circuit_breakers,
            CircuitCounts {
                closed: 2,
                half_open: 1,
                open: 1
            }
        );
    }

    #[test]
    fn the_report_serializes_with_snake_case_states() {
        let report = assess(&input(vec![unit("web.service", "failed")], vec![]));
        let json = serde_json::to_value(&report).expect("serializable");
        assert_eq!(json["overall"], "critical");
        assert_eq!(json["checks"][0]["status"], "critical");
        assert_eq!(json["circuit_breakers"]["half_open"], 0);
        assert_eq!(json["uptime_seconds"], 185);
    }

    #[test]
    fn a_stopped_part_of_the_agent_is_critical_and_named() {
        let mut blind = input(vec![unit("web.service", "active")], vec![]);
        blind.blind = vec![("exit reader".into(), "process exits".into())];
        let report = assess(&blind);
        assert_eq!(report.overall, Overall::Critical);
        let check = report.checks.last().expect("a check");
        assert_eq!(
            (check.kind.as_str(), check.detail.as_str()),
            ("agent_task", "stopped: process exits")
        );
    }
}
