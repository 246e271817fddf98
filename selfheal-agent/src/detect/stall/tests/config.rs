//! `[defaults.stall]` and `[unit.stall]` as a person editing `selfheal.toml` meets them.

use super::*;

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|error| error.to_string())
}

#[test]
fn defaults_follow_the_seeds() {
    let defaults = StallConfig::default();
    assert_eq!(defaults.threshold, Duration::from_secs(300));
    assert!(defaults.spinning);
    assert_eq!(defaults.spinning_cpu_percent, 95);
    assert_eq!(defaults.starved_runq_p99, Duration::from_millis(50));
    assert_eq!(defaults.starved_psi_some_avg10, 20);
    assert_eq!(defaults.starved_for, Duration::from_secs(10));
}

#[test]
fn an_empty_table_gives_the_defaults() {
    assert_eq!(parse::<StallConfig>(""), Ok(StallConfig::default()));
    assert_eq!(parse::<StallOverrides>(""), Ok(StallOverrides::default()));
}

#[test]
fn every_key_is_read() {
    let text = r#"
        threshold = "2m"
        spinning = false
        spinning_cpu_percent = 90
        starved_runq_p99 = "20ms"
        starved_psi_some_avg10 = 40
        starved_for = "30s"
    "#;
    let expected = StallConfig {
        threshold: Duration::from_secs(120),
        spinning: false,
        spinning_cpu_percent: 90,
        starved_runq_p99: Duration::from_millis(20),
        starved_psi_some_avg10: 40,
        starved_for: Duration::from_secs(30),
    };
    assert_eq!(parse::<StallConfig>(text), Ok(expected.clone()));
    let overrides = parse::<StallOverrides>(text).unwrap();
    assert_eq!(overrides.resolve(&StallConfig::default()), expected);
}

#[test]
fn a_unit_overrides_only_the_keys_it_sets() {
    let overrides: StallOverrides = parse("threshold = 30\nspinning = false").unwrap();
    let defaults = StallConfig {
        starved_for: Duration::from_secs(20),
        ..StallConfig::default()
    };
    let resolved = overrides.resolve(&defaults);
    assert_eq!(
        resolved,
        StallConfig {
            threshold: Duration::from_secs(30),
            spinning: false,
            ..defaults
        }
    );
}

#[test]
fn starved_has_its_own_threshold() {
    let config = config();
    assert_eq!(
        config.threshold_for(StallKind::Starved),
        Duration::from_secs(STARVED_FOR_SECS)
    );
    for kind in [StallKind::Stopped, StallKind::Hung, StallKind::Wedged] {
        assert_eq!(
            config.threshold_for(kind),
            Duration::from_secs(THRESHOLD_SECS)
        );
    }
}

#[test]
fn unknown_keys_are_rejected_with_the_known_ones() {
    let error = parse::<StallConfig>("treshold = \"5s\"").unwrap_err();
    assert!(error.contains("unknown field `treshold`"), "{error}");
    assert!(error.contains("`threshold`"), "{error}");
    assert!(parse::<StallOverrides>("treshold = \"5s\"").is_err());
}

#[test]
fn percentages_outside_1_to_100_are_rejected() {
    for text in [
        "spinning_cpu_percent = 0",
        "spinning_cpu_percent = 101",
        "starved_psi_some_avg10 = 300",
        "starved_psi_some_avg10 = -5",
    ] {
        let error = parse::<StallConfig>(text).unwrap_err();
        assert!(
            error.contains("percentage from 1 to 100") || error.contains("u64"),
            "{error}"
        );
        assert!(parse::<StallOverrides>(text).is_err(), "{text}");
    }
    let error = parse::<StallConfig>("spinning_cpu_percent = 101").unwrap_err();
    assert!(
        error.contains("expected a whole percentage from 1 to 100"),
        "{error}"
    );
}

#[test]
fn durations_are_read_like_everywhere_else_in_the_config() {
    let error = parse::<StallConfig>("threshold = \"5 parsecs\"").unwrap_err();
    assert!(error.contains(r#"a duration such as "5s""#), "{error}");
    let overrides: StallOverrides = parse("starved_runq_p99 = \"250ms\"").unwrap();
    assert_eq!(overrides.starved_runq_p99, Some(Duration::from_millis(250)));
}
