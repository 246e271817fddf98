use super::*;

fn parse(name: &str) -> UnitPattern {
    UnitPattern::parse(name).expect(name)
}

#[test]
fn a_template_glob_covers_its_instances_and_nothing_else() {
    let p = parse("crypto-agent@*.service");
    assert_eq!(p, UnitPattern::Glob("crypto-agent@*.service".into()));
    for instance in ["BTC_USDT", "ETH_USDT", "SOL_USDT", "X"] {
        assert!(p.matches(&format!("crypto-agent@{instance}.service"), None));
    }
    assert!(!p.matches("crypto-agent.service", None));
    assert!(!p.matches("crypto-agent@BTC_USDT.socket", None));
    assert!(!p.matches("other@BTC.service", None));
}

#[test]
fn question_marks_and_classes_work_as_in_fnmatch() {
    let p = parse("web-[0-9][!a].service");
    assert!(p.matches("web-1b.service", None));
    assert!(!p.matches("web-1a.service", None));
    assert!(!p.matches("web-xb.service", None));
    assert!(parse("db?.service").matches("db1.service", None));
    assert!(!parse("db?.service").matches("db12.service", None));
    assert!(parse("[]x].service").matches("].service", None));
    assert!(parse("*a*b*.service").matches("xxaxxbxx.service", None));
    assert!(!parse("*a*b*.service").matches("xxbxxaxx.service", None));
}

#[test]
fn a_slice_covers_its_services_and_those_of_the_slices_below_it() {
    let p = parse("trading.slice");
    assert_eq!(p, UnitPattern::Slice("trading.slice".into()));
    assert!(p.matches("engine.service", Some("trading.slice")));
    assert!(p.matches("hft.service", Some("trading-hft.slice")));
    assert!(!p.matches("engine.service", Some("tradingx.slice")));
    assert!(!p.matches("engine.service", Some("system.slice")));
    assert!(!p.matches("engine.service", None), "slice unknown yet");
    assert!(!p.matches("engine.socket", Some("trading.slice")));
    assert!(parse("-.slice").matches("any.service", Some("system.slice")));
}

#[test]
fn a_glob_within_a_slice_needs_both() {
    let p = parse("trading.slice/crypto-*.service");
    assert!(p.matches("crypto-a.service", Some("trading.slice")));
    assert!(!p.matches("crypto-a.service", Some("system.slice")));
    assert!(!p.matches("engine.service", Some("trading.slice")));
    assert_eq!(p.to_string(), "trading.slice/crypto-*.service");
}

#[test]
fn an_exact_name_wins_over_patterns_and_otherwise_config_order_decides() {
    let patterns = [
        parse("crypto-agent@*.service"),
        parse("trading.slice"),
        parse("crypto-agent@BTC.service"),
    ];
    assert_eq!(
        first_match(&patterns, "crypto-agent@BTC.service", Some("trading.slice")),
        Some(2)
    );
    assert_eq!(
        first_match(&patterns, "crypto-agent@ETH.service", Some("trading.slice")),
        Some(0)
    );
    assert_eq!(
        first_match(&patterns, "engine.service", Some("trading.slice")),
        Some(1)
    );
    assert_eq!(
        first_match(&patterns, "sshd.service", Some("system.slice")),
        None
    );
    assert!(!parse("web.service").is_pattern());
    assert!(parse("web@*.service").is_pattern());
}

#[test]
fn bad_patterns_say_what_and_where() {
    let e = UnitPattern::parse("web-[0-9.service").unwrap_err();
    assert_eq!(e.at, 4, "{e}");
    assert!(e.to_string().contains("never closed"), "{e}");
    assert!(e.to_string().ends_with("(at character 5)"), "{e}");
    let e = UnitPattern::parse("trading.slice/db[.service").unwrap_err();
    assert_eq!(e.at, 16, "{e}");
    let e = UnitPattern::parse("web.service/x.service").unwrap_err();
    assert!(e.message.contains("only a slice"), "{e}");
    let e = UnitPattern::parse("trading.slice/").unwrap_err();
    assert!(e.message.contains("empty"), "{e}");
    let e = UnitPattern::parse("trading-*.slice").unwrap_err();
    assert!(e.message.contains("glob over slices"), "{e}");
}
