//! `[defaults.leak]` and `[unit.leak]` as a person editing `selfheal.toml` meets them.

use super::*;

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|error| error.to_string())
}

#[test]
fn defaults_follow_the_issue_and_the_seeds() {
    let defaults = LeakConfig::default();
    assert_eq!(defaults.kinds, ALL_KINDS);
    assert_eq!(defaults.window, Duration::from_secs(600));
    assert_eq!(defaults.min_samples, 10);
    assert_eq!(defaults.horizon, Duration::from_secs(3600));
    assert_eq!(defaults.limit_percent, 90);
}

#[test]
fn an_empty_table_gives_the_defaults() {
    assert_eq!(parse::<LeakConfig>(""), Ok(LeakConfig::default()));
    assert_eq!(parse::<LeakOverrides>(""), Ok(LeakOverrides::default()));
}

#[test]
fn every_key_is_read() {
    let text = r#"
        kinds = ["memory_leak", "fd_leak"]
        window = "5m"
        min_samples = 20
        horizon = "2h"
        limit_percent = 80
    "#;
    let expected = LeakConfig {
        kinds: vec![LeakKind::Memory, LeakKind::Fd],
        window: Duration::from_secs(300),
        min_samples: 20,
        horizon: Duration::from_secs(7200),
        limit_percent: 80,
    };
    assert_eq!(parse::<LeakConfig>(text), Ok(expected));
}

#[test]
fn a_unit_overrides_only_the_keys_it_sets() {
    let defaults = LeakConfig {
        horizon: Duration::from_secs(1800),
        ..LeakConfig::default()
    };
    let unit: LeakOverrides = parse("window = \"30m\"\nkinds = []").expect("valid");
    let resolved = unit.resolve(&defaults);
    assert_eq!(resolved.window, Duration::from_secs(1800));
    assert!(resolved.kinds.is_empty());
    assert_eq!(resolved.horizon, Duration::from_secs(1800));
    assert_eq!(resolved.limit_percent, 90);
}

#[test]
fn unknown_or_repeated_kinds_are_refused_with_the_known_ones() {
    let error = parse::<LeakConfig>("kinds = [\"crash\"]").unwrap_err();
    assert!(error.contains("\"crash\""), "{error}");
    assert!(error.contains("\"fd_leak\", \"socket_leak\""), "{error}");
    let error = parse::<LeakOverrides>("kinds = [\"fd_leak\", \"fd_leak\"]").unwrap_err();
    assert!(error.contains("each leak kind once"), "{error}");
}

#[test]
fn values_that_cannot_work_are_refused() {
    for (text, expected) in [
        ("limit_percent = 0", "from 1 to 100"),
        ("limit_percent = 101", "from 1 to 100"),
        ("min_samples = 2", "at least 3"),
        ("window = \"0s\"", "longer than zero"),
        ("window = \"ten minutes\"", "a duration"),
        ("horizon = -1", "a duration"),
        ("limit_fraction = 0.9", "unknown field"),
    ] {
        let error = parse::<LeakConfig>(text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
        let error = parse::<LeakOverrides>(text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
    }
}
