//! Scenario tests: a policy driven with synthetic problems, outcomes and an injected clock.

mod breaker;
mod config;
mod crash;
mod explain;
mod isolate;
mod persist;
mod scale;
mod storm;
mod verify;

use std::time::{Duration, Instant};

use super::*;
use crate::{
    config::RestartPolicy,
    detect::{Problem, ProblemKind, StallKind},
};

const SEED: u64 = 7;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A unit with the built-in ladders, restarted on failure, without a restart delay.
pub(crate) fn spec(name: &str) -> UnitSpec {
    UnitSpec {
        name: name.to_owned(),
        restart: RestartPolicy::OnFailure,
        restart_delay: Duration::ZERO,
        remediation: Remediation::default(),
    }
}

fn with_remediation(name: &str, toml: &str) -> UnitSpec {
    let own: RemediationConfig = ::toml::from_str(toml).expect("remediation table");
    UnitSpec {
        remediation: Remediation::resolve(name, &RemediationConfig::default(), &own)
            .expect("resolves"),
        ..spec(name)
    }
}

fn starved() -> ProblemKind {
    ProblemKind::Stall(StallKind::Starved)
}

/// A policy, a clock, and helpers to play the engine's part.
struct Harness {
    policy: Policy,
    t0: Instant,
    now: Instant,
}

impl Harness {
    /// The scenarios below were written for the backoff's mechanics: they wait before the first
    /// restart too (`immediate_first = false`); [`Harness::immediate`] plays the default.
    fn new(mut config: PolicyConfig, units: Vec<UnitSpec>) -> Self {
        config.backoff.immediate_first = false;
        Self::exactly(config, units)
    }

    /// A policy with exactly this config, first restarts immediate by default.
    fn exactly(config: PolicyConfig, units: Vec<UnitSpec>) -> Self {
        let t0 = Instant::now();
        Self {
            policy: Policy::new(config, units, SEED),
            t0,
            now: t0,
        }
    }

    fn one(unit: UnitSpec) -> Self {
        Self::new(PolicyConfig::default(), vec![unit])
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn problem(&mut self, unit: u32, kind: ProblemKind) -> Decision {
        self.problem_with(unit, kind, false, UnitContext::default())
    }

    fn problem_with(
        &mut self,
        unit: u32,
        kind: ProblemKind,
        unkillable: bool,
        context: UnitContext,
    ) -> Decision {
        let problem = Problem {
            unit,
            kind,
            detected_at: self.now,
            evidence: String::new(),
            pid: Some(100),
            unkillable,
        };
        self.policy.decide(&problem, &context, self.now)
    }

    fn crash(&mut self, unit: u32) -> Decision {
        self.problem(unit, ProblemKind::Crash)
    }

    fn report(&mut self, decision: &Decision, outcome: ActionOutcome) {
        for action in &decision.actions {
            self.policy
                .on_outcome(decision.unit, action, &outcome, self.now);
        }
    }

    fn done(&mut self, decision: &Decision) {
        self.report(decision, ActionOutcome::Done);
    }

    fn cleared(&mut self, unit: u32, kind: ProblemKind) {
        self.policy.on_cleared(unit, &kind, self.now);
    }

    fn tick(&mut self) -> Vec<Decision> {
        self.policy.tick(self.now)
    }

    /// Ticks every 10 ms for up to `limit` until a decision with actions comes for `unit`.
    fn next_action(&mut self, unit: u32, limit: Duration) -> Option<Decision> {
        let end = self.now + limit;
        while self.now <= end {
            let found = self
                .tick()
                .into_iter()
                .find(|d| d.unit == unit && !d.actions.is_empty());
            if found.is_some() {
                return found;
            }
            self.advance(Duration::from_millis(10));
        }
        None
    }

    /// Ticks once a second for `span` and returns every decision.
    fn run(&mut self, span: Duration) -> Vec<Decision> {
        let end = self.now + span;
        let mut all = Vec::new();
        while self.now < end {
            self.advance(secs(1));
            all.extend(self.tick());
        }
        all
    }

    fn status(&self, unit: u32) -> UnitPolicyStatus {
        self.policy
            .unit_status(unit, self.now)
            .expect("configured unit")
    }
}

fn has(decision: &Decision, wanted: &Action) -> bool {
    decision.actions.contains(wanted)
}

fn restarts(decisions: &[Decision], unit: u32) -> usize {
    decisions
        .iter()
        .filter(|d| d.unit == unit && has(d, &Action::Restart))
        .count()
}
