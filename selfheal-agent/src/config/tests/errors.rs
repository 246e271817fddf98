//! Each kind of config error, as the user sees it: `file:line:col: key: message`.

use super::*;

#[test]
fn bad_restart_value_lists_the_allowed_ones() {
    let text = "[defaults]\nrestart = \"on-failure\"\n\n[[unit]]\nname = \"web.service\"\nrestart = \"sometimes\"\n";
    assert_eq!(
        error_of(text),
        r#"selfheal.toml:6:11: unit.restart: expected one of "always", "on-failure", "never", found "sometimes""#
    );
}

#[test]
fn unknown_top_level_key_lists_the_known_tables() {
    assert_eq!(
        error_of("# selfheal\ncolour = \"blue\"\n[agent]\n"),
        r#"selfheal.toml:2:1: colour: unknown key "colour"; expected one of "agent", "defaults", "unit", "policy", "http", "webhook", "alertmanager", "fleet""#
    );
}

#[test]
fn unknown_key_in_a_table_lists_the_known_keys() {
    assert_eq!(
        error_of("[agent]\n  socket = \"/run/x.sock\"\n"),
        r#"selfheal.toml:2:3: agent.socket: unknown key "socket"; expected one of "status_socket", "state_dir", "audit_log", "tick", "quarantine_allow_loopback""#
    );
}

#[test]
fn unknown_key_in_a_unit_points_at_that_unit() {
    let text = "[[unit]]\nname = \"web.service\"\n\n[[unit]]\nname = \"db.service\"\nrestart_dealy = \"5s\"\n";
    assert_eq!(
        error_of(text),
        r#"selfheal.toml:6:1: unit.restart_dealy: unknown key "restart_dealy"; expected one of "name", "restart", "restart_delay", "stall", "leak", "remediation", "probe", "detector", "group", "max_disrupted""#
    );
}

#[test]
fn unit_without_name_points_at_its_header() {
    let text = "[[unit]]\nname = \"web.service\"\n\n[[unit]]\nrestart = \"always\"\n";
    assert_eq!(
        error_of(text),
        r#"selfheal.toml:4:1: unit: missing required key "name""#
    );
}

#[test]
fn bad_duration_shows_the_accepted_forms() {
    assert_eq!(
        error_of("[agent]\ntick = \"5 parsecs\"\n"),
        r#"selfheal.toml:2:8: agent.tick: expected a duration such as "5s", "250ms" or "2m", found "5 parsecs""#
    );
    assert_eq!(
        error_of("[defaults]\nrestart_delay = -3\n"),
        r#"selfheal.toml:2:17: defaults.restart_delay: expected a duration such as "5s", "250ms" or "2m", found -3"#
    );
    assert_eq!(
        error_of("[[unit]]\nname = \"web.service\"\nrestart_delay = 1.5\n"),
        r#"selfheal.toml:3:17: unit.restart_delay: expected a duration such as "5s", "250ms" or "2m", found a float"#
    );
}

