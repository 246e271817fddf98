//! `deploy/selfheal.toml` is the config's documentation: it must parse, show every key the
//! schema knows, and show each at its real default.

use super::*;
use crate::detect::ProblemKind;
use crate::policy::{Remediation, RemediationConfig};

const EXAMPLE: &str = include_str!("../../../../deploy/selfheal.toml");

/// Opens a `[[unit]]` so that its sub-tables can follow.
const UNIT: &str = "[[unit]]\nname = \"x.service\"\n";

/// The keys a table accepts, read back from the unknown-key error so the list never drifts.
/// `opening` is TOML that opens the table.
fn schema_keys(opening: &str) -> Vec<String> {
    let message = error_of(&format!("{opening}\nnot_a_key = 0\n"));
    let (_, expected) = message.split_once("; expected ").expect(&message);
    expected
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every table the schema has: TOML that opens it, and the example tables where its keys may
/// be shown. `[unit.remediation]` takes the keys of `[defaults.remediation]`, and some of them
/// (`fallback`, the bases of `scale`) only mean something for one unit.
fn tables() -> Vec<(String, &'static [&'static str])> {
    let top = |name: &str| format!("[{name}]");
    vec![
        (top("agent"), &["agent"]),
        (top("defaults"), &["defaults"]),
        (top("defaults.stall"), &["defaults.stall"]),
        (top("defaults.leak"), &["defaults.leak"]),
        (
            top("defaults.remediation"),
            &["defaults.remediation", "unit.remediation"],
        ),
        (UNIT.to_owned(), &["unit"]),
        (format!("{UNIT}[[unit.probe]]"), &["unit.probe"]),
        (format!("{UNIT}[[unit.detector]]"), &["unit.detector"]),
        (top("policy"), &["policy"]),
        (top("policy.budget"), &["policy.budget"]),
        (top("policy.backoff"), &["policy.backoff"]),
        (top("policy.breaker"), &["policy.breaker"]),
        (top("policy.storm"), &["policy.storm"]),
        (top("policy.scale"), &["policy.scale"]),
        (top("http"), &["http"]),
        (top("webhook"), &["webhook"]),
        (top("alertmanager"), &["alertmanager"]),
        (top("fleet"), &["fleet"]),
    ]
}

/// Every table at dotted `path` below `value`; arrays of tables count each of their tables.
fn instances<'a>(value: &'a toml::Value, path: &[&str]) -> Vec<&'a toml::Table> {
    match value {
        toml::Value::Array(items) => items.iter().flat_map(|v| instances(v, path)).collect(),
        toml::Value::Table(table) => match path.split_first() {
            None => vec![table],
            Some((first, rest)) => table.get(*first).map_or(vec![], |v| instances(v, rest)),
        },
        _ => vec![],
    }
}

/// Keys shown commented out (`# key = value`: those without a default), as (table, key).
fn commented_keys(text: &str) -> Vec<(String, String)> {
    let mut table = String::new();
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            let header = line.split('#').next().unwrap_or_default().trim();
            table = header.trim_matches(['[', ']']).to_owned();
        } else if let Some(comment) = line.strip_prefix('#')
            && let Some((key, _)) = comment.trim().split_once(" = ")
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            found.push((table.clone(), key.to_owned()));
        }
    }
    found
}

#[test]
fn example_config_shows_every_key_the_schema_knows() {
    let example = toml::Value::Table(toml::from_str(EXAMPLE).expect("example is TOML"));
    let commented = commented_keys(EXAMPLE);
    for (opening, shown_in) in tables() {
        for key in schema_keys(&opening) {
            let shown = shown_in.iter().any(|path| {
                let parts: Vec<&str> = path.split('.').collect();
                instances(&example, &parts)
                    .iter()
                    .any(|table| table.contains_key(&key))
                    || commented.contains(&(path.to_string(), key.clone()))
            });
            assert!(shown, "the example shows no {key:?} in {shown_in:?}");
        }
    }
}

#[test]
fn unit_override_tables_take_the_keys_of_the_defaults() {
    for table in ["stall", "leak", "remediation"] {
        assert_eq!(
            schema_keys(&format!("{UNIT}[unit.{table}]")),
            schema_keys(&format!("[defaults.{table}]")),
            "[unit.{table}]"
        );
    }
}

#[test]
fn example_config_documents_the_real_defaults() {
    let example = parse(EXAMPLE);
    let defaults = Config::default();
    assert_eq!(example.agent, defaults.agent);
    assert_eq!(example.defaults.restart, defaults.defaults.restart);
    assert_eq!(
        example.defaults.restart_delay,
        defaults.defaults.restart_delay
    );
    assert_eq!(example.defaults.stall, defaults.defaults.stall);
    assert_eq!(example.defaults.leak, defaults.defaults.leak);
    assert_eq!(example.policy, defaults.policy);
    assert_eq!(example.http, defaults.http);
    assert_eq!(example.webhook, defaults.webhook);
    assert_eq!(example.alertmanager, defaults.alertmanager);
    assert_eq!(example.fleet, defaults.fleet);
}

#[test]
fn example_remediation_defaults_spell_out_the_built_in_ladders() {
    let example = parse(EXAMPLE);
    let none = RemediationConfig::default();
    let shown = Remediation::resolve("x.service", &example.defaults.remediation, &none)
        .expect("example defaults resolve");
    let builtin = Remediation::default();
    for kind in ProblemKind::BUILTIN {
        assert_eq!(
            shown.ladder(&kind),
            builtin.ladder(&kind),
            "{}",
            kind.name()
        );
    }
    let rest = |r: Remediation| {
        (
            r.fallback,
            r.freeze,
            r.network_quarantine,
            r.bases,
            r.max_instances,
        )
    };
    assert_eq!(rest(shown), rest(builtin));
    assert!(example.defaults.remediation.custom.is_empty());
}

#[test]
fn example_config_supervises_at_least_one_unit() {
    assert!(!parse(EXAMPLE).units.is_empty());
}
