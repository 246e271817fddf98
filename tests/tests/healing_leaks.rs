//! Issue 14 end to end, server-side connection leaks: the sockets `accept()` returns count
//! toward the unit's sockets and connections, so a server that never closes its clients'
//! connections is a `connection_leak` (and a `socket_leak`) with a time to exhaustion. A real
//! `systemd --user`, the real agent, real TCP clients.

use std::{
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use selfheal_tests::agent::{WAIT, audit_lines, text, wait_loaded, workload};
use selfheal_tests::{Sandbox, agent::Agent, service_unit};
use serde_json::Value;

#[test]
fn a_server_that_never_closes_its_clients_connections_is_a_connection_and_socket_leak()
-> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("serverleak")?;
    let unit = "holder.service";
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exec = workload(&format!("hold-accepted {port}"));
    sandbox.install_unit(unit, &service_unit(unit, &exec, &["LimitNOFILE=1024"]))?;
    // Recorded, not acted on: the test reads what was detected.
    let config = format!(
        "[[unit]]\nname = \"{unit}\"\n\n[unit.leak]\nwindow = \"20s\"\n\
         kinds = [\"connection_leak\", \"socket_leak\"]\n\n\
         [unit.remediation]\nconnection_leak = []\nsocket_leak = []\n"
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_loaded(&agent, unit)?;
    sandbox.systemctl(&["start", unit])?;
    Sandbox::wait_until("the server to listen", WAIT, || {
        Ok(TcpStream::connect(("127.0.0.1", port)).is_ok())
    })?;

    // Clients come and go, 20 a second; the server keeps every one.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(TcpStream::connect(("127.0.0.1", port)));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut found: Vec<Value> = Vec::new();
    let waited = Sandbox::wait_until("both leaks to be detected", WAIT * 2, || {
        found = audit_lines(&sandbox)?
            .into_iter()
            .filter(|r| {
                r["unit"] == unit && r["problem"].as_str().is_some_and(|p| p.ends_with("_leak"))
            })
            .collect();
        let has = |kind: &str| found.iter().any(|r| r["problem"] == kind);
        Ok(has("connection_leak") && has("socket_leak"))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = clients.join();
    waited.map_err(|e| e.context(format!("{found:#?}\n{}", agent.log_text())))?;
    for record in &found {
        let evidence = text(record, "evidence");
        assert!(evidence.contains("exhaustion in ~"), "{record:#}");
    }
    Ok(())
}
