//! The shape of `selfheal.toml`. Each default is written once, in a `Default` impl below, and
//! `#[serde(default)]` on each table fills in the keys a file leaves out.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use crate::detect::leak::{LeakConfig, LeakOverrides};
use crate::detect::stall::{StallConfig, StallOverrides};
use crate::fleet::{FleetConfig, Share};
use crate::policy::{PolicyConfig, Remediation, RemediationConfig};
use crate::report::alert_out::AlertmanagerConfig;
use crate::report::http::HttpConfig;
use crate::report::webhook::WebhookConfig;
use crate::sensors::probes::{DetectorConfig, ProbeConfig};

/// The whole configuration file. Not `Eq`: `[policy]` holds floats.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub defaults: UnitDefaults,
    /// One `[[unit]]` table per supervised unit, in file order.
    #[serde(rename = "unit")]
    pub units: Vec<UnitConfig>,
    pub policy: PolicyConfig,
    pub http: HttpConfig,
    pub webhook: WebhookConfig,
    pub alertmanager: AlertmanagerConfig,
    /// `[fleet]`: coordination with other hosts through etcd; off unless it names endpoints.
    pub fleet: FleetConfig,
}

/// `[agent]`: the agent process itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Unix socket that `selfheal-agent status` connects to.
    pub status_socket: PathBuf,
    /// Where the agent keeps state across restarts.
    pub state_dir: PathBuf,
    /// The audit log: one JSON line per decision and per action outcome.
    pub audit_log: PathBuf,
    /// How often per-unit state is re-evaluated.
    #[serde(deserialize_with = "duration::deserialize")]
    pub tick: Duration,
    /// Whether network quarantine lets loopback traffic (127.0.0.0/8 and ::1) through. Off by
    /// default: a quarantined unit could otherwise still reach local databases and proxies.
    pub quarantine_allow_loopback: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            status_socket: PathBuf::from("/run/selfheal/agent.sock"),
            state_dir: PathBuf::from("/var/lib/selfheal"),
            audit_log: PathBuf::from("/var/log/selfheal/actions.jsonl"),
            tick: Duration::from_secs(1),
            quarantine_allow_loopback: false,
        }
    }
}

/// `[defaults]`: applied to every `[[unit]]` that does not set the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnitDefaults {
    pub restart: RestartPolicy,
    /// How long to wait after an exit before restarting.
    #[serde(deserialize_with = "duration::deserialize")]
    pub restart_delay: Duration,
    pub stall: StallConfig,
    pub leak: LeakConfig,
    pub remediation: RemediationConfig,
}

impl Default for UnitDefaults {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::OnFailure,
            restart_delay: Duration::ZERO,
            stall: StallConfig::default(),
            leak: LeakConfig::default(),
            remediation: RemediationConfig::default(),
        }
    }
}

/// One `[[unit]]` table. `None` means "use `[defaults]`".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// systemd unit name, e.g. `web.service` or `crypto-agent@BTC.service`.
    pub name: String,
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub restart_delay: Option<Duration>,
    #[serde(default)]
    pub stall: StallOverrides,
    #[serde(default)]
    pub leak: LeakOverrides,
    /// Ladders and the rest, key by key over `[defaults.remediation]`.
    #[serde(default)]
    pub remediation: RemediationConfig,
    /// `[[unit.probe]]` tables, in file order.
    #[serde(default, rename = "probe")]
    pub probes: Vec<ProbeConfig>,
    /// `[[unit.detector]]` tables, in file order.
    #[serde(default, rename = "detector")]
    pub detectors: Vec<DetectorConfig>,
    /// Fleet mode: the group whose disruption budget the unit shares (default: its name).
    #[serde(default)]
    pub group: Option<String>,
    /// Fleet mode: hosts that may disrupt the group at once, `1` or `"25%"` of its hosts
    /// (default: `[fleet] max_disrupted`).
    #[serde(default)]
    pub max_disrupted: Option<Share>,
}

/// When a unit that exited should be started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Whether an exit should be followed by a restart; `clean_exit` is systemd's notion of a
    /// successful exit (status 0 or one of the unit's `SuccessExitStatus=`).
    pub fn wants_restart(&self, clean_exit: bool) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => !clean_exit,
            Self::Never => false,
        }
    }

    /// The spelling used in the config file.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::Never => "never",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the agent does for one unit, with `[defaults]` already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPolicy {
    pub name: String,
    pub restart: RestartPolicy,
    pub restart_delay: Duration,
    pub stall: StallConfig,
    pub leak: LeakConfig,
    pub remediation: Remediation,
    pub probes: Vec<ProbeConfig>,
    pub detectors: Vec<DetectorConfig>,
}

impl UnitPolicy {
    /// Whether the unit has probes or custom detectors to run.
    pub fn probed(&self) -> bool {
        !self.probes.is_empty() || !self.detectors.is_empty()
    }
}

impl Config {
    /// One resolved policy per `[[unit]]`, in file order.
    pub fn unit_policies(&self) -> Vec<UnitPolicy> {
        self.units
            .iter()
            .map(|unit| UnitPolicy {
                name: unit.name.clone(),
                restart: unit.restart.unwrap_or(self.defaults.restart),
                restart_delay: unit.restart_delay.unwrap_or(self.defaults.restart_delay),
                stall: unit.stall.resolve(&self.defaults.stall),
                leak: unit.leak.resolve(&self.defaults.leak),
                remediation: self.remediation(unit),
                probes: unit.probes.clone(),
                detectors: unit.detectors.clone(),
            })
            .collect()
    }

    /// The unit's remediation. `validate` has resolved it once already, so the fallbacks are
    /// only reached by a `Config` built in code: the defaults alone, then the built-in ladders.
    fn remediation(&self, unit: &UnitConfig) -> Remediation {
        let defaults = &self.defaults.remediation;
        Remediation::resolve(&unit.name, defaults, &unit.remediation)
            .or_else(|_| Remediation::resolve(&unit.name, defaults, &RemediationConfig::default()))
            .unwrap_or_default()
    }
}
