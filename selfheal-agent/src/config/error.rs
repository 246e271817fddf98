//! Config errors, and turning toml/serde errors into `file:line:col: key: message`.

use std::io;
use std::ops::Range;
use std::path::PathBuf;

use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The message already includes the OS error's text; `source()` returns it too.
    #[error("cannot read {}: {}", path.display(), io_message(source))]
    Io { path: PathBuf, source: io::Error },
    /// `line` and `col` are 1-based and point at the offending value or key; `key` is the dotted
    /// key path without array indices (`unit.restart`), empty for TOML syntax errors.
    #[error("{origin}:{line}:{col}: {}{message}", key_prefix(key))]
    Invalid {
        origin: String,
        line: usize,
        col: usize,
        key: String,
        message: String,
    },
}

/// The OS message without Rust's " (os error 2)" suffix.
fn io_message(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// One step of a path into the document: a table key or an array index.
#[derive(Debug)]
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// The parsed document, kept after deserializing to turn paths into spans (for errors found by
/// validation, and for the type of a wrongly typed value) and spans into line:col.
pub(super) struct Source<'a> {
    origin: &'a str,
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Source<'a> {
    /// Parses the TOML syntax only; syntax errors keep toml's message.
    pub(super) fn parse(text: &'a str, origin: &'a str) -> Result<Self, ConfigError> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Self { origin, text, root }),
            Err(error) => {
                // The first line is toml's message; the rest is a rendered snippet, which line:col replaces.
                let message = error.message().lines().next().unwrap_or_default();
                let position = line_col(text, error.span().map_or(0, |span| span.start));
                Err(invalid(origin, position, &[], requote(message)))
            }
        }
    }

    /// A serde deserializer over the whole document.
    pub(super) fn deserializer(&self) -> toml::de::Deserializer<'a> {
        toml::de::Deserializer::from(self.root.clone())
    }

    /// The value at `path`, if the file has it.
    fn lookup(&self, path: &[Step]) -> Option<&Spanned<DeValue<'a>>> {
        let (Step::Key(first), rest) = path.split_first()? else {
            return None;
        };
        let mut value = self.root.get_ref().get(first.as_str())?;
        for step in rest {
            value = match step {
                Step::Key(key) => value.get_ref().get(key),
                Step::Index(index) => value.get_ref().get(*index),
            }?;
        }
        Some(value)
    }

    /// 1-based line of the value at `path`.
    pub(super) fn line_of(&self, path: &[Step]) -> Option<usize> {
        let value = self.lookup(path)?;
        Some(line_col(self.text, value.span().start).0)
    }

    /// An error pointing at the value at `path`, or, when the file leaves that key out (a
    /// required key a check misses, a value inherited from elsewhere), at the nearest table
    /// that holds it.
    pub(super) fn error(&self, path: &[Step], message: String) -> ConfigError {
        let span = (1..=path.len())
            .rev()
            .find_map(|len| self.lookup(&path[..len]))
            .map(Spanned::span);
        self.error_at(span, path, message)
    }

    fn error_at(&self, span: Option<Range<usize>>, path: &[Step], message: String) -> ConfigError {
        let position = line_col(self.text, span.map_or(0, |span| span.start));
        invalid(self.origin, position, path, message)
    }

    /// Rewrites a serde error into the config's "expected ..., found ..." wording.
    pub(super) fn serde_error(
        &self,
        error: serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
        let mut path = Vec::new();
        let mut inside_enum = false;
        for segment in error.path() {
            match segment {
                Segment::Map { key } => path.push(Step::Key(key.clone())),
                Segment::Seq { index } => path.push(Step::Index(*index)),
                Segment::Enum { .. } => {
                    inside_enum = true;
                    break;
                }
                Segment::Unknown => {}
            }
        }
        let error = error.into_inner();
        let raw = error.message();
        let found = || {
            self.lookup(&path)
                .map_or("something else", |value| a_type(value.get_ref()))
        };
        if inside_enum || raw.starts_with("wanted ") {
            // toml's wording when an enum gets a table or a non-string; point at the whole value.
            return self.error(&path, format!("expected a string, found {}", found()));
        }
        let message = if let Some(rest) = raw.strip_prefix("unknown variant ") {
            let (name, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            format!("expected {}, found {}", choices(expected), quoted(name))
        } else if let Some(rest) = raw.strip_prefix("unknown field ") {
            let (name, expected) = rest.split_once(", ").unwrap_or((rest, ""));
            match expected.strip_prefix("expected ") {
                Some(expected) => format!(
                    "unknown key {}; expected {}",
                    quoted(name),
                    choices(expected)
                ),
                None => format!("unknown key {}; this table takes no keys", quoted(name)),
            }
        } else if let Some(name) = raw.strip_prefix("missing field ") {
            format!("missing required key {}", quoted(name))
        } else if let Some(rest) = raw.strip_prefix("invalid type: ") {
            let (_, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            format!("expected {}, found {}", toml_type(expected), found())
        } else if let Some(rest) = raw.strip_prefix("invalid value: ") {
            let (value, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            format!("expected {expected}, found {}", literal(value))
        } else {
            requote(raw)
        };
        self.error_at(error.span(), &path, message)
    }
}

fn invalid(
    origin: &str,
    (line, col): (usize, usize),
    path: &[Step],
    message: String,
) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        line,
        col,
        key: dotted(path),
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// `unit.restart` for `[Key("unit"), Index(0), Key("restart")]`; keys that are not bare TOML
/// keys are quoted so the path stays unambiguous.
fn dotted(path: &[Step]) -> String {
    let keys = path.iter().filter_map(|step| match step {
        Step::Key(key)
            if !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Some(key.clone())
        }
        Step::Key(key) => Some(format!("{key:?}")),
        Step::Index(_) => None,
    });
    keys.collect::<Vec<_>>().join(".")
}

/// Backticked names become `"name"`, or `'"'` for a quote itself.
fn requote(message: &str) -> String {
    let mut out = String::new();
    for (index, part) in message.split('`').enumerate() {
        match (index % 2 == 1, part.contains('"')) {
            (false, _) => out.push_str(part),
            (true, false) => out.push_str(&format!("\"{part}\"")),
            (true, true) => out.push_str(&format!("'{part}'")),
        }
    }
    out
}

/// "`a`" → "\"a\"".
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.trim_matches('`'))
}

/// serde's "one of `a`, `b`" / "`a` or `b`" / "`a`" → `one of "a", "b"` (or `"a"` alone).
fn choices(expected: &str) -> String {
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let list = names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>();
    match list.as_slice() {
        [only] => only.clone(),
        _ => format!("one of {}", list.join(", ")),
    }
}

/// serde's description of an unexpected value (`string "x"`, ``integer `-5` ``) as a TOML literal.
fn literal(unexpected: &str) -> String {
    match unexpected.strip_prefix("string ") {
        Some(string) => string.to_owned(),
        None => unexpected
            .split('`')
            .nth(1)
            .unwrap_or(unexpected)
            .to_owned(),
    }
}

/// serde's name for an expected Rust type, in TOML's words.
fn toml_type(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => "an integer",
        "f32" | "f64" => "a float",
        "path string" => "a string",
        "a sequence" => "an array",
        "a map" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => other,
    }
}

fn a_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
