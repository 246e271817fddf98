//! The agent's TOML configuration: schema, defaults, loading and validation.
//!
//! `deploy/selfheal.toml` documents every key with its default; a test keeps it honest.

mod duration;
mod error;
mod schema;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::ConfigError;
pub use schema::{Config, RestartPolicy, UnitPolicy};

use error::{Source, Step};

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

    /// Checks what the schema's types cannot; errors point at the offending value.
    fn validate(&self, source: &Source<'_>) -> Result<(), ConfigError> {
        let paths = [
            ("status_socket", &self.agent.status_socket),
            ("state_dir", &self.agent.state_dir),
        ];
        for (key, value) in paths {
            if value.as_os_str().is_empty() {
                let at = [Step::Key("agent".into()), Step::Key(key.into())];
                return Err(source.error(&at, "expected a path, found an empty string".into()));
            }
        }
        for (index, unit) in self.units.iter().enumerate() {
            let at = |index| {
                [
                    Step::Key("unit".into()),
                    Step::Index(index),
                    Step::Key("name".into()),
                ]
            };
            if let Some(problem) = unit_name_problem(&unit.name) {
                return Err(source.error(&at(index), problem));
            }
            if let Some(first) = self.units[..index]
                .iter()
                .position(|other| other.name == unit.name)
            {
                let line = source.line_of(&at(first)).unwrap_or_default();
                let message = format!(
                    "duplicate unit \"{}\", first configured at line {line}; each unit may appear only once",
                    unit.name
                );
                return Err(source.error(&at(index), message));
            }
        }
        Ok(())
    }
}

/// Why `name` is not a systemd unit name, if it is not one.
fn unit_name_problem(name: &str) -> Option<String> {
    let expected = "expected a systemd unit name such as \"web.service\"";
    if name.is_empty() {
        return Some(format!("{expected}, found an empty string"));
    }
    if name.contains('/') {
        return Some(format!("{expected}, found {name:?}, which contains \"/\""));
    }
    if name.contains(char::is_whitespace) {
        return Some(format!(
            "{expected}, found {name:?}, which contains whitespace"
        ));
    }
    let known = UNIT_SUFFIXES
        .iter()
        .any(|suffix| name.len() > suffix.len() && name.ends_with(suffix));
    if !known {
        let suffixes = UNIT_SUFFIXES
            .map(|suffix| format!("\"{suffix}\""))
            .join(", ");
        return Some(format!(
            "{expected}, found {name:?}; a unit name is a name followed by one of {suffixes}"
        ));
    }
    None
}