#[test]
fn wrong_type_names_the_expected_and_found_types() {
    let cases = [
        (
            "[agent]\nstatus_socket = 5\n",
            "2:17: agent.status_socket: expected a string, found an integer",
        ),
        (
            "[[unit]]\nname = true\n",
            "2:8: unit.name: expected a string, found a boolean",
        ),
        (
            "[[unit]]\nname = \"web.service\"\nrestart = 1\n",
            "3:11: unit.restart: expected a string, found an integer",
        ),
        (
            "[defaults]\nrestart = { always = 1 }\n",
            "2:11: defaults.restart: expected a string, found a table",
        ),
        (
            "agent = \"fast\"\n",
            "1:9: agent: expected a table, found a string",
        ),
        (
            "[unit]\nname = \"web.service\"\n",
            "1:1: unit: expected an array, found a table",
        ),
        (
            "[agent]\ntick = 1979-05-27\n",
            "2:8: agent.tick: expected a duration such as \"5s\", \"250ms\" or \"2m\", found a date-time",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(
            error_of(text),
            format!("selfheal.toml:{expected}"),
            "for {text:?}"
        );
    }
}

#[test]
fn duplicate_unit_points_at_the_second_occurrence() {
    let text = "[[unit]]\nname = \"web.service\"\n\n[[unit]]\nname = \"db.service\"\n\n[[unit]]\nname = \"web.service\"\n";
    assert_eq!(
        error_of(text),
        r#"selfheal.toml:8:8: unit.name: duplicate unit "web.service", first configured at line 2; each unit may appear only once"#
    );
}

#[test]
fn unit_name_without_a_known_suffix_is_rejected() {
    assert_eq!(
        error_of("[[unit]]\nname = \"web\"\n"),
        concat!(
            r#"selfheal.toml:2:8: unit.name: expected a systemd unit name such as "web.service", found "web"; "#,
            r#"a unit name is a name followed by one of ".service", ".socket", ".device", ".mount", ".automount", "#,
            r#"".swap", ".target", ".path", ".timer", ".slice", ".scope""#
        )
    );
    assert!(
        error_of("[[unit]]\nname = \".service\"\n").contains(r#"found ".service"; a unit name is"#)
    );
    assert!(
        error_of("[[unit]]\nname = \"web.conf\"\n").contains(r#"found "web.conf"; a unit name is"#)
    );
}

#[test]
fn unit_name_that_is_empty_or_has_a_slash_or_space_is_rejected() {
    let expected = r#"selfheal.toml:2:8: unit.name: expected a systemd unit name such as "web.service", found"#;
    assert_eq!(
        error_of("[[unit]]\nname = \"\"\n"),
        format!("{expected} an empty string")
    );
    assert_eq!(
        error_of("[[unit]]\nname = \"../web.service\"\n"),
        format!(r#"{expected} "../web.service", which contains "/""#)
    );
    assert_eq!(
        error_of("[[unit]]\nname = \"web server.service\"\n"),
        format!(r#"{expected} "web server.service", which contains whitespace"#)
    );
}

#[test]
fn empty_paths_are_rejected() {
    assert_eq!(
        error_of("[agent]\nstatus_socket = \"\"\n"),
        "selfheal.toml:2:17: agent.status_socket: expected a path, found an empty string"
    );
    assert_eq!(
        error_of("[agent]\nstate_dir = ''\n"),
        "selfheal.toml:2:13: agent.state_dir: expected a path, found an empty string"
    );
}

#[test]
fn toml_syntax_errors_keep_tomls_message_without_a_key() {
    assert_eq!(
        error_of("[agent\n"),
        r#"selfheal.toml:1:7: unclosed table, expected "]""#
    );
    assert_eq!(
        error_of("[agent]\ntick = \"1s\ntick = \"2s\"\n"),
        r#"selfheal.toml:2:11: invalid basic string, expected '"'"#
    );
    assert_eq!(
        error_of("[agent]\ntick = \"1s\"\ntick = \"2s\"\n"),
        "selfheal.toml:3:1: duplicate key"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = "unit = [{ name = \"café.service\", restart = \"sometimes\" }]\n";
    assert!(
        error_of(text).starts_with("selfheal.toml:1:44: unit.restart: "),
        "{}",
        error_of(text)
    );
}

#[test]
fn invalid_error_exposes_its_parts() {
    let error =
        Config::parse("[agent]\ntick = \"soon\"\n", "/etc/selfheal/selfheal.toml").unwrap_err();
    let ConfigError::Invalid {
        origin,
        line,
        col,
        key,
        message,
    } = error
    else {
        panic!("expected ConfigError::Invalid, got {error:?}");
    };
    assert_eq!(
        (origin.as_str(), line, col, key.as_str()),
        ("/etc/selfheal/selfheal.toml", 2, 8, "agent.tick")
    );
    assert!(message.ends_with(r#"found "soon""#), "{message}");
}

#[test]
fn a_malformed_unit_pattern_names_the_character_and_a_valid_one_is_accepted() {
    assert_eq!(
        error_of("[[unit]]\nname = \"crypto-agent@[A-Z.service\"\n"),
        concat!(
            r#"selfheal.toml:2:8: unit.name: invalid unit pattern "crypto-agent@[A-Z.service": "#,
            r#""[" opens a character class that is never closed by "]" (at character 14)"#
        )
    );
    assert!(
        error_of("[[unit]]\nname = \"trading.slice/\"\n")
            .contains("invalid unit pattern \"trading.slice/\": an empty pattern")
    );
    for name in [
        "crypto-agent@*.service",
        "trading.slice/*.service",
        "trading-hft.slice",
    ] {
        let text = format!("[[unit]]\nname = \"{name}\"\n");
        assert!(Config::parse(&text, "selfheal.toml").is_ok(), "{name}");
    }
}

#[test]
fn a_probe_on_a_pattern_is_refused_at_the_probe() {
    let text = concat!(
        "[[unit]]\nname = \"work@*.service\"\n\n",
        "[[unit.probe]]\nname = \"up\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/up\"\n",
    );
    let error = error_of(text);
    assert!(
        error.starts_with("selfheal.toml:4:1: unit.probe: \"work@*.service\" is a unit pattern"),
        "{error}"
    );
    assert!(error.contains("naming one unit exactly"), "{error}");
}
