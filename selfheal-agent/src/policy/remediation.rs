//! `[defaults.remediation]` and `[unit.remediation]`: which strategies answer which problem kind
//! (an ordered ladder per kind), the fallback unit, the bases that `scale` multiplies, extra
//! template instances and how `isolate` isolates. A unit's table overrides `[defaults]` key by
//! key; kinds set in neither keep the built-in ladders of [`default_ladder`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{
    config::PolicyConfigError,
    sizes::{Bytes, CpuQuota},
};
use crate::detect::{ProblemKind, StallKind};

/// One way of answering a problem. Restarts repeat with backoff within the `restart` rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Restart,
    Fallback,
    Scale,
    Isolate,
    Escalate,
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Restart => "restart",
            Strategy::Fallback => "fallback",
            Strategy::Scale => "scale",
            Strategy::Isolate => "isolate",
            Strategy::Escalate => "escalate",
        }
    }
}

/// Strategies tried in order; a rung that cannot act (budget spent, no fallback declared, scale
/// at its maximum, ...) passes the problem to the next one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<Strategy>")]
pub struct Ladder(Vec<Strategy>);

impl TryFrom<Vec<Strategy>> for Ladder {
    type Error = String;

    fn try_from(rungs: Vec<Strategy>) -> Result<Self, String> {
        for (i, rung) in rungs.iter().enumerate() {
            if rungs[..i].contains(rung) {
                return Err(format!(
                    "\"{}\" appears twice; a ladder lists each strategy once",
                    rung.name()
                ));
            }
        }
        let escalate = rungs.iter().position(|r| *r == Strategy::Escalate);
        if let Some(after) = escalate.and_then(|i| rungs.get(i + 1)) {
            return Err(format!(
                "\"escalate\" must come last: \"{}\" after it could never run",
                after.name()
            ));
        }
        Ok(Ladder(rungs))
    }
}

impl Ladder {
    pub fn rungs(&self) -> &[Strategy] {
        &self.0
    }
}

/// How `isolate` isolates a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationKind {
    /// Freeze its processes.
    Freeze,
    /// Drop its network traffic (loopback too, unless [agent] quarantine_allow_loopback).
    Network,
}

/// `[defaults.remediation]` / `[unit.remediation]`, as written. Ladder keys are the problem
/// kinds' names ([`ProblemKind::name`]); kinds named by alerts go under `custom`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    pub crash: Option<Ladder>,
    pub exit: Option<Ladder>,
    pub stopped: Option<Ladder>,
    pub hung: Option<Ladder>,
    pub spinning: Option<Ladder>,
    pub wedged: Option<Ladder>,
    pub starved: Option<Ladder>,
    pub fd_leak: Option<Ladder>,
    pub socket_leak: Option<Ladder>,
    pub connection_leak: Option<Ladder>,
    pub thread_leak: Option<Ladder>,
    pub memory_leak: Option<Ladder>,
    pub consecutive_failures: Option<Ladder>,
    pub performance_degradation: Option<Ladder>,
    pub integration_failure: Option<Ladder>,
    /// Ladders for kinds raised by alerts or operator-written detectors, by their name.
    pub custom: BTreeMap<String, Ladder>,
    /// Unit started while this unit's circuit is open (only in a unit's own table).
    pub fallback: Option<String>,
    /// What `isolate` does; both when unset.
    pub isolation: Option<Vec<IsolationKind>>,
    /// Bases that `scale` multiplies; unset ones scale what systemd had at agent start.
    pub cpu_quota: Option<CpuQuota>,
    pub memory_max: Option<Bytes>,
    pub memory_high: Option<Bytes>,
    pub tasks_max: Option<u64>,
    /// For a numbered template instance (`worker@1.service`): `scale` also starts
    /// `worker@2.service`, ... up to this many instances in all.
    pub max_instances: Option<u32>,
}

impl RemediationConfig {
    /// The ladder keys with their kinds' names; a test keeps it in step with
    /// [`ProblemKind::BUILTIN`].
    fn ladder_fields(&self) -> [(&'static str, Option<&Ladder>); 15] {
        [
            ("crash", self.crash.as_ref()),
            ("exit", self.exit.as_ref()),
            ("stopped", self.stopped.as_ref()),
            ("hung", self.hung.as_ref()),
            ("spinning", self.spinning.as_ref()),
            ("wedged", self.wedged.as_ref()),
            ("starved", self.starved.as_ref()),
            ("fd_leak", self.fd_leak.as_ref()),
            ("socket_leak", self.socket_leak.as_ref()),
            ("connection_leak", self.connection_leak.as_ref()),
            ("thread_leak", self.thread_leak.as_ref()),
            ("memory_leak", self.memory_leak.as_ref()),
            ("consecutive_failures", self.consecutive_failures.as_ref()),
            (
                "performance_degradation",
                self.performance_degradation.as_ref(),
            ),
            ("integration_failure", self.integration_failure.as_ref()),
        ]
    }

    fn ladders(&self) -> impl Iterator<Item = (ProblemKind, &Ladder)> {
        let builtin = self
            .ladder_fields()
            .into_iter()
            .filter_map(|(name, ladder)| Some((ProblemKind::from_name(name), ladder?)));
        let custom = self
            .custom
            .iter()
            .map(|(name, ladder)| (ProblemKind::from_name(name), ladder));
        builtin.chain(custom)
    }
}

/// The built-in ladder for a kind no table sets.
pub fn default_ladder(kind: &ProblemKind) -> &'static [Strategy] {
    use Strategy::*;
    match kind {
        ProblemKind::Crash => &[Restart, Fallback, Escalate],
        ProblemKind::Stall(StallKind::Hung) => &[Escalate],
        ProblemKind::Stall(StallKind::Starved) => &[Scale],
        ProblemKind::IntegrationFailure => &[Fallback, Escalate],
        // An alert we know nothing about: recorded, not acted on, until a ladder names it.
        ProblemKind::Custom(_) => &[],
        ProblemKind::Exit
        | ProblemKind::Stall(_)
        | ProblemKind::Leak(_)
        | ProblemKind::ConsecutiveFailures
        | ProblemKind::PerformanceDegradation => &[Restart, Escalate],
    }
}

