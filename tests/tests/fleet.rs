//! Issue 15 end to end: agents on several "hosts" (each a sandboxed `systemd --user` with its
//! own agent) share a group through a real 3-member etcd cluster on loopback. The assertions
//! compare the agents' audit logs with etcd's own history (`etcdctl watch --prefix --rev=1`).
//!
//! Needs root, Debian's `etcd-server`, `etcd-client` and `prometheus-alertmanager` (`cargo
//! xtask setup` installs them), and the agent and workload binaries.

#[path = "fleet/history.rs"]
mod history;
// The real Alertmanager of the operator tests, for the fleet's alerts.
#[expect(dead_code, reason = "the operator tests use the rest")]
#[path = "operator/http.rs"]
mod http;
#[expect(dead_code, reason = "the operator tests use the rest")]
#[path = "operator/servers.rs"]
mod servers;

use std::time::Duration;

use history::{audit_matches_history, max_concurrent};
use selfheal_tests::{
    Sandbox,
    etcd::{EtcdCluster, proxy::Proxy},
    fleet::{Host, UNIT, WAIT, start_fleet},
};
use serde_json::Value;
use servers::Server;

/// Alerts stay in Alertmanager (the test reads them there); nothing is sent on.
const ALERTMANAGER_CONFIG: &str = "route:\n  receiver: none\nreceivers:\n  - name: none\n";

fn prefix(fleet: &str) -> String {
    format!("/selfheal/{fleet}/")
}

/// The same fault on every host at once: at most `max_disrupted` (1) act at a time, and all
/// are healed in turn; each restart's slot is in etcd's history.
#[test]
fn same_fault_everywhere_heals_one_host_at_a_time() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let etcd = EtcdCluster::start("budget")?;
    // A breaker that cannot open here: this test is about the budget alone.
    let hosts = start_fleet(3, "budget", &etcd.endpoints(), "breaker_threshold = 10")?;
    for host in &hosts {
        host.break_unit()?;
    }
    for host in &hosts {
        host.wait_healed(WAIT)?;
    }
    let history = etcd.history(&prefix("budget"))?;
    assert_eq!(
        max_concurrent(&history),
        1,
        "more than one slot held at once: {history:#?}"
    );
    for host in &hosts {
        audit_matches_history(host, &history)?;
    }
    let waits = hosts
        .iter()
        .filter(|h| h.agent.log_text().contains("waiting for the fleet"))
        .count();
    assert!(
        waits >= 1,
        "with one slot for three hosts someone must have waited"
    );

    // The last host releases its slot, and records its action, after its settle period.
    let mut status = Value::Null;
    // The last holder keeps its slot through the settle period after its action: wait for
    // every host's last action and for that slot to be released.
    Sandbox::wait_until("every host's last action in the fleet view", WAIT, || {
        status = serde_json::from_str(&hosts[0].fleet_cli(&["status", "--json"])?)?;
        let web = &status["groups"]["web"];
        Ok(web["recent"].as_object().map(|r| r.len()) == Some(3)
            && web["slots"].as_object().is_some_and(|s| s.is_empty()))
    })?;
    assert_eq!(
        status["hosts"].as_object().map(|h| h.len()),
        Some(3),
        "{status:#}"
    );
    assert_eq!(status["hosts"]["h1"]["zone"], "z-h1", "{status:#}");
    let group = &status["groups"]["web"];
    assert_eq!(
        group["members"].as_array().map(Vec::len),
        Some(3),
        "{status:#}"
    );
    assert!(
        group["slots"].as_object().is_some_and(|s| s.is_empty()),
        "{status:#}"
    );
    assert!(
        group["failing"].as_array().is_some_and(|f| f.is_empty()),
        "healed hosts still report failing: {status:#}"
    );
    assert_eq!(group["budget"]["limit"], 1, "{status:#}");
    let text = hosts[1].fleet_cli(&["status"])?;
    assert!(
        text.contains("3 host(s) alive")
            && text.contains("group web: 3 host(s), slots 0/1, breaker closed"),
        "{text}"
    );
    Ok(())
}

