//! The running agent: wires sensors → detectors → policy → actuators, the status socket and
//! the HTTP endpoint, tells systemd when it is ready (and keeps its watchdog fed), and shuts
//! everything down on SIGINT/SIGTERM. SIGHUP reloads the config (see [`reload`]).

mod actuator;
pub mod commands;
mod engine;
mod execute;
mod exits;
mod lost_exits;
mod membership;
mod perform;
mod persist;
pub mod publish;
pub mod reload;
mod shared;
mod supervise;
mod supervisor;
mod tick;

pub use engine::signal_name;
pub use shared::{AgentState, Shared};

use supervise::{BlindPart, Parts};
use supervisor::Supervisor;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use log::{error, info, warn};
use tokio::sync::{mpsc, watch};

use crate::{
    act::quarantine::Quarantine,
    config::{Config, UnitPolicy},
    policy::{Policy, UnitSpec},
    report::{
        alert_out::AlertPusher,
        audit::Audit,
        http::{self, HttpState},
        metrics::Metrics,
        status,
        watchdog::{self, Notifier},
        webhook::{BearerToken, Webhook},
    },
    sensors::{
        ebpf::{KernelSensors, LoadOptions, read_exit_events},
        probes::run_probes,
        sched::SchedSensor,
    },
    systemd::{self, Bus},
    units::{tables::Tables, tracker::Tracker},
};

pub struct Options {
    pub config: Config,
    /// The file `config` was read from, read again on SIGHUP (`None`: built-in defaults).
    pub config_path: Option<PathBuf>,
    pub bus: Bus,
    pub dry_run: bool,
}

/// How long tasks get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(5);

