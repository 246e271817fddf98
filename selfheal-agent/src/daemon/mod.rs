//! The running agent: wires sensors → detectors → policy → actuators and the status socket,
//! and shuts them all down on SIGINT/SIGTERM.

mod engine;
mod shared;

pub use shared::{AgentState, Shared};

use std::time::Duration;

use anyhow::Context as _;
use log::{error, info, warn};
use tokio::sync::{mpsc, watch};

use crate::{
    config::Config,
    report::status,
    sensors::ebpf::{KernelSensors, read_exit_events},
    systemd::{self, Bus},
    units::tracker::Tracker,
};

pub struct Options {
    pub config: Config,
    pub bus: Bus,
    pub dry_run: bool,
}

/// How long tasks get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let conn = systemd::connect(opts.bus).await?;
    let manager_pid = systemd::manager_pid(&conn).await;
    let mut kernel = tokio::task::spawn_blocking(KernelSensors::load)
        .await
        .context("loading the eBPF programs panicked")??;

    let state = Shared::new(AgentState::new(&opts, kernel.hooks.clone()));
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    let socket = opts.config.agent.status_socket.clone();
    let listener = status::bind(&socket)?;
    tasks.spawn(status::serve(listener, state.clone(), shutdown.clone()));

    let (exit_tx, exit_rx) = mpsc::channel(1024);
    if let Some(ring) = kernel.events.take() {
        tasks.spawn(read_exit_events(ring, exit_tx, shutdown.clone()));
    }
    let counters = kernel.counters;
    state.lock().kernel_counters = Some(counters);

    let tracker = Tracker {
        conn: conn.clone(),
        state: state.clone(),
        filter: Some(kernel.filter),
        v2_root: crate::cgroupfs::v2_root(),
    };
    let tracker_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = tracker.run(tracker_shutdown).await {
            error!("unit tracking stopped: {e}");
        }
    });

    let engine = engine::Engine::new(conn.clone(), state.clone(), manager_pid, opts.dry_run);
    tasks.spawn(engine.run(exit_rx, shutdown.clone()));

    info!(
        "selfheal agent running: {} unit(s), {} bus{}, status at {}",
        opts.config.units.len(),
        match opts.bus {
            Bus::System => "system",
            Bus::User => "session",
        },
        if opts.dry_run { ", dry run" } else { "" },
        socket.display()
    );
    wait_for_signal().await?;
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        warn!("some tasks did not stop within {DRAIN:?}; aborting them");
        tasks.abort_all();
    }
    let _ = std::fs::remove_file(&socket);
    // `kernel`'s remaining fields (the loaded object) drop here, detaching the programs.
    drop(kernel.hooks);
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}
