//! `[fleet]` and the units' `group` / `max_disrupted`: off by default, errors at the value.

use super::*;
use crate::fleet::Share;

#[test]
fn fleet_mode_is_off_unless_endpoints_are_given() {
    assert!(!parse("").fleet.enabled());
    let config = parse(
        "[fleet]\nendpoints = [\"http://127.0.0.1:2379\"]\nname = \"prod\"\n\n\
         [[unit]]\nname = \"web.service\"\ngroup = \"web\"\nmax_disrupted = \"25%\"\n\n\
         [[unit]]\nname = \"db.service\"\nmax_disrupted = 2\n",
    );
    assert!(config.fleet.enabled());
    assert_eq!(config.units[0].group.as_deref(), Some("web"));
    assert_eq!(config.units[0].max_disrupted, Some(Share::Percent(25)));
    assert_eq!(config.units[1].max_disrupted, Some(Share::Count(2)));
    assert_eq!(config.fleet.max_disrupted, Share::Count(1));
}

#[test]
fn a_bad_budget_points_at_its_value() {
    assert_eq!(
        error_of("[[unit]]\nname = \"web.service\"\nmax_disrupted = \"120%\"\n"),
        r#"selfheal.toml:3:17: unit.max_disrupted: expected a number of hosts such as 1 or a percentage such as "25%", found "120%""#
    );
    assert_eq!(
        error_of("[fleet]\nmax_disrupted = 0\n"),
        r#"selfheal.toml:2:17: fleet.max_disrupted: expected a number of hosts such as 1 or a percentage such as "25%", found 0"#
    );
}

#[test]
fn fleet_values_the_types_allow_but_etcd_would_not_are_rejected() {
    assert_eq!(
        error_of("[fleet]\nendpoints = [\"10.0.0.1:2379\"]\n"),
        r#"selfheal.toml:2:13: fleet.endpoints: expected an URL such as "http://10.0.0.1:2379", found "10.0.0.1:2379""#
    );
    assert_eq!(
        error_of("[fleet]\nendpoints = [\"http://e:2379\"]\nlease_ttl = \"1s\"\n"),
        r#"selfheal.toml:3:13: fleet.lease_ttl: expected at least 2s (etcd leases count whole seconds)"#
    );
    assert_eq!(
        error_of("[[unit]]\nname = \"web.service\"\ngroup = \"a/b\"\n"),
        r#"selfheal.toml:3:9: unit.group: expected a group name without "/", found "a/b""#
    );
}
