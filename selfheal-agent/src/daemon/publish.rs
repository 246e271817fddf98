//! What the report layer reads — status, `/health`, the webhook's "is this unit ours" — as a
//! [`Snapshot`] published through `tokio::sync::watch` after the agent's state changes. Readers
//! never take the state's lock, so a status request or a scrape never waits behind the engine,
//! and never makes it wait. Units' histories and views are shared with the
//! state (`Arc`), so a snapshot of 1,000 units copies names and states, not records.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{AgentState, Shared, supervise::Parts};
use crate::{
    config::RestartPolicy,
    report::{
        health::{HealthInput, HookHealth, UnitHealth},
        history::History,
    },
    sensors::ebpf::{HookStatus, KernelCounters},
    systemd::Bus,
    units::{MonitoredUnit, view::UnitView},
};

/// Writes closer together than this are published together.
const COALESCE: Duration = Duration::from_millis(20);
/// A [`Shared::hold`] delays publication at most this long.
const HOLD_AT_MOST: Duration = Duration::from_secs(1);

/// The agent as the report layer sees it.
pub struct Snapshot {
    pub started: Instant,
    pub bus: Bus,
    pub dry_run: bool,
    pub http_address: String,
    /// The units monitored now, in table order.
    pub units: Vec<Arc<PublishedUnit>>,
    /// The config's unit patterns, in file order.
    pub patterns: Vec<String>,
    pub hooks: Vec<HookStatus>,
    /// Read when asked: the kernel's counters move on every event.
    pub kernel_counters: Option<Arc<KernelCounters>>,
    pub tracked_tasks: Vec<u32>,
    /// Asked when read: a part that stops does not write the state.
    pub parts: Option<Parts>,
}

/// One monitored unit in a [`Snapshot`].
pub struct PublishedUnit {
    pub name: String,
    pub pattern: Option<String>,
    pub exists: bool,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub main_pid: u32,
    pub cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
    pub restart: RestartPolicy,
    pub history: Arc<History>,
    pub view: Arc<UnitView>,
}

impl PublishedUnit {
    fn of(u: &MonitoredUnit) -> Self {
        Self {
            name: u.name.clone(),
            pattern: u.pattern.clone(),
            exists: u.exists(),
            load_state: u.systemd.load_state.clone(),
            active_state: u.systemd.active_state.clone(),
            sub_state: u.systemd.sub_state.clone(),
            main_pid: u.systemd.main_pid,
            cgroup: u.watched_cgroup.clone(),
            cgroup_id: u.cgroup_id,
            restart: u.policy.restart,
            history: u.history.clone(),
            view: u.view.clone(),
        }
    }

    /// Whether this is what `u` would publish now (compared, not copied).
    fn is(&self, u: &MonitoredUnit) -> bool {
        Arc::ptr_eq(&self.history, &u.history)
            && Arc::ptr_eq(&self.view, &u.view)
            && self.name == u.name
            && self.pattern == u.pattern
            && self.exists == u.exists()
            && self.load_state == u.systemd.load_state
            && self.active_state == u.systemd.active_state
            && self.sub_state == u.systemd.sub_state
            && self.main_pid == u.systemd.main_pid
            && self.cgroup == u.watched_cgroup
            && self.cgroup_id == u.cgroup_id
            && self.restart == u.policy.restart
    }
}

impl Snapshot {
    pub fn of(state: &AgentState) -> Self {
        Self::after(state, None)
    }

    /// The state as published after `previous`: a unit whose facts, history and view are the
    /// ones `previous` holds is shared with it, not copied, so publishing 1,000 quiet units
    /// allocates nothing per unit.
    pub fn after(state: &AgentState, previous: Option<&Snapshot>) -> Self {
        let old = previous.map_or(&[][..], |p| p.units.as_slice());
        Self {
            started: state.started,
            bus: state.bus,
            dry_run: state.dry_run,
            http_address: state.http_address.clone(),
            units: state
                .live_units()
                .enumerate()
                .map(|(position, (_, u))| match old.get(position) {
                    Some(published) if published.is(u) => Arc::clone(published),
                    _ => Arc::new(PublishedUnit::of(u)),
                })
                .collect(),
            patterns: state.tables.patterns().map(str::to_owned).collect(),
            hooks: state.hooks.clone(),
            kernel_counters: state.kernel_counters.clone(),
            tracked_tasks: state.tracked_tasks.clone(),
            parts: state.parts.clone(),
        }
    }

    /// Whether `name` is monitored now.
    pub fn monitors(&self, name: &str) -> bool {
        self.units.iter().any(|u| u.name == name)
    }

