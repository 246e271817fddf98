//! `[[unit.probe]]` and `[[unit.detector]]` as a person editing the config sees them.

use serde::Deserialize;

use super::super::*;
use crate::detect::probe::ProbeRules;

/// The part of a `[[unit]]` table these keys live in.
#[derive(Debug, Deserialize)]
struct Unit {
    #[serde(default, rename = "probe")]
    probes: Vec<ProbeConfig>,
    #[serde(default, rename = "detector")]
    detectors: Vec<DetectorConfig>,
}

fn unit(text: &str) -> Unit {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_error(text: &str) -> String {
    match toml::from_str::<Unit>(text) {
        Ok(unit) => panic!("expected an error, parsed {unit:?}"),
        Err(error) => error.message().to_owned(),
    }
}

fn specs_of(text: &str) -> Result<(Vec<ProbeSpec>, Vec<DetectorSpec>), ProbeConfigError> {
    let unit = unit(text);
    specs(4, "web.service", &unit.probes, &unit.detectors)
}

const FULL: &str = r#"
[[probe]]
name = "http"
kind = "http"
url = "http://127.0.0.1:8080/health"
body_contains = "ok"
interval = "5s"
timeout = "500ms"
consecutive_failures = 3
degradation_ratio = 3
baseline_ops = 20
error_rate = 0.25
error_window = 100
grace = "1m"

[[probe]]
name = "db"
kind = "tcp"
address = "127.0.0.1:5432"
dependency = true

[[probe]]
name = "script"
kind = "exec"
command = ["/usr/local/bin/check", "--quick"]

[[detector]]
name = "queue-depth"
command = ["/usr/local/bin/queue-check"]
kind = "queue_backlog"
"#;

#[test]
fn every_key_is_read_and_left_out_keys_take_the_defaults() {
    let (probes, detectors) = specs_of(FULL).unwrap();
    let http = &probes[0];
    assert_eq!((http.unit, http.unit_name.as_str()), (4, "web.service"));
    assert_eq!(
        http.check,
        Check::Http {
            url: HttpUrl::try_from("http://127.0.0.1:8080/health".to_owned()).unwrap(),
            expect_status: None,
            body_contains: Some("ok".into()),
        }
    );
    assert_eq!(http.interval, Duration::from_secs(5));
    assert_eq!(http.timeout, Duration::from_millis(500));
    let db = &probes[1];
    assert!(db.dependency);
    assert_eq!(db.interval, DEFAULT_PROBE_INTERVAL);
    assert_eq!(db.timeout, DEFAULT_PROBE_TIMEOUT);
    assert_eq!(
        probes[2].check,
        Check::Exec {
            command: vec!["/usr/local/bin/check".into(), "--quick".into()]
        }
    );
    let queue = &detectors[0];
    assert_eq!(queue.kind, "queue_backlog");
    assert_eq!(queue.interval, DEFAULT_DETECTOR_INTERVAL);
    assert_eq!(queue.timeout, DEFAULT_DETECTOR_TIMEOUT);
}

#[test]
fn thresholds_left_out_are_the_seeds_defaults() {
    let unit = unit(FULL);
    assert_eq!(
        unit.probes[0].rules(),
        ProbeRules {
            dependency: false,
            consecutive_failures: 3,
            degradation_ratio: 3.0,
            baseline_ops: 20,
            error_rate: 0.25,
            error_window: 100,
            grace: Duration::from_secs(60),
        }
    );
    assert_eq!(
        unit.probes[1].rules(),
        ProbeRules {
            dependency: true,
            ..ProbeRules::default()
        }
    );
    let seeds = ProbeRules::default();
    assert_eq!(
        (
            seeds.consecutive_failures,
            seeds.baseline_ops,
            seeds.degradation_ratio,
            seeds.error_rate
        ),
        (5, 10, 2.0, 0.1)
    );
}

#[test]
fn an_https_url_is_refused_with_the_way_out() {
    let error = parse_error("[[probe]]\nname = \"h\"\nkind = \"http\"\nurl = \"https://x/\"\n");
    assert!(error.contains("https is not supported"), "{error}");
}

#[test]
fn values_out_of_range_are_refused_with_the_expected_form() {
    let probe = "[[probe]]\nname = \"t\"\nkind = \"tcp\"\naddress = \"db:5432\"\n";
    for (line, expected) in [
        (
            "consecutive_failures = 0",
            "expected a whole number of at least 1, found 0",
        ),
        (
            "degradation_ratio = 0.5",
            "expected a ratio above 1 such as 2.0, found 0.5",
        ),
        (
            "error_rate = 10",
            "expected a fraction above 0 and at most 1",
        ),
        (
            "baseline_ops = -1",
            "expected a whole number of at least 1, found -1",
        ),
        ("address2 = \"x\"", "unknown field `address2`"),
    ] {
        let error = parse_error(&format!("{probe}{line}\n"));
        assert!(error.contains(expected), "{line}: {error}");
    }
    let error = parse_error("[[detector]]\nname = \"d\"\ncommand = []\nkind = \"k\"\n");
    assert!(error.contains("expected a command as a list"), "{error}");
}

fn error_at(text: &str) -> (&'static str, usize, &'static str, String) {
    let error = specs_of(text).unwrap_err();
    (error.table, error.index, error.key, error.message)
}

#[test]
fn a_key_of_another_kind_points_at_that_key() {
    let text = "[[probe]]\nname = \"t\"\nkind = \"tcp\"\naddress = \"db:1\"\nurl = \"http://x/\"\n";
    assert_eq!(
        error_at(text),
        (
            "probe",
            0,
            "url",
            "url is for kind = \"http\" probes; this one is kind = \"tcp\"".into()
        )
    );
}

#[test]
fn a_probe_without_its_target_names_the_missing_key() {
    let text = "[[probe]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"db:1\"\n\n\
                [[probe]]\nname = \"b\"\nkind = \"exec\"\n";
    assert_eq!(
        error_at(text),
        (
            "probe",
            1,
            "command",
            "a kind = \"exec\" probe needs command".into()
        )
    );
}

#[test]
fn duplicate_names_zero_intervals_and_odd_kinds_are_refused() {
    let tcp = |name: &str, extra: &str| {
        format!("[[probe]]\nname = \"{name}\"\nkind = \"tcp\"\naddress = \"db:1\"\n{extra}\n")
    };
    let (table, index, key, message) = error_at(&(tcp("db", "") + &tcp("db", "")));
    assert_eq!((table, index, key), ("probe", 1, "name"));
    assert!(message.starts_with("duplicate probe \"db\""), "{message}");
    assert_eq!(error_at(&tcp("db", "interval = 0")).2, "interval");
    assert_eq!(error_at(&tcp("db", "timeout = \"0s\"")).2, "timeout");
    assert_eq!(error_at(&tcp("my db", "")).2, "name");
    let text = "[[detector]]\nname = \"d\"\ncommand = [\"x\"]\nkind = \"Queue Backlog\"\n";
    assert_eq!(error_at(text).2, "kind");
    let text =
        "[[probe]]\nname = \"h\"\nkind = \"http\"\nurl = \"http://x/\"\nexpect_status = 42\n";
    assert_eq!(error_at(text).2, "expect_status");
}