/// Most hosts failing: the breaker opens (no slot taken while open), one canary tries after the
/// cool-down, its success closes the breaker, and the others then heal under the budget.
#[test]
fn most_hosts_failing_open_the_breaker_then_one_canary_closes_it() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let etcd = EtcdCluster::start("breaker")?;
    let hosts = start_fleet(
        4,
        "breaker",
        &etcd.endpoints(),
        "breaker_threshold = \"50%\"",
    )?;
    for host in &hosts {
        host.break_unit()?;
    }
    for host in &hosts {
        host.wait_healed(WAIT * 2)?;
    }
    let history = etcd.history(&prefix("breaker"))?;
    let phases: Vec<(i64, Value)> = history
        .iter()
        .filter(|e| e.put && e.key.ends_with("/breaker"))
        .map(|e| {
            (
                e.mod_revision,
                serde_json::from_str(&e.value).unwrap_or_default(),
            )
        })
        .collect();
    let at = |phase: &str| {
        phases
            .iter()
            .find(|(_, d)| d["phase"] == phase)
            .map(|(rev, d)| (*rev, d.clone()))
    };
    let (opened, _) = at("open").unwrap_or_else(|| panic!("the breaker never opened: {phases:?}"));
    let (half, trial) = at("half-open").unwrap_or_else(|| panic!("no canary: {phases:?}"));
    let (closed, _) = at("closed").unwrap_or_else(|| panic!("never closed: {phases:?}"));
    assert!(opened < half && half < closed, "{phases:?}");
    let canary = trial["canary"].as_str().unwrap_or_default().to_owned();
    let slots_between = |from: i64, to: i64| -> Vec<&str> {
        history
            .iter()
            .filter(|e| {
                e.put && e.key.contains("/slots/") && e.mod_revision > from && e.mod_revision < to
            })
            .map(|e| e.key.as_str())
            .collect()
    };
    assert!(
        slots_between(opened, half).is_empty(),
        "slots taken while open: {:?}",
        slots_between(opened, half)
    );
    let trial_slots = slots_between(half, closed);
    assert_eq!(
        trial_slots.len(),
        1,
        "exactly the canary acts while half-open: {trial_slots:?}"
    );
    assert!(
        trial_slots[0].ends_with(&format!("/slots/{canary}")),
        "{trial_slots:?} {canary}"
    );
    assert_eq!(max_concurrent(&history), 1);
    for host in &hosts {
        audit_matches_history(host, &history)?;
        let alerts = host.agent.log_text().matches("ALERT group web").count();
        assert!(
            alerts <= 1,
            "{} alerted {alerts} times for one opening",
            host.name
        );
    }
    Ok(())
}

/// `fleet pause`: nothing acts (no slot is ever taken) until `fleet resume`.
#[test]
fn pause_stops_every_host_until_resume() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let etcd = EtcdCluster::start("pause")?;
    let hosts = start_fleet(3, "pause", &etcd.endpoints(), "breaker_threshold = 10")?;
    let said = hosts[0].fleet_cli(&["pause"])?;
    assert!(said.contains("paused"), "{said}");
    for host in &hosts {
        host.break_unit()?;
    }
    for host in &hosts {
        Sandbox::wait_until(&format!("{} to wait on the pause", host.name), WAIT, || {
            Ok(host.agent.log_text().contains("automated action is paused"))
        })?;
    }
    std::thread::sleep(Duration::from_secs(3));
    let history = etcd.history(&prefix("pause"))?;
    assert_eq!(max_concurrent(&history), 0, "a slot was taken while paused");
    assert!(
        hosts
            .iter()
            .all(|h| h.restarts_done().is_empty() && h.fault.exists())
    );
    let status = hosts[1].fleet_cli(&["status"])?;
    assert!(status.contains("PAUSED"), "{status}");

    hosts[2].fleet_cli(&["resume"])?;
    for host in &hosts {
        host.wait_healed(WAIT)?;
    }
    let history = etcd.history(&prefix("pause"))?;
    assert_eq!(max_concurrent(&history), 1);
    Ok(())
}

