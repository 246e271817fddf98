//! Issue 14 end to end, false positives: healthy services doing ordinary things must see no
//! action. A server under sustained client load, a server with idle keep-alive connections, a
//! batch job that computes with `spinning = false`, and a unit its operator restarts. A real
//! `systemd --user`, the real agent, and stall thresholds short enough to fire several times
//! over during each test if the rules were wrong.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use selfheal_tests::agent::{WAIT, history_and_log, wait_loaded, workload};
use selfheal_tests::{Sandbox, agent::Agent, service_unit};

/// Four thresholds of 3 s: a wrong rule would have fired.
const WATCH: Duration = Duration::from_secs(12);

fn unit_table(unit: &str, stall: &str) -> String {
    format!("[[unit]]\nname = \"{unit}\"\n\n[unit.stall]\nthreshold = \"3s\"\n{stall}\n\n")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// No action on the unit, and no decision that wanted one.
fn assert_left_alone(agent: &Agent, unit: &str) -> anyhow::Result<()> {
    let actions = agent.records(unit, "action")?;
    let acted: Vec<_> = agent
        .records(unit, "decision")?
        .into_iter()
        .filter(|d| d["action"] != "none")
        .collect();
    assert!(
        actions.is_empty() && acted.is_empty(),
        "{unit}: {actions:#?}\n{acted:#?}\n{}",
        history_and_log(agent, unit)
    );
    Ok(())
}

fn connect(port: u16) -> anyhow::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

fn round_trip(conn: &mut (TcpStream, BufReader<TcpStream>), n: u64) -> anyhow::Result<()> {
    writeln!(conn.0, "request {n}")?;
    let mut reply = String::new();
    conn.1.read_line(&mut reply)?;
    anyhow::ensure!(
        reply.trim() == format!("request {n}"),
        "echo said {reply:?}"
    );
    Ok(())
}

#[test]
fn a_server_under_sustained_load_and_one_with_idle_keep_alive_connections_see_no_action()
-> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("controls-net")?;
    let (busy, idle) = (free_port()?, free_port()?);
    let units = [("loaded.service", busy), ("keepalive.service", idle)];
    let mut config = String::new();
    for (unit, port) in units {
        let exec = workload(&format!("echo-server {port}"));
        sandbox.install_unit(unit, &service_unit(unit, &exec, &[]))?;
        config.push_str(&unit_table(unit, ""));
    }
    let agent = Agent::start(&sandbox, &config, &[])?;
    for (unit, _) in units {
        wait_loaded(&agent, unit)?;
    }
    sandbox.systemctl(&["start", "loaded.service", "keepalive.service"])?;

    // Idle keep-alive: each connection made one request, then stays open and silent.
    let mut keep = Vec::new();
    Sandbox::wait_until("5 keep-alive connections", WAIT, || {
        let mut conn = connect(idle)?;
        round_trip(&mut conn, 0)?;
        keep.push(conn);
        Ok(keep.len() == 5)
    })?;
    // Sustained load: four connections pipelining requests for the whole watch.
    let mut load = Vec::new();
    Sandbox::wait_until("4 loaded connections", WAIT, || {
        load.push(connect(busy)?);
        Ok(load.len() == 4)
    })?;
    let started = Instant::now();
    let mut requests = 0u64;
    while started.elapsed() < WATCH {
        for conn in &mut load {
            round_trip(conn, requests)?;
            requests += 1;
        }
    }
    eprintln!("{requests} requests in {WATCH:?}");
    for (unit, _) in units {
        assert_left_alone(&agent, unit)?;
    }
    Ok(())
}

#[test]
fn a_batch_job_computing_with_spinning_off_and_a_unit_its_operator_restarts_see_no_action()
-> anyhow::Result<()> {
    selfheal_tests::require_root!();
    let sandbox = Sandbox::start("controls-cpu")?;
    sandbox.install_unit(
        "batch.service",
        &service_unit("batch", &workload("spin 1"), &[]),
    )?;
    sandbox.install_unit(
        "operated.service",
        &service_unit("operated", &workload("sleep"), &[]),
    )?;
    let config = unit_table("batch.service", "spinning = false")
        + "[[unit]]\nname = \"operated.service\"\n\n";
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_loaded(&agent, "batch.service")?;
    wait_loaded(&agent, "operated.service")?;
    sandbox.systemctl(&["start", "batch.service", "operated.service"])?;

    let started = Instant::now();
    let mut restarts = 0;
    while started.elapsed() < WATCH {
        std::thread::sleep(Duration::from_secs(3));
        sandbox.systemctl(&["restart", "operated.service"])?;
        restarts += 1;
    }
    assert_eq!(
        sandbox.property("operated.service", "ActiveState")?,
        "active"
    );
    eprintln!("operated.service restarted {restarts} times by its operator");
    assert_left_alone(&agent, "batch.service")?;
    assert_left_alone(&agent, "operated.service")?;
    Ok(())
}
