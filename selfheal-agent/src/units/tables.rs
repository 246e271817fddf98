//! The config's `[[unit]]` tables as the unit table reads them: exact names, monitored from
//! the start, and patterns, which adopt the services systemd lists or announces, each as a
//! unit of its own with the pattern's settings. Pure: names in, answers out.

use super::pattern::{UnitPattern, first_match};
use crate::config::UnitPolicy;

/// At most this many instances per pattern: a runaway template (or a too-wide glob) must not
/// grow the agent's tables and the kernel maps without bound.
pub const MAX_INSTANCES: usize = 256;

#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// In config order, next to the table each came from.
    patterns: Vec<UnitPattern>,
    policies: Vec<UnitPolicy>,
}

/// What to do with a unit systemd knows that the agent does not monitor yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// No pattern covers it (an exact name is monitored from the start, not adopted).
    None,
    /// `pattern` adopts it, with these settings (the pattern's, under the unit's name).
    Adopt {
        pattern: String,
        policy: Box<UnitPolicy>,
    },
    /// Pattern `pattern` covers it but has [`MAX_INSTANCES`] already.
    Full { pattern: String },
}

impl Tables {
    /// `policies`: one per `[[unit]]`, in file order; a name that is no valid pattern is
    /// taken as exact (the config's validation has refused it already).
    pub fn new(policies: Vec<UnitPolicy>) -> Self {
        let patterns = policies
            .iter()
            .map(|p| UnitPattern::parse(&p.name).unwrap_or(UnitPattern::Exact(p.name.clone())))
            .collect();
        Self { patterns, policies }
    }

    /// The tables naming one unit exactly.
    pub fn exact(&self) -> impl Iterator<Item = &UnitPolicy> {
        self.patterns
            .iter()
            .zip(&self.policies)
            .filter(|(p, _)| !p.is_pattern())
            .map(|(_, policy)| policy)
    }

    /// The patterns, as written, in file order.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns
            .iter()
            .zip(&self.policies)
            .filter(|(p, _)| p.is_pattern())
            .map(|(_, policy)| policy.name.as_str())
    }

    pub fn has_patterns(&self) -> bool {
        self.patterns.iter().any(UnitPattern::is_pattern)
    }

    /// Whether a pattern may cover the service `name`, its slice unknown: worth reading the
    /// unit from systemd to decide.
    pub fn may_adopt(&self, name: &str) -> bool {
        name.ends_with(".service")
            && !self
                .patterns
                .iter()
                .any(|p| *p == UnitPattern::Exact(name.into()))
            && self
                .patterns
                .iter()
                .any(|p| p.is_pattern() && p.may_match(name))
    }

    /// The settings the unit `name` (in `slice`) gets from the config: its exact table, else
    /// the first pattern covering it; `None` when no table covers it. The pattern comes
    /// along (`None` for an exact name).
    pub fn covering(
        &self,
        name: &str,
        slice: Option<&str>,
    ) -> Option<(UnitPolicy, Option<String>)> {
        let index = first_match(&self.patterns, name, slice)?;
        let mut policy = self.policies[index].clone();
        let pattern = self.patterns[index]
            .is_pattern()
            .then(|| std::mem::replace(&mut policy.name, name.to_owned()));
        Some((policy, pattern))
    }

    /// Whether a pattern adopts the service `name` in `slice`; `instances(pattern)` counts
    /// the units that pattern adopted so far.
    pub fn adoption(
        &self,
        name: &str,
        slice: Option<&str>,
        instances: impl Fn(&str) -> usize,
    ) -> Adoption {
        if !name.ends_with(".service") {
            return Adoption::None;
        }
        match self.covering(name, slice) {
            Some((policy, Some(pattern))) if instances(&pattern) < MAX_INSTANCES => {
                Adoption::Adopt {
                    pattern,
                    policy: Box::new(policy),
                }
            }
            Some((_, Some(pattern))) => Adoption::Full { pattern },
            _ => Adoption::None,
        }
    }
}

/// What a reload does to the monitored units (see [`Tables::reconcile`]).
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Units still covered: their index, new settings and pattern.
    pub keep: Vec<(u32, UnitPolicy, Option<String>)>,
    /// Units no table covers any more.
    pub remove: Vec<u32>,
    /// Exact names not monitored yet.
    pub add: Vec<UnitPolicy>,
}

