//! Unit patterns: one `[[unit]]` table that covers many units. Pure: names in, answers out.
//!
//! - `crypto-agent@*.service`: a glob (`*`, `?`, `[a-z]`, `[!0-9]`, as systemd's own
//!   `systemctl list-units PATTERN` reads it) over unit names;
//! - `trading.slice`: every service in that slice or in a slice below it
//!   (`trading-hft.slice`), as systemd nests slices by their dashes;
//! - `trading.slice/*.service`: the glob, within that slice.
//!
//! A name without any of these is an exact unit name. The tracker asks (through
//! `units::tables`) [`first_match`] about each unit systemd lists or announces (UnitNew,
//! JobNew) to decide whether a pattern adopts it.

use std::fmt;

/// Which units a `[[unit]]` name covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitPattern {
    Exact(String),
    Glob(String),
    Slice(String),
    GlobInSlice { slice: String, glob: String },
}

/// A pattern that cannot be used; `at` counts characters from the start of the name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {})", at + 1)]
pub struct PatternError {
    pub at: usize,
    pub message: String,
}

const GLOB_CHARS: [char; 3] = ['*', '?', '['];

impl UnitPattern {
    /// Reads a `[[unit]]` name. Checks the pattern's own syntax; whether an exact name is a
    /// valid unit name is the config's business.
    pub fn parse(name: &str) -> Result<Self, PatternError> {
        let error = |at, message: &str| PatternError {
            at,
            message: message.to_owned(),
        };
        if let Some((slice, glob)) = name.split_once('/') {
            if !slice.ends_with(".slice") || slice.contains(GLOB_CHARS) {
                return Err(error(
                    0,
                    "only a slice may come before \"/\", as in \"trading.slice/*.service\"",
                ));
            }
            let offset = slice.chars().count() + 1;
            check_glob(glob).map_err(|e| error(offset + e.at, &e.message))?;
            if glob.contains('/') {
                return Err(error(offset, "a pattern holds at most one \"/\""));
            }
            return Ok(Self::GlobInSlice {
                slice: slice.to_owned(),
                glob: glob.to_owned(),
            });
        }
        if name.contains(GLOB_CHARS) {
            check_glob(name)?;
            if name.ends_with(".slice") {
                return Err(error(
                    0,
                    "a glob over slices is not supported; name one slice, e.g. \"trading.slice\"",
                ));
            }
            return Ok(Self::Glob(name.to_owned()));
        }
        if name.ends_with(".slice") && name.len() > ".slice".len() {
            return Ok(Self::Slice(name.to_owned()));
        }
        Ok(Self::Exact(name.to_owned()))
    }

    /// Whether the unit `name`, living in `slice` (systemd's `Slice` property, when known),
    /// is covered. Only services are adopted by slice patterns.
    pub fn matches(&self, name: &str, slice: Option<&str>) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Glob(glob) => glob_matches(glob, name),
            Self::Slice(wanted) => {
                name.ends_with(".service") && slice.is_some_and(|s| slice_within(s, wanted))
            }
            Self::GlobInSlice {
                slice: wanted,
                glob,
            } => glob_matches(glob, name) && slice.is_some_and(|s| slice_within(s, wanted)),
        }
    }

    /// Whether the name alone leaves the unit possibly covered (its slice may decide the
    /// rest): the tracker reads a unit's slice only when this says so.
    pub fn may_match(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Glob(glob) | Self::GlobInSlice { glob, .. } => glob_matches(glob, name),
            Self::Slice(_) => name.ends_with(".service"),
        }
    }

    /// An exact name covers one unit; everything else may cover many, appearing over time.
    pub fn is_pattern(&self) -> bool {
        !matches!(self, Self::Exact(_))
    }
}

impl fmt::Display for UnitPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(s) | Self::Glob(s) | Self::Slice(s) => f.write_str(s),
            Self::GlobInSlice { slice, glob } => write!(f, "{slice}/{glob}"),
        }
    }
}

/// The first pattern (in config order) that covers the unit: config order decides when two
/// overlap, and an exact name listed anywhere wins over every pattern.
pub fn first_match(patterns: &[UnitPattern], name: &str, slice: Option<&str>) -> Option<usize> {
    patterns
        .iter()
        .position(|p| matches!(p, UnitPattern::Exact(e) if e == name))
        .or_else(|| patterns.iter().position(|p| p.matches(name, slice)))
}

/// `unit_slice` is `wanted` or below it: `a-b.slice` is inside `a.slice`, and `-.slice` (the
/// root) holds everything.
fn slice_within(unit_slice: &str, wanted: &str) -> bool {
    if wanted == "-.slice" || unit_slice == wanted {
        return true;
    }
    let prefix = wanted.trim_end_matches(".slice");
    unit_slice
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with('-'))
}

fn check_glob(glob: &str) -> Result<(), PatternError> {
    let chars: Vec<char> = glob.chars().collect();
    if chars.is_empty() {
        return Err(PatternError {
            at: 0,
            message: "an empty pattern matches no unit".into(),
        });
    }
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            let close = class_end(&chars, i).ok_or_else(|| PatternError {
                at: i,
                message: "\"[\" opens a character class that is never closed by \"]\"".into(),
            })?;
            i = close;
        }
        i += 1;
    }
    Ok(())
}

/// The index of the `]` closing the class opened at `open`. A `]` right after `[` or `[!` is
/// a member, as in fnmatch(3).
fn class_end(chars: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if chars.get(i) == Some(&'!') {
        i += 1;
    }
    if chars.get(i) == Some(&']') {
        i += 1;
    }
    (i..chars.len()).find(|&j| chars[j] == ']')
}

/// fnmatch(3) without flags, over characters.
fn glob_matches(glob: &str, name: &str) -> bool {
    let pattern: Vec<char> = glob.chars().collect();
    let text: Vec<char> = name.chars().collect();
    // Backtracking on the last `*` keeps this linear in practice.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') => class_end(&pattern, p)
                .filter(|&end| class_has(&pattern[p + 1..end], text[t]))
                .map(|end| end + 1),
            Some(c) if *c == text[t] => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Whether `c` is in the class body (between `[` and `]`).
fn class_has(body: &[char], c: char) -> bool {
    let (negated, body) = match body.first() {
        Some('!') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut found = false;
    let mut i = 0;
    while i < body.len() {
        if body.get(i + 1) == Some(&'-') && i + 2 < body.len() {
            found |= (body[i]..=body[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= body[i] == c;
            i += 1;
        }
    }
    found != negated
}

#[cfg(test)]
mod tests;