/// Limits that `scale` multiplies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaleBases {
    pub cpu_quota_percent: Option<u64>,
    pub memory_max: Option<u64>,
    pub memory_high: Option<u64>,
    pub tasks_max: Option<u64>,
}

/// `worker@1.service` as ("worker", 1, ".service"): extra instances count up from it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NumberedInstance {
    template: String,
    number: u64,
    suffix: String,
}

impl NumberedInstance {
    fn parse(unit: &str) -> Option<Self> {
        let (template, rest) = unit.split_once('@')?;
        let dot = rest.rfind('.')?;
        let (number, suffix) = rest.split_at(dot);
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            template: template.to_owned(),
            number: number.parse().ok()?,
            suffix: suffix.to_owned(),
        })
    }
}

/// One unit's remediation, `[defaults]` applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remediation {
    ladders: HashMap<ProblemKind, Vec<Strategy>>,
    pub fallback: Option<String>,
    pub freeze: bool,
    pub network_quarantine: bool,
    pub bases: ScaleBases,
    /// Instances in all, this one included; 1 means scale does not start instances.
    pub max_instances: u32,
    instance: Option<NumberedInstance>,
}

impl Default for Remediation {
    /// Built-in ladders and nothing else.
    fn default() -> Self {
        Self {
            ladders: HashMap::new(),
            fallback: None,
            freeze: true,
            network_quarantine: true,
            bases: ScaleBases::default(),
            max_instances: 1,
            instance: None,
        }
    }
}

impl Remediation {
    /// Applies `defaults` under `own` for the unit `name`; the error's key is relative to the
    /// remediation table that holds the bad value (`own` unless it says `defaults`).
    pub fn resolve(
        name: &str,
        defaults: &RemediationConfig,
        own: &RemediationConfig,
    ) -> Result<Self, PolicyConfigError> {
        for config in [defaults, own] {
            if let Some(builtin) = config
                .custom
                .keys()
                .find(|key| !matches!(ProblemKind::from_name(key), ProblemKind::Custom(_)))
            {
                return Err(PolicyConfigError::new(
                    &format!("custom.{builtin}"),
                    format!(
                        "\"{builtin}\" is a built-in problem kind: set `{builtin} = [...]` directly"
                    ),
                ));
            }
        }
        if defaults.fallback.is_some() {
            return Err(PolicyConfigError::new(
                "fallback",
                "a fallback belongs to one unit: set it in that unit's [unit.remediation], not in [defaults.remediation]",
            ));
        }
        if own.fallback.as_deref() == Some(name) {
            return Err(PolicyConfigError::new(
                "fallback",
                format!("\"{name}\" cannot be its own fallback"),
            ));
        }
        let isolation = own.isolation.as_ref().or(defaults.isolation.as_ref());
        if isolation.is_some_and(Vec::is_empty) {
            return Err(PolicyConfigError::new(
                "isolation",
                "expected [\"freeze\"], [\"network\"] or both; leave `isolate` out of the ladders to never isolate",
            ));
        }
        let instance = NumberedInstance::parse(name);
        let max_instances = match (own.max_instances, defaults.max_instances) {
            (Some(0), _) | (None, Some(0)) => {
                return Err(PolicyConfigError::new(
                    "max_instances",
                    "expected at least 1, found 0",
                ));
            }
            (Some(max), _) if max > 1 && instance.is_none() => {
                return Err(PolicyConfigError::new(
                    "max_instances",
                    format!(
                        "needs a numbered template instance such as \"worker@1.service\"; \"{name}\" is not one"
                    ),
                ));
            }
            (Some(max), _) => max,
            // The default only applies where it can.
            (None, Some(max)) if instance.is_some() => max,
            (None, _) => 1,
        };
        let mut ladders = HashMap::new();
        for config in [defaults, own] {
            for (kind, ladder) in config.ladders() {
                ladders.insert(kind, ladder.rungs().to_vec());
            }
        }
        let pick = |field: fn(&RemediationConfig) -> Option<u64>| field(own).or(field(defaults));
        Ok(Self {
            ladders,
            fallback: own.fallback.clone(),
            freeze: isolation.is_none_or(|kinds| kinds.contains(&IsolationKind::Freeze)),
            network_quarantine: isolation
                .is_none_or(|kinds| kinds.contains(&IsolationKind::Network)),
            bases: ScaleBases {
                cpu_quota_percent: pick(|c| c.cpu_quota.map(|q| q.0)),
                memory_max: pick(|c| c.memory_max.map(|b| b.0)),
                memory_high: pick(|c| c.memory_high.map(|b| b.0)),
                tasks_max: pick(|c| c.tasks_max),
            },
            max_instances,
            instance,
        })
    }

    /// The strategies for `kind`, in order.
    pub fn ladder(&self, kind: &ProblemKind) -> &[Strategy] {
        match self.ladders.get(kind) {
            Some(ladder) => ladder,
            None => default_ladder(kind),
        }
    }

    /// The `n`-th extra instance (1-based): `worker@2.service` for `worker@1.service`.
    pub fn extra_instance(&self, n: u32) -> Option<String> {
        let i = self.instance.as_ref()?;
        Some(format!(
            "{}@{}{}",
            i.template,
            i.number + u64::from(n),
            i.suffix
        ))
    }
}