impl Tables {
    /// Sorts the monitored units (index, name, slice) by the new tables: an instance stays
    /// while some table covers it (an exact name now listed takes it over), the rest go.
    /// Patterns new to the tables adopt afterwards, from systemd's list.
    pub fn reconcile(&self, monitored: &[(u32, String, Option<String>)]) -> Reconciled {
        let mut out = Reconciled::default();
        for (index, name, slice) in monitored {
            match self.covering(name, slice.as_deref()) {
                Some((policy, pattern)) => out.keep.push((*index, policy, pattern)),
                None => out.remove.push(*index),
            }
        }
        out.add = self
            .exact()
            .filter(|p| !monitored.iter().any(|(_, name, _)| *name == p.name))
            .cloned()
            .collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(text: &str) -> Tables {
        let config = crate::config::Config::parse(text, "t.toml").expect("config");
        Tables::new(config.unit_policies())
    }

    const CONFIG: &str = r#"
[[unit]]
name = "work@*.service"
restart = "always"

[[unit]]
name = "work@special.service"
restart = "never"

[[unit]]
name = "trading.slice"
restart = "on-failure"

[[unit]]
name = "work@[0-9].service"
"#;

    fn adopted(t: &Tables, name: &str, slice: Option<&str>) -> Option<(String, String)> {
        match t.adoption(name, slice, |_| 0) {
            Adoption::Adopt { pattern, policy } => {
                assert_eq!(policy.name, name, "an instance carries its own name");
                Some((pattern, policy.restart.to_string()))
            }
            _ => None,
        }
    }

    #[test]
    fn an_exact_name_wins_over_every_pattern_and_the_first_pattern_over_later_ones() {
        let t = tables(CONFIG);
        assert_eq!(
            t.exact().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["work@special.service"]
        );
        // Exact: monitored from the start, never adopted.
        assert_eq!(adopted(&t, "work@special.service", Some("app.slice")), None);
        assert!(!t.may_adopt("work@special.service"));
        // Both globs cover work@1: the first in the file answers.
        assert_eq!(
            adopted(&t, "work@1.service", Some("app.slice")),
            Some(("work@*.service".into(), "always".into()))
        );
        // In the slice, a glob earlier in the file still wins.
        assert_eq!(
            adopted(&t, "work@2.service", Some("trading.slice")),
            Some(("work@*.service".into(), "always".into()))
        );
        assert_eq!(
            adopted(&t, "engine.service", Some("trading-hft.slice")),
            Some(("trading.slice".into(), "on-failure".into()))
        );
        assert_eq!(adopted(&t, "engine.service", Some("system.slice")), None);
        // Only services are adopted, whatever the glob says.
        assert_eq!(adopted(&t, "work@1.socket", None), None);
        let (policy, pattern) = t.covering("work@special.service", None).expect("covered");
        assert_eq!(
            (policy.name.as_str(), pattern),
            ("work@special.service", None)
        );
    }

    #[test]
    fn a_pattern_adopts_at_most_its_cap_of_instances() {
        let t = tables(CONFIG);
        let full = |pattern: &str| {
            if pattern == "work@*.service" {
                MAX_INSTANCES
            } else {
                0
            }
        };
        assert_eq!(
            t.adoption("work@1.service", None, full),
            Adoption::Full {
                pattern: "work@*.service".into()
            }
        );
        let one_less = |_: &str| MAX_INSTANCES - 1;
        assert!(matches!(
            t.adoption("work@1.service", None, one_less),
            Adoption::Adopt { .. }
        ));
        // Another pattern's instances do not count against it.
        assert!(matches!(
            t.adoption("engine.service", Some("trading.slice"), full),
            Adoption::Adopt { .. }
        ));
    }

    #[test]
    fn the_slice_is_worth_reading_only_when_a_pattern_may_cover_the_name() {
        let t = tables("[[unit]]\nname = \"work@*.service\"\n");
        assert!(t.may_adopt("work@1.service"));
        assert!(!t.may_adopt("web.service"));
        assert!(tables("[[unit]]\nname = \"trading.slice\"\n").may_adopt("web.service"));
        assert!(!tables("[[unit]]\nname = \"web.service\"\n").has_patterns());
    }

    #[test]
    fn a_reload_keeps_what_a_table_still_covers_and_names_what_to_add_and_remove() {
        let t = tables(
            r#"
[[unit]]
name = "work@*.service"
restart = "never"

[[unit]]
name = "db.service"

[[unit]]
name = "cache.service"
"#,
        );
        let monitored = [
            (0, "web.service".to_owned(), None),
            (1, "db.service".to_owned(), None),
            (2, "work@1.service".to_owned(), Some("app.slice".to_owned())),
            (3, "other@1.service".to_owned(), None),
        ];
        let r = t.reconcile(&monitored);
        let kept: Vec<(u32, &str, Option<&str>)> = r
            .keep
            .iter()
            .map(|(i, p, pattern)| (*i, p.name.as_str(), pattern.as_deref()))
            .collect();
        assert_eq!(
            kept,
            [
                (1, "db.service", None),
                (2, "work@1.service", Some("work@*.service"))
            ]
        );
        assert_eq!(r.keep[1].1.restart.to_string(), "never");
        assert_eq!(r.remove, [0, 3]);
        let added: Vec<&str> = r.add.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(added, ["cache.service"]);
    }
}