    /// What health is judged on: each unit's state, problem, escalation, circuit and recovery,
    /// the kernel hooks and the parts of the agent that stopped.
    pub fn health_input(&self) -> HealthInput {
        HealthInput {
            units: self
                .units
                .iter()
                .map(|u| {
                    let policy = u.view.policy.as_ref();
                    UnitHealth {
                        name: u.name.clone(),
                        active_state: if u.exists {
                            u.active_state.clone()
                        } else {
                            "not-found".into()
                        },
                        problem: policy
                            .and_then(|p| p.incident.clone())
                            .or_else(|| u.view.escalated_problem.clone())
                            .or_else(|| {
                                u.view
                                    .stalls
                                    .iter()
                                    .find(|s| s.reported)
                                    .map(|s| s.kind.clone())
                            }),
                        escalated: policy.is_some_and(|p| p.escalated.is_some()),
                        circuit: policy.map(|p| p.circuit).unwrap_or_default(),
                        recovering: policy.is_some_and(|p| p.next_action.is_some()),
                    }
                })
                .collect(),
            hooks: self
                .hooks
                .iter()
                .map(|h| HookHealth {
                    name: h.hook.to_owned(),
                    attached: h.attached,
                    detail: h.detail.clone(),
                })
                .collect(),
            blind: self
                .parts
                .as_ref()
                .map(|p| p.blind())
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.name.to_owned(), p.detail.to_owned()))
                .collect(),
            uptime: self.started.elapsed(),
        }
    }
}

/// The receiving end readers hold.
pub type Snapshots = watch::Receiver<Arc<Snapshot>>;

/// The first snapshot, and the sender [`run`] publishes the next ones through.
pub fn channel(state: &Shared) -> (watch::Sender<Arc<Snapshot>>, Snapshots) {
    watch::channel(Arc::new(Snapshot::of(&state.lock())))
}

/// Publishes a snapshot after every write to the state, writes within [`COALESCE`] of each
/// other together, until shutdown.
pub async fn run(
    state: Shared,
    snapshots: watch::Sender<Arc<Snapshot>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = state.changed() => {}
        }
        tokio::time::sleep(COALESCE).await;
        // Writes that belong together are published together, unless they take so long that
        // status would look stuck.
        let deadline = tokio::time::Instant::now() + HOLD_AT_MOST;
        while state.held() {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = state.released() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let previous = Arc::clone(&snapshots.borrow());
        let snapshot = Snapshot::after(&state.lock(), Some(&previous));
        snapshots.send_replace(Arc::new(snapshot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        daemon::{AgentState, Options},
        units::tables::Tables,
    };

    fn state(text: &str) -> Shared {
        let config = Config::parse(text, "test.toml").expect("config");
        let tables = Tables::new(config.unit_policies());
        let opts = Options {
            config,
            config_path: None,
            bus: Bus::User,
            dry_run: false,
        };
        Shared::new(AgentState::new(&opts, tables, Vec::new()))
    }

    #[tokio::test]
    async fn a_write_is_published_and_a_read_is_not_a_write() {
        let shared = state("[[unit]]\nname = \"a.service\"\n[[unit]]\nname = \"b.service\"\n");
        let (tx, mut snapshots) = channel(&shared);
        assert!(snapshots.borrow().monitors("a.service"));
        assert!(!snapshots.borrow().monitors("c.service"));
        let (stop_tx, stop) = watch::channel(false);
        let publisher = tokio::spawn(run(shared.clone(), tx, stop));

        // Reading the state wakes nobody.
        let _ = shared.lock().live_units().count();
        let quiet = tokio::time::timeout(COALESCE * 5, snapshots.changed()).await;
        assert!(quiet.is_err(), "a read published a snapshot");

        // A write is published, history included, without the reader locking anything.
        let first = snapshots.borrow().clone();
        shared.lock().units[1].record(
            std::time::SystemTime::now(),
            crate::report::history::Event::Unit {
                message: "hello".into(),
            },
        );
        tokio::time::timeout(Duration::from_secs(5), snapshots.changed())
            .await
            .expect("published")
            .expect("sender alive");
        let snapshot = snapshots.borrow().clone();
        assert_eq!(snapshot.units[1].name, "b.service");
        assert_eq!(snapshot.units[1].history.records().count(), 1);
        assert_eq!(snapshot.health_input().units.len(), 2);
        // The unit that did not change is the one published before, not a copy.
        assert!(Arc::ptr_eq(&first.units[0], &snapshot.units[0]));
        assert!(!Arc::ptr_eq(&first.units[1], &snapshot.units[1]));

        // The published history is shared, not copied, until the state writes it again.
        let before = Arc::clone(&snapshot.units[0].history);
        assert!(Arc::ptr_eq(&before, &shared.lock().units[0].history));
        let _ = stop_tx.send(true);
        publisher.await.expect("publisher ends on shutdown");
    }

    #[tokio::test]
    async fn writes_under_a_hold_are_published_together_when_it_drops() {
        let shared = state("[[unit]]\nname = \"a.service\"\n");
        let (tx, mut snapshots) = channel(&shared);
        let (stop_tx, stop) = watch::channel(false);
        let publisher = tokio::spawn(run(shared.clone(), tx, stop));
        let note = |message: &str| {
            shared.lock().units[0].record(
                std::time::SystemTime::now(),
                crate::report::history::Event::Unit {
                    message: message.into(),
                },
            );
        };

        let held = shared.hold();
        note("the decision");
        let early = tokio::time::timeout(COALESCE * 10, snapshots.changed()).await;
        assert!(early.is_err(), "published half of the held writes");
        note("the view");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), snapshots.changed())
            .await
            .expect("published")
            .expect("sender alive");
        assert_eq!(snapshots.borrow().units[0].history.records().count(), 2);
        let _ = stop_tx.send(true);
        publisher.await.expect("publisher ends on shutdown");
    }
}