pub async fn run(opts: Options) -> anyhow::Result<()> {
    keep_heap_small();
    let config = &opts.config;
    // Resolved once: the unit table, the probes and the policy all start from the exact names
    // (in file order: unit i is the i-th exact name); patterns adopt later.
    let tables = Tables::new(config.unit_policies());
    let unit_policies: Vec<UnitPolicy> = tables.exact().cloned().collect();
    let conn = systemd::connect(opts.bus).await?;
    let manager_pid = systemd::manager_pid(&conn).await;
    let load = LoadOptions {
        quarantine_allow_loopback: config.agent.quarantine_allow_loopback,
    };
    let mut kernel = tokio::task::spawn_blocking(move || KernelSensors::load(load))
        .await
        .context("loading the eBPF programs panicked")??;
    return_freed_heap();

    let state = Shared::new(AgentState::new(&opts, tables.clone(), kernel.hooks.clone()));
    let (shutdown_tx, shutdown) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let parts = Parts::new(shutdown.clone());
    state.lock().parts = Some(parts.clone());

    let metrics = Arc::new(Metrics::new());
    for unit in &state.lock().units {
        metrics.watch_unit(&unit.name);
    }
    for hook in &kernel.hooks {
        metrics.set_hook_attached(hook.hook, hook.attached);
    }

    let (snapshot_tx, snapshots) = publish::channel(&state);
    tasks.spawn(publish::run(state.clone(), snapshot_tx, shutdown.clone()));
    let (command_tx, commands) = mpsc::channel(16);
    let socket = config.agent.status_socket.clone();
    let listener = status::bind(&socket)?;
    tasks.spawn(status::serve(
        listener,
        snapshots.clone(),
        command_tx,
        shutdown.clone(),
    ));

    let (alert_tx, alerts) = mpsc::channel(256);
    let webhook = match &config.webhook.token_file {
        Some(path) => {
            let token = BearerToken::load(path)?;
            let names = snapshots.clone();
            let is_monitored = Arc::new(move |unit: &str| names.borrow().monitors(unit));
            Some(Arc::new(Webhook::new(
                token,
                config.webhook.max_body,
                is_monitored,
                alert_tx,
            )))
        }
        None => None,
    };
    let last_tick = Arc::new(AtomicU64::new(now_secs()));
    let http_listener = http::bind(&config.http).await?;
    state.lock().http_address = http_listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let http_state = HttpState {
        metrics: metrics.clone(),
        health: health_source(snapshots.clone()),
        webhook,
    };
    tasks.spawn(http::serve(http_listener, http_state, shutdown.clone()));

    let (exit_tx, exits) = mpsc::channel(4096);
    if let Some(ring) = kernel.events.take() {
        parts.spawn(
            &mut tasks,
            BlindPart {
                name: "exit reader",
                detail: "process exits of monitored units (crash and exit detection)",
                vital: true,
            },
            read_exit_events(ring, exit_tx, shutdown.clone()),
        );
    }
    state.lock().kernel_counters = Some(Arc::new(kernel.counters));

    // Runs from the start even without probes: a reload may add some. The engine hands it each
    // unit's set.
    let (probe_tx, probe_reports) = mpsc::channel(1024);
    let (probe_sets, probe_runner) = mpsc::unbounded_channel();
    parts.spawn(
        &mut tasks,
        BlindPart {
            name: "probe runner",
            detail: "health probes and operator-written detectors",
            vital: false,
        },
        run_probes(probe_runner, probe_tx, shutdown.clone()),
    );

    let (tracker_tx, tracker_requests) = mpsc::unbounded_channel();
    let (changes_tx, changes) = mpsc::unbounded_channel();
    let tracker = Tracker::new(
        conn.clone(),
        tables.clone(),
        Some(kernel.filter),
        tracker_requests,
        changes_tx,
    );
    let tracker_shutdown = shutdown.clone();
    let tracking = async move {
        if let Err(e) = tracker.run(tracker_shutdown).await {
            error!("unit tracking stopped: {e}");
        }
    };
    let part = BlindPart {
        name: "unit tracker",
        detail: "systemd's changes to the units (state, main pid, cgroup)",
        vital: true,
    };
    parts.spawn(&mut tasks, part, tracking);

    let specs: Vec<UnitSpec> = unit_policies.iter().map(reload::spec).collect();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let mut policy = Policy::new(config.policy.clone(), specs, seed);
    let state_file = persist::path(&config.agent.state_dir);
    persist::restore(&mut policy, &state_file, &|name| tables.may_adopt(name));
    // Before anything acts: take over the quarantines the saved state says are in force.
    let quarantine = readopt_quarantines(
        Quarantine::new(kernel.programs.clone()),
        &policy,
        &unit_policies,
        &config.agent.state_dir,
        &metrics,
    );
    let audit_path = config.agent.audit_log.clone();

    let names: Vec<String> = unit_policies.iter().map(|u| u.name.clone()).collect();
    let supervisor = Supervisor::new(policy, &names, opts.dry_run);
    let mut engine = engine::Engine::new(engine::EngineParts {
        conn: conn.clone(),
        state: state.clone(),
        manager_pid,
        supervisor,
        sched: kernel.sched.take().map(|maps| {
            let switches_seen = kernel
                .hooks
                .iter()
                .any(|h| h.hook == "sched_switch" && h.attached);
            SchedSensor::new(maps, switches_seen)
        }),
        sockets: kernel.unit_sockets.take(),
        unit_exits: kernel.unit_exits.take(),
        quarantine: Some(quarantine),
        metrics: metrics.clone(),
        audit: Audit::open(&audit_path),
        pusher: AlertPusher::from_config(&config.alertmanager)?.map(Arc::new),
        state_file,
        tick: config.agent.tick,
        v2_root: crate::cgroupfs::v2_root(),
        last_tick: last_tick.clone(),
        fleet: crate::fleet::start(config, metrics.fleet.clone(), shutdown.clone()),
        tracker: tracker_tx,
        probe_sets,
    });
    for (index, unit) in unit_policies.iter().enumerate() {
        if unit.probed() {
            engine.set_probes(index as u32, unit);
        }
    }
    let (reload_tx, reloads) = mpsc::channel(4);
    let inputs = engine::Inputs {
        exits,
        probes: probe_reports,
        alerts,
        commands,
        reloads,
        changes,
    };
    let part = BlindPart {
        name: "engine",
        detail: "decisions and actions",
        vital: true,
    };
    parts.spawn(&mut tasks, part, engine.run(inputs, shutdown.clone()));

    let notifier = Arc::new(Notifier::from_env().unwrap_or_else(|e| {
        warn!("cannot reach systemd's notify socket: {e}; running without readiness notification");
        Notifier::disabled()
    }));
    if let Some(interval) = watchdog::ping_interval_from_env() {
        let stale_after = (config.agent.tick * 5).max(interval * 2).as_secs().max(1);
        let parts = parts.clone();
        // No ping when the engine stopped ticking or a vital part stopped.
        let alive = move || {
            now_secs().saturating_sub(last_tick.load(Ordering::Relaxed)) <= stale_after
                && parts.vital_parts_run()
        };
        let notifier = notifier.clone();
        let shutdown = shutdown.clone();
        tasks
            .spawn(async move { watchdog::keep_alive(&notifier, interval, alive, shutdown).await });
    }
    info!(
        "selfheal agent running: {} unit(s), {} bus{}, status at {}, metrics at http://{}/metrics",
        config.units.len(),
        match opts.bus {
            Bus::System => "system",
            Bus::User => "session",
        },
        if opts.dry_run { ", dry run" } else { "" },
        socket.display(),
        state.lock().http_address,
    );
    if let Err(e) = notifier.ready() {
        error!(
            "cannot tell systemd the agent is ready ({e}): a Type=notify service will time out \
             starting; check NOTIFY_SOCKET and the unit's NotifyAccess="
        );
    }
    if let Err(e) = notifier.status(&format!("watching {} unit(s)", config.units.len())) {
        warn!("cannot send systemd the agent's status line: {e}");
    }

    let mut signals = Signals::install()?;
    let mut running = opts.config.clone();
    while signals.next().await == Signal::Reload {
        match &opts.config_path {
            Some(path) => reload_config(path, &mut running, &reload_tx).await,
            None => warn!("SIGHUP: the agent runs without a config file; nothing to reload"),
        }
    }
    info!("shutting down");
    if let Err(e) = notifier.stopping() {
        warn!("cannot tell systemd the agent is stopping: {e}");
    }
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        warn!("some tasks did not stop within {DRAIN:?}; aborting them");
        tasks.abort_all();
    }
    let _ = std::fs::remove_file(&socket);
    // What is left of `kernel` (the mounts the agent made) drops here, after the tasks that
    // held the programs.
    Ok(())
}

