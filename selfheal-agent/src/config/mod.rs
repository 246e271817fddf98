//! The agent's TOML configuration: schema, defaults, loading and validation.
//!
//! `deploy/selfheal.toml` documents every key with its default; a test keeps it honest.

pub(crate) mod duration;
mod error;
mod schema;
#[cfg(test)]
mod tests;
mod validate;

use std::path::Path;

pub use error::ConfigError;
pub use schema::{AgentConfig, Config, RestartPolicy, UnitConfig, UnitDefaults, UnitPolicy};

use error::Source;

/// systemd unit types (`systemd.unit(5)`); a unit name ends in one of them.
const UNIT_SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

impl Config {
    /// Where the agent looks for its config when not told otherwise.
    pub fn default_path() -> &'static Path {
        Path::new("/etc/selfheal/selfheal.toml")
    }

    /// Reads and parses the file at `path`; errors name the path as given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let source = Source::parse(text, origin)?;
        let config: Config = serde_path_to_error::deserialize(source.deserializer())
            .map_err(|error| source.serde_error(error))?;
        config.validate(&source)?;
        Ok(config)
    }
}
