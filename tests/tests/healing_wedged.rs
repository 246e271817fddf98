//! Issue 14 end to end, the generalised `wedged` rule: a server whose workers are deadlocked
//! while its acceptor (and a timer thread) go on running has requests waiting unread in its
//! accepted connections; it is wedged and restarted. A real `systemd --user`, the real agent.

use std::{io::Write as _, net::TcpStream};

use selfheal_tests::agent::{WAIT, history_and_log, text, wait_for_record, wait_loaded, workload};
use selfheal_tests::{Sandbox, agent::Agent, service_unit};

#[test]
fn a_server_whose_workers_deadlock_while_its_acceptor_runs_is_wedged_and_restarted()
-> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("deadlock")?;
    let unit = "deadlocked.service";
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exec = workload(&format!("deadlocked-server {port}"));
    sandbox.install_unit(unit, &service_unit(unit, &exec, &[]))?;
    let config = format!("[[unit]]\nname = \"{unit}\"\n\n[unit.stall]\nthreshold = \"3s\"\n");
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_loaded(&agent, unit)?;
    sandbox.systemctl(&["start", unit])?;
    let old = sandbox.main_pid(unit)?;

    // Every request is accepted, then nobody reads it.
    let mut clients = Vec::new();
    Sandbox::wait_until("3 clients to send their requests", WAIT, || {
        let mut client = TcpStream::connect(("127.0.0.1", port))?;
        client.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
        clients.push(client);
        Ok(clients.len() == 3)
    })?;
    let decision = wait_for_record(&agent, unit, "decision", "the wedged decision", |d| {
        d["problem"] == "wedged"
    })
    .map_err(|e| e.context(history_and_log(&agent, unit)))?;
    let evidence = text(&decision, "evidence");
    assert!(
        evidence.contains("0 connection(s) in accept queues")
            && evidence.contains("byte(s) in receive queues"),
        "{decision:#}"
    );
    assert!(
        !evidence.contains(" 0 byte(s)"),
        "the unread requests are counted: {decision:#}"
    );

    wait_for_record(&agent, unit, "action", "the restart", |r| {
        r["action"] == "restart" && r["outcome"] == "done"
    })?;
    assert_ne!(sandbox.main_pid(unit)?, old, "a new main process runs");
    drop(clients);
    Ok(())
}
