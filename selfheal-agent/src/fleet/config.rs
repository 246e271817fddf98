//! `[fleet]`: how this agent reaches etcd and the fleet-wide limits it obeys. Off unless
//! `endpoints` names at least one etcd member; without it the agent behaves as a lone host.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de};

use crate::config::duration;

/// A number of hosts, or a percentage of the hosts that run a group: `1` or `"25%"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Count(u32),
    Percent(u8),
}

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(i64),
            Text(String),
        }
        let expected = "expected a number of hosts such as 1 or a percentage such as \"25%\"";
        match Raw::deserialize(d)? {
            Raw::Count(n) if n >= 1 => Ok(Share::Count(u32::try_from(n).unwrap_or(u32::MAX))),
            Raw::Count(n) => Err(de::Error::custom(format!("{expected}, found {n}"))),
            Raw::Text(text) => text
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u8>().ok())
                .filter(|p| (1..=100).contains(p))
                .map(Share::Percent)
                .ok_or_else(|| de::Error::custom(format!("{expected}, found {text:?}"))),
        }
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Share::Count(n) => write!(f, "{n}"),
            Share::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `[fleet]`. Each default is written once, in `Default` below.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// etcd client URLs, e.g. `["http://10.0.0.1:2379"]`; empty means fleet mode is off.
    pub endpoints: Vec<String>,
    /// The fleet's name: every key lives under `/selfheal/<name>/`.
    pub name: String,
    /// This host's name in the fleet; the kernel's hostname when empty.
    pub host: String,
    /// This host's zone (informational: shown by `fleet status`).
    pub zone: String,
    /// TLS: the CA that signed the etcd members' certificates, and this client's own pair.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// etcd user and password, when etcd has authentication on.
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long a slot (and this host's registration) outlives its holder's last keep-alive.
    #[serde(deserialize_with = "duration::deserialize")]
    pub lease_ttl: Duration,
    /// How long a disruptive action waits for the fleet (a pause, an open breaker, a full budget)
    /// before it is held (not executed).
    #[serde(deserialize_with = "duration::deserialize")]
    pub slot_wait: Duration,
    /// How long a slot stays held after a successful action, so the unit can settle.
    #[serde(deserialize_with = "duration::deserialize")]
    pub settle: Duration,
    /// The budget of a group whose units set no `max_disrupted`.
    pub max_disrupted: Share,
    /// The fleet breaker opens when more than this share (or count) of a group's hosts report
    /// it failing within `breaker_window`.
    pub breaker_threshold: Share,
    #[serde(deserialize_with = "duration::deserialize")]
    pub breaker_window: Duration,
    /// How long an open breaker waits before letting one canary host try.
    #[serde(deserialize_with = "duration::deserialize")]
    pub breaker_cooldown: Duration,
    /// Fail-static: restarts of dead units allowed per unit per `offline_window` while etcd is
    /// unreachable (tightened local limits; disruptive actions are held outright).
    pub offline_restarts: u32,
    #[serde(deserialize_with = "duration::deserialize")]
    pub offline_window: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            name: "default".into(),
            host: String::new(),
            zone: String::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            lease_ttl: Duration::from_secs(6),
            slot_wait: Duration::from_secs(600),
            settle: Duration::from_secs(10),
            max_disrupted: Share::Count(1),
            breaker_threshold: Share::Percent(50),
            breaker_window: Duration::from_secs(300),
            breaker_cooldown: Duration::from_secs(60),
            offline_restarts: 3,
            offline_window: Duration::from_secs(600),
        }
    }
}

impl FleetConfig {
    pub fn enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// What the types cannot check, as (key, message) for the config's error reporting.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled() {
            return Ok(());
        }
        if self.name.is_empty() || self.name.contains('/') {
            let found = &self.name;
            return Err((
                "name",
                format!("expected a fleet name without \"/\", found {found:?}"),
            ));
        }
        if let Some(bad) = self.endpoints.iter().find(|e| !e.contains("://")) {
            let message =
                format!("expected an URL such as \"http://10.0.0.1:2379\", found {bad:?}");
            return Err(("endpoints", message));
        }
        if self.lease_ttl < Duration::from_secs(2) {
            return Err((
                "lease_ttl",
                "expected at least 2s (etcd leases count whole seconds)".into(),
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(("cert_file", "cert_file and key_file go together".into()));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(("username", "username and password go together".into()));
        }
        Ok(())
    }
}