/// An agent SIGSTOPped while it holds a slot: its lease runs out, etcd deletes the slot, and
/// the other host proceeds.
#[test]
fn a_stopped_holder_loses_its_slot_and_others_proceed() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let etcd = EtcdCluster::start("sigstop")?;
    // A long settle keeps the slot held after the restart: the holder is stopped holding it.
    let hosts = start_fleet(
        2,
        "sigstop",
        &etcd.endpoints(),
        "breaker_threshold = 10\nsettle = \"5m\"",
    )?;
    for host in &hosts {
        host.break_unit()?;
    }
    let mut holder = None;
    Sandbox::wait_until("a host to restart under a slot", WAIT, || {
        holder = hosts.iter().position(|h| !h.restarts_done().is_empty());
        Ok(holder.is_some())
    })?;
    let (holder, other) = match holder {
        Some(0) => (&hosts[0], &hosts[1]),
        _ => (&hosts[1], &hosts[0]),
    };
    // SAFETY: kill(2) on an agent this test started.
    unsafe { libc::kill(holder.agent.pid() as i32, libc::SIGSTOP) };
    let healed = other.wait_healed(WAIT);
    // SAFETY: as above.
    unsafe { libc::kill(holder.agent.pid() as i32, libc::SIGCONT) };
    healed?;
    let history = etcd.history(&prefix("sigstop"))?;
    let holder_key = format!("/slots/{}", holder.name);
    let expired = history
        .iter()
        .find(|e| !e.put && e.key.ends_with(&holder_key))
        .map(|e| e.mod_revision)
        .expect("the stopped holder's slot was deleted by its lease's expiry");
    let taken = history
        .iter()
        .find(|e| e.put && e.key.ends_with(&format!("/slots/{}", other.name)))
        .map(|e| e.mod_revision)
        .expect("the other host took a slot");
    assert!(
        expired < taken,
        "the other host took its slot before the stopped one's expired"
    );
    assert_eq!(max_concurrent(&history), 1);
    Ok(())
}

/// An agent cut off from etcd fails static: it alerts, holds the disruptive restart of its
/// stalled unit, and still restarts its unit when it dies (under local limits); a connected
/// host keeps acting normally.
#[test]
fn a_host_cut_off_from_etcd_fails_static() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let etcd = EtcdCluster::start("partition")?;
    let proxy = Proxy::start(&etcd.client_addrs())?;
    let am_dir = std::env::temp_dir().join(format!("selfheal-fleet-am-{}", std::process::id()));
    std::fs::create_dir_all(&am_dir)?;
    let am_port = servers::free_port()?;
    let alertmanager = Server::alertmanager(&am_dir, am_port, ALERTMANAGER_CONFIG)?;
    let extra = "breaker_threshold = 10\nslot_wait = \"6s\"";
    let cut_extra = format!(
        "{extra}\n\n[alertmanager]\nurl = \"http://{}\"",
        alertmanager.address
    );
    let cut = Host::start("h0", "partition", &proxy.endpoints(), &cut_extra)?;
    let connected = Host::start("h1", "partition", &etcd.endpoints(), extra)?;
    Sandbox::wait_until("h0 to register", WAIT, || {
        Ok(cut.agent.log_text().contains("fleet: registered"))
    })?;
    proxy.cut();
    Sandbox::wait_until("h0 to alert that etcd is away", WAIT, || {
        Ok(cut.agent.log_text().contains("ALERT etcd unreachable"))
    })?;
    let gauge = |host: &Host, up: u8| -> anyhow::Result<bool> {
        let text = host.metrics()?;
        Ok(text
            .lines()
            .any(|l| l == format!("selfheal_fleet_connected{{fleet=\"partition\"}} {up}")))
    };
    Sandbox::wait_until("h0 to export selfheal_fleet_connected 0", WAIT, || {
        gauge(&cut, 0)
    })?;
    assert!(gauge(&connected, 1)?, "h1 is connected");
    cut.break_unit()?;
    connected.break_unit()?;
    connected.wait_healed(WAIT)?;
    let mut held = None;
    Sandbox::wait_until("h0 to hold its disruptive restart", WAIT, || {
        held = cut
            .audit()
            .into_iter()
            .find(|r| r["event"] == "action" && r["outcome"] == "skipped");
        Ok(held.is_some())
    })?;
    let held = held.expect("found");
    let detail = held["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("held by the fleet") && detail.contains("etcd is unreachable"),
        "{held}"
    );
    assert!(
        cut.restarts_done().is_empty() && cut.fault.exists(),
        "h0 acted without a slot"
    );
    // The held restart comes back (after a backoff) and is held again; the hold is alerted
    // once for the outage, in the log and in Alertmanager.
    Sandbox::wait_until("h0 to try its held restart again", WAIT, || {
        Ok(cut
            .audit()
            .iter()
            .filter(|r| r["event"] == "action" && r["outcome"] == "skipped")
            .count()
            >= 2)
    })?;
    let alerts = cut.agent.log_text().matches("ALERT offline").count();
    assert_eq!(alerts, 1, "one alert per outage:\n{}", cut.fleet_log());
    Sandbox::wait_until("Alertmanager to hold h0's fleet alert", WAIT, || {
        let alerts = alertmanager.get_json("/api/v2/alerts")?;
        Ok(alerts.as_array().is_some_and(|all| {
            all.iter().any(|a| {
                a["labels"]["alertname"] == "SelfHealFleetOffline"
                    && a["labels"]["instance"] == "h0"
                    && a["labels"]["group"] == "web"
            })
        }))
    })?;
    assert!(
        cut.restarts_done().is_empty() && cut.fault.exists(),
        "h0 acted without a slot on a retry"
    );

    // A dead unit needs no slot: killed, it is restarted even while cut off.
    let pid = cut.sandbox.main_pid(UNIT)?;
    // SAFETY: kill(2) on the main process of a unit this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    cut.wait_healed(WAIT)?;
    assert!(
        cut.restarts_done()[0].get("slot").is_none(),
        "a dead unit's restart takes no slot"
    );

    let history = etcd.history(&prefix("partition"))?;
    assert!(
        !history
            .iter()
            .any(|e| e.put && e.key.ends_with("/slots/h0")),
        "h0 took a slot while cut off"
    );
    Ok(())
}