/// Pins quarantines from now on and takes over those a previous agent pinned, so a quarantine
/// in force survives the agent's restart and the kernel says what the saved state says.
fn readopt_quarantines(
    quarantine: Quarantine,
    policy: &Policy,
    units: &[crate::config::UnitPolicy],
    state_dir: &Path,
    metrics: &Metrics,
) -> Quarantine {
    let names: Vec<String> = units.iter().map(|u| u.name.clone()).collect();
    let now = std::time::Instant::now();
    let quarantined: Vec<u32> = (0..names.len() as u32)
        .filter(|&u| policy.unit_status(u, now).is_some_and(|s| s.quarantined))
        .collect();
    let mut quarantine = quarantine.pinned_at(crate::act::pins::dir_for(state_dir), names.clone());
    let found = quarantine.adopt(&quarantined, &policy.pending_quarantined());
    for unit in found.adopted {
        let name = &names[unit as usize];
        info!("{name}: network quarantine still in force, taken over from the previous agent");
        metrics.set_quarantined(name, true);
    }
    for unit in found.missing {
        warn!(
            "{}: the saved state says quarantined but no pinned quarantine was found; \
             the unit is NOT cut off until an operator isolates it again",
            names[unit as usize]
        );
    }
    for name in found.dropped {
        info!("{name}: quarantine over in the saved state; its pinned links removed");
    }
    quarantine
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The facts `/health` is computed from, read from the last published snapshot when asked.
fn health_source(snapshots: publish::Snapshots) -> http::HealthSource {
    Arc::new(move || snapshots.borrow().health_input())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Stop,
    Reload,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Reads the config again (off the async threads) and hands it to the engine when the running
/// agent can apply it; otherwise says why and keeps the running one.
async fn reload_config(path: &Path, running: &mut Config, engine: &mpsc::Sender<reload::Reload>) {
    let (file, current) = (path.to_owned(), running.clone());
    let checked = tokio::task::spawn_blocking(move || reload::load(&file, &current)).await;
    match checked {
        Ok(Ok(accepted)) => {
            info!("SIGHUP: {} read again; applying it", path.display());
            *running = accepted.config.clone();
            if engine.send(accepted).await.is_err() {
                warn!("SIGHUP: the engine has stopped; the new config is not applied");
            }
        }
        Ok(Err(e)) => error!("SIGHUP: new config refused, the running one stays in force: {e}"),
        Err(e) => error!("SIGHUP: reading the config panicked: {e}"),
    }
}

/// Gives the heap freed after loading (the kernel's BTF, parsed while the programs load: a few
/// MiB) back to the system; glibc would otherwise keep it in the agent's RSS for good.
/// A long-running agent with a bursty start (the kernel's BTF, 5 MiB, parsed twice) should not
/// keep its peak: buffers of 128 KiB and more are mapped on their own and unmapped when freed
/// (glibc would otherwise raise that threshold after the first big free and keep later ones in
/// the heap), free heap above 128 KiB is returned, and the blocking pool's threads share two
/// arenas instead of one each. Same effect as the GLIBC_TUNABLES the bench measured.
fn keep_heap_small() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning (it takes the allocator's own lock);
    // no allocation is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn return_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap pages; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
