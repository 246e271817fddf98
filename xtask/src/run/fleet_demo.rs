//! `cargo xtask run -- --fleet-demo`: three sandboxed "hosts" on this machine share one
//! disruption budget through a real 3-member etcd cluster. Every 30 s the same fault hits every
//! host at once; the agents heal them one at a time while the fleet view is printed.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use selfheal_tests::{etcd::EtcdCluster, fleet::start_fleet, sandbox::sweep_stale};

use super::STOP;

const FAULT_EVERY: Duration = Duration::from_secs(30);

pub fn fleet_demo() -> anyhow::Result<()> {
    super::stop_on_signals();
    sweep_stale();
    println!("xtask run: fleet demo: starting a 3-member etcd cluster on loopback");
    let etcd = EtcdCluster::start("demo")?;
    let hosts = start_fleet(3, "demo", &etcd.endpoints(), "breaker_threshold = 10")?;
    let config = hosts[0].config_path();
    println!("xtask run: fleet demo: hosts h0, h1, h2 share group \"web\" with max_disrupted = 1.");
    println!("  In another shell, as root:");
    println!(
        "  selfheal-agent fleet status --config {}",
        config.display()
    );
    println!(
        "  selfheal-agent fleet pause --config {}   (and `fleet resume`)",
        config.display()
    );
    println!("xtask run: press Ctrl-C to stop the agents and tear everything down");
    let mut next_fault = Instant::now();
    let mut next_view = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        if Instant::now() >= next_fault {
            println!("\n=== the same fault on every host at once ===");
            for host in &hosts {
                host.break_unit()?;
            }
            next_fault = Instant::now() + FAULT_EVERY;
        }
        if Instant::now() >= next_view {
            match hosts[0].fleet_cli(&["status"]) {
                Ok(view) => print!("{view}"),
                Err(e) => println!("fleet status: {e:#}"),
            }
            next_view = Instant::now() + Duration::from_secs(2);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(hosts);
    drop(etcd);
    println!("xtask run: stopped; the sandboxes and the etcd cluster are gone");
    Ok(())
}