/// The leader and a follower killed while a host holds a slot: no quorum, nobody else acts,
/// nothing deadlocks; once the members are back every host heals, never more than the budget
/// at once.
#[test]
fn losing_quorum_mid_action_holds_then_everyone_heals() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let mut etcd = EtcdCluster::start("quorum")?;
    let hosts = start_fleet(
        3,
        "quorum",
        &etcd.endpoints(),
        "breaker_threshold = 10\nsettle = \"4s\"",
    )?;
    for host in &hosts {
        host.break_unit()?;
    }
    Sandbox::wait_until("a slot to be held", WAIT, || {
        Ok(etcd
            .etcdctl(&[
                "get",
                "--prefix",
                "--keys-only",
                &format!("{}groups/web/slots/", prefix("quorum")),
            ])?
            .contains("slots/"))
    })?;
    let leader = etcd.leader()?;
    let follower = (leader + 1) % 3;
    etcd.kill(leader);
    etcd.kill(follower);
    std::thread::sleep(Duration::from_secs(4));
    etcd.restart(leader)?;
    etcd.restart(follower)?;
    etcd.wait_healthy(WAIT)?;
    for host in &hosts {
        host.wait_healed(WAIT * 2)?;
    }
    let history = etcd.history(&prefix("quorum"))?;
    assert_eq!(max_concurrent(&history), 1, "{history:#?}");
    for host in &hosts {
        audit_matches_history(host, &history)?;
    }
    Ok(())
}

/// Crash loops on most hosts open the fleet breaker: a dead unit's restart takes no slot and
/// does not wait, but it reports the group failing here.
#[test]
fn crash_loops_on_most_hosts_open_the_breaker() -> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let etcd = EtcdCluster::start("crashes")?;
    // A long cool-down: no canary while the test looks.
    let extra = "breaker_threshold = \"50%\"\nbreaker_cooldown = \"5m\"";
    let hosts = start_fleet(3, "crashes", &etcd.endpoints(), extra)?;
    for host in &hosts {
        Sandbox::wait_until(&format!("{} to watch its unit", host.name), WAIT, || {
            let log = host.agent.log_text();
            Ok(log.contains("fleet: registered") && log.contains("watching it"))
        })?;
    }
    for host in &hosts {
        let pid = host.sandbox.main_pid(UNIT)?;
        // SAFETY: kill(2) on the main process of a unit this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    for host in &hosts {
        let restart = host.wait_healed(WAIT)?;
        assert!(
            restart.get("slot").is_none(),
            "a dead unit's restart takes no slot"
        );
    }
    let key = format!("{}groups/web/breaker", prefix("crashes"));
    Sandbox::wait_until("the breaker to open on crash reports", WAIT, || {
        Ok(etcd.etcdctl(&["get", &key])?.contains("\"open\""))
    })?;
    let history = etcd.history(&prefix("crashes"))?;
    assert!(
        history
            .iter()
            .filter(|e| e.put && e.key.contains("/failing/"))
            .count()
            >= 2,
        "{history:#?}"
    );
    assert_eq!(
        max_concurrent(&history),
        0,
        "no slot is taken for a dead unit"
    );
    let alerted = hosts
        .iter()
        .filter(|h| h.agent.log_text().contains("ALERT group web"))
        .count();
    assert!(alerted >= 1, "the opening is alerted");
    Ok(())
}
