//! The engine's periodic work: sample every active unit (scheduler maps, procfs, cgroupfs) off
//! the async threads, run the stall and leak detectors, let the policy act on what is due, and
//! publish views and metrics.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Instant, SystemTime},
};

use super::{engine::Engine, supervisor::Input};
use crate::{
    detect::{
        LeakKind, ProblemKind,
        leak::{LeakConfig, LeakEvent},
        stall::{SchedSample, StallConfig, StallEvent, TaskState},
    },
    policy::UnitPolicyStatus,
    report::metrics::Metrics,
    sensors::{
        resources::{self, SystemdLimits, UnitResources, UnitResourcesInput},
        sched::{SchedSensor, UnitCgroup},
        tcp_tables::TcpTables,
    },
    units::view::{ResourceView, SchedView, StallView, UnitView},
};

/// What sampling a unit needs that stays the same until its cgroup or the config changes:
/// built once, not every pass (see `Engine::sample_specs`).
pub(super) struct SampleSpec {
    name: String,
    /// The cgroup path (relative to the v2 root) `dir` was made from.
    cgroup: String,
    dir: Arc<Path>,
    stall: StallConfig,
    leak: LeakConfig,
}

/// One unit the tick samples.
struct Sampled {
    unit: u32,
    spec: Arc<SampleSpec>,
    main_pid: u32,
    limits: SystemdLimits,
}

/// The units a pass samples, in unit order: built from the unit table when it changed (its
/// [`super::Shared::generation`]), not every pass, so an idle pass does not walk 1,000 units'
/// records to find out that nothing moved.
pub(super) struct SamplePlan {
    generation: u64,
    units: Vec<Sampled>,
    /// The same units, as the scheduler sensor takes them.
    cgroups: Vec<UnitCgroup>,
}

impl SamplePlan {
    fn contains(&self, unit: u32) -> bool {
        self.units.binary_search_by_key(&unit, |s| s.unit).is_ok()
    }
}

/// One sampling pass's readings, handed back by the blocking reader.
pub(super) struct Readings {
    now: Instant,
    plan: Arc<SamplePlan>,
    sched: Option<SchedSensor>,
    cache: Option<resources::ReadingCache>,
    sockets: Option<crate::sensors::ebpf::UnitSockets>,
    unit_exits: Option<crate::sensors::ebpf::UnitExitCounts>,
    /// Every unit's lost exit records since load.
    lost: Vec<(u32, u64)>,
    samples: Vec<(u32, SchedSample)>,
    resources: Vec<(u32, UnitResources)>,
}

impl Engine {
    /// Starts a sampling pass off the async threads; its readings come back as an input of
    /// their own ([`Engine::on_readings`]), so exits never wait behind the reads.
    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        self.p
            .last_tick
            .store(super::now_secs(), std::sync::atomic::Ordering::Relaxed);
        if self.sampling {
            // The last pass is still reading (a slow procfs under load): timers run, the next
            // pass starts when it is done.
            self.feed(Input::Time);
            return;
        }
        let (plan, replanned) = self.sample_plan(now);

        // Blocking reads (bpf map syscalls, procfs, cgroupfs) run off the async threads.
        let mut sched = self.p.sched.take();
        let mut cache = self.reading_cache.take();
        let sockets = self.p.sockets.take();
        // Lost exits are counted for every unit, running or not: a unit whose main exit was
        // lost is no longer running.
        let mut unit_exits = self.p.unit_exits.take();
        let unit_count = self.p.state.lock().units.len() as u32;
        let settled = Arc::clone(&self.settled_views);
        self.sampling = true;
        let readings = self.readings_tx.clone();
        tokio::task::spawn_blocking(move || {
            // Each network namespace's TCP tables, read once for the pass.
            let mut tables = TcpTables::default();
            let samples = sched
                .as_mut()
                .map(|s| s.sample(&plan.cgroups, &settled, now, &mut tables))
                .unwrap_or_default();
            // Not held past the reads: the engine changes the set without copying it.
            drop(settled);
            if let Some(cache) = cache.as_mut().filter(|_| replanned) {
                cache.retain(|unit| plan.contains(unit));
            }
            let still = |unit: u32| sched.as_ref().is_some_and(|s| s.still(unit));
            let resources: Vec<(u32, UnitResources)> = plan
                .units
                .iter()
                .filter(|s| !still(s.unit))
                .map(|s| {
                    let unit = s.unit;
                    let input = UnitResourcesInput {
                        unit,
                        dir: s.spec.dir.clone(),
                        limits: s.limits,
                        live_sockets: sockets.as_ref().and_then(|l| l.live(unit)),
                        socket_inodes: sched.as_ref().and_then(|l| l.socket_inodes(unit)),
                    };
                    let quiet = sched.as_ref().is_some_and(|l| l.quiet(unit));
                    let reading = match cache.as_mut() {
                        Some(cache) => cache.read(&input, quiet, &mut tables),
                        None => resources::read(&input, &mut Default::default(), &mut tables),
                    };
                    (unit, reading)
                })
                .collect();
            let lost = unit_exits
                .as_mut()
                .map(|counts| counts.lost_below(unit_count))
                .unwrap_or_default();
            let _ = readings.blocking_send(Readings {
                now,
                plan,
                sched,
                cache,
                sockets,
                unit_exits,
                lost,
                samples,
                resources,
            });
        });
    }

    /// A sampling pass's readings: the stall and leak detectors run, views are published.
    pub(super) fn on_readings(&mut self, readings: Readings) {
        self.sampling = false;
        // The pass's decisions and its views are published together.
        let _held = self.p.state.hold();
        let Readings {
            now,
            plan,
            sched,
            cache,
            sockets,
            unit_exits,
            lost,
            samples,
            resources,
        } = readings;
        self.reading_cache = cache;
        self.p.unit_exits = unit_exits;
        self.on_lost_counts(lost);
        if let Some(sched) = &sched
            && self.p.state.lock().tracked_tasks != sched.tracked()
        {
            self.p.state.lock().tracked_tasks = sched.tracked().to_vec();
        }
        // What the scheduler sensor found of each unit (nothing without the kernel hooks).
        let is = |test: fn(&SchedSensor, u32) -> bool, unit: u32| {
            sched.as_ref().is_some_and(|s| test(s, unit))
        };

        // By unit: one lookup per unit, not a search of every unit's readings.
        let samples: HashMap<u32, SchedSample> = samples.into_iter().collect();
        let resources: HashMap<u32, UnitResources> = resources.into_iter().collect();
        let mut views: HashMap<u32, UnitView> = HashMap::new();
        // The units the pass sampled (a still one was not); one let go while the pass was
        // reading gets no series back.
        let sampled: Vec<&Sampled> = {
            let state = self.p.state.lock();
            plan.units
                .iter()
                .filter(|s| !is(SchedSensor::still, s.unit) && state.unit(s.unit).is_some())
                .collect()
        };
        for s in sampled {
            if is(SchedSensor::was_still, s.unit) {
                // Nothing of it ran since its last samples: they held until now.
                self.leak.hold(s.unit, now);
            }
            // Frozen, quarantined or being acted on: its stalls are ours, not problems.
            let acted_on =
                self.p.supervisor.policy().isolated(s.unit) || self.p.supervisor.acting(s.unit);
            let mut view = UnitView::default();
            let unchanged = is(SchedSensor::quiet, s.unit);
            if let Some(sample) = samples.get(&s.unit) {
                view.sched = Some(sched_view(sample));
                if let Some(sched) = view.sched.as_ref().filter(|_| !unchanged) {
                    self.p.metrics.set_scheduler(
                        &s.spec.name,
                        sched.oncpu_percent / 100.0,
                        sample.contention.runq_p99.unwrap_or_default(),
                    );
                }
                if acted_on {
                    // Our own action (a restart, say) ends a stall: the policy must hear so.
                    if self.p.supervisor.acting(s.unit) {
                        self.end_reported_stalls(s.unit, now, "the agent acted on the unit");
                    }
                    self.stall.forget(s.unit);
                } else {
                    for event in self.stall.observe(s.unit, &s.spec.stall, sample) {
                        self.on_stall(event);
                    }
                }
            }
            if let Some(res) = resources.get(&s.unit) {
                for sample in res.samples(now) {
                    if acted_on {
                        continue;
                    }
                    match self
                        .leak
                        .observe(s.unit, &s.spec.leak, &sample, SystemTime::now())
                    {
                        Some(LeakEvent::Detected(problem)) => self.raise(problem),
                        Some(LeakEvent::Cleared { unit, kind }) => {
                            self.cleared(unit, &ProblemKind::Leak(kind), "usage stopped growing")
                        }
                        None => {}
                    }
                }
                view.connections = res
                    .connections
                    .iter()
                    .map(|(k, n)| ((*k).into(), *n))
                    .collect();
            }
            for trend in self.leak.trends(s.unit, now) {
                let kind = leak_name(trend.kind);
                let exhaustion = trend.exhaustion_in;
                if !unchanged {
                    self.p.metrics.set_resource(
                        &s.spec.name,
                        kind,
                        trend.value,
                        trend.limit,
                        exhaustion,
                    );
                }
                view.resources.push(ResourceView {
                    kind: kind.into(),
                    value: trend.value,
                    limit: trend.limit,
                    shape: trend.shape.name().into(),
                    slope_per_minute: trend.slope_per_minute,
                    exhaustion_in_seconds: exhaustion.map(|d| d.as_secs_f64()),
                    reported: trend.reported,
                });
            }
            views.insert(s.unit, view);
        }

        self.p.sched = sched;
        self.p.sockets = sockets;
        self.feed(Input::Time);
        self.publish(now, views);
    }

    /// The units to sample — active, with a cgroup — and whether the plan was made anew (the
    /// unit table changed since the last one).
    fn sample_plan(&mut self, now: Instant) -> (Arc<SamplePlan>, bool) {
        // Read before the table: a write in between makes the next pass plan again.
        let generation = self.p.state.generation();
        if let Some(plan) = self.plan.as_ref().filter(|p| p.generation == generation) {
            return (Arc::clone(plan), false);
        }
        let units = self.units_to_sample(now);
        let plan = Arc::new(SamplePlan {
            generation,
            cgroups: units
                .iter()
                .map(|s| UnitCgroup {
                    unit: s.unit,
                    dir: s.spec.dir.clone(),
                    main_pid: (s.main_pid != 0).then_some(s.main_pid),
                })
                .collect(),
            units,
        });
        self.plan = Some(Arc::clone(&plan));
        (plan, true)
    }

    /// Active units with a cgroup, in unit order.
    fn units_to_sample(&mut self, now: Instant) -> Vec<Sampled> {
        let (mut started, mut first_seen) = (Vec::new(), Vec::new());
        let sampled: Vec<Sampled> = {
            let state = self.p.state.lock();
            state
                .units
                .iter()
                .enumerate()
                .filter(|(_, u)| {
                    !u.retired
                        && u.exists()
                        && matches!(u.systemd.active_state.as_str(), "active" | "reloading")
                })
                .filter_map(|(i, u)| {
                    let cgroup = u.watched_cgroup.as_ref()?;
                    let unit = i as u32;
                    let pid = u.systemd.main_pid;
                    // Only a main pid that replaces another one is a new incarnation. The first
                    // one the tracker learns (it may learn it a tick after the unit turned
                    // active: ActiveState and MainPID come in separate signals) belongs to the
                    // incarnation already being sampled, whose runs must not be dropped.
                    if pid != 0 {
                        match self.main_pids.insert(unit, pid) {
                            Some(old) if old == pid => {}
                            Some(_) => started.push(unit),
                            None => first_seen.push(unit),
                        }
                    }
                    let spec = match self.sample_specs.get(&unit) {
                        Some(spec) if spec.cgroup == *cgroup => spec.clone(),
                        _ => {
                            let spec = Arc::new(SampleSpec {
                                name: u.name.clone(),
                                cgroup: cgroup.clone(),
                                dir: self.p.v2_root.join(cgroup.trim_start_matches('/')).into(),
                                stall: u.policy.stall.clone(),
                                leak: u.policy.leak.clone(),
                            });
                            self.sample_specs.insert(unit, spec.clone());
                            spec
                        }
                    };
                    Some(Sampled {
                        unit,
                        spec,
                        main_pid: u.systemd.main_pid,
                        limits: SystemdLimits {
                            memory_max: u.systemd.memory_max,
                            memory_high: u.systemd.memory_high,
                            tasks_max: u.systemd.tasks_max,
                        },
                    })
                })
                .collect()
        };
        for unit in first_seen {
            self.sync_facts(unit);
        }
        // A new main process: a (re)start. Probes get their grace period; stalls and leaks of
        // the previous incarnation are forgotten.
        for unit in started {
            // The supervisor starts the probes' grace period when it learns the new main pid.
            self.sync_facts(unit);
            self.end_reported_stalls(unit, now, "the unit restarted");
            self.stall.forget(unit);
            let leaks: Vec<LeakKind> = self
                .leak
                .trends(unit, now)
                .into_iter()
                .filter(|trend| trend.reported)
                .map(|trend| trend.kind)
                .collect();
            for kind in leaks {
                self.cleared(unit, &ProblemKind::Leak(kind), "the unit restarted");
            }
            self.leak.forget(unit);
        }
        sampled
    }

    /// Ends the unit's reported stalls before the detector forgets them (their processes are
    /// gone or going). Forgotten silently, the policy would take the healed unit for a failed
    /// recovery once `recovery_timeout` passed (and restart it again), and the stall gauge
    /// would stay up.
    fn end_reported_stalls(&mut self, unit: u32, now: Instant, why: &str) {
        let reported: Vec<_> = self
            .stall
            .in_progress(unit, now)
            .into_iter()
            .filter(|stall| stall.reported)
            .collect();
        for stall in reported {
            if let Some(name) = self.unit_name(unit) {
                self.p.metrics.clear_stall(&name, stall.kind);
            }
            let evidence = format!("{why}, {:.0?} into the stall", stall.age);
            self.cleared(unit, &ProblemKind::Stall(stall.kind), &evidence);
        }
    }

    fn on_stall(&mut self, event: StallEvent) {
        match event {
            StallEvent::Detected(problem) => self.raise(problem),
            StallEvent::Cleared { unit, kind, lasted } => {
                if let Some(name) = self.unit_name(unit) {
                    self.p.metrics.clear_stall(&name, kind);
                }
                self.cleared(
                    unit,
                    &ProblemKind::Stall(kind),
                    &format!("activity resumed after {lasted:.0?}"),
                );
            }
        }
    }

    /// Publishes each unit's view (status, health) and the gauges that follow from it. A still
    /// unit whose view is settled keeps it: nothing in it can have changed.
    fn publish(&mut self, now: Instant, mut views: HashMap<u32, UnitView>) {
        if let Some(counters) = self.p.state.lock().kernel_counters.as_ref() {
            self.p.metrics.set_kernel_counters(&counters.snapshot());
        }
        let count = self.p.state.lock().units.len() as u32;
        for unit in 0..count {
            let still = self.p.sched.as_ref().is_some_and(|s| s.still(unit));
            if still && self.settled_views.contains(&unit) {
                continue;
            }
            let mut view = match views.remove(&unit) {
                Some(view) => view,
                // Named by an input since the pass began: its readings stand, the rest is
                // rebuilt.
                None if still => self
                    .p
                    .state
                    .lock()
                    .unit(unit)
                    .map(|u| (*u.view).clone())
                    .unwrap_or_default(),
                None => UnitView::default(),
            };
            let policy = self.policy_status(unit, now);
            view.stalls = self
                .stall
                .in_progress(unit, now)
                .into_iter()
                .map(|s| StallView {
                    kind: ProblemKind::Stall(s.kind).name().to_owned(),
                    age_seconds: s.age.as_secs_f64(),
                    reported: s.reported,
                })
                .collect();
            view.probes = self
                .p
                .supervisor
                .probes()
                .probe_status(unit)
                .into_iter()
                .filter_map(|p| serde_json::to_value(p).ok())
                .collect();
            let mut state = self.p.state.lock();
            // Read first: a view that did not change is not written, so a quiet unit is not
            // published again.
            let Some(u) = state.unit(unit) else {
                continue;
            };
            let name = u.name.clone();
            let healthy = u.systemd.active_state == "active"
                && view.stalls.iter().all(|s| !s.reported)
                && policy
                    .as_ref()
                    .is_none_or(|p| p.escalated.is_none() && p.incident.is_none());
            // Set only when they change: 1,000 units would otherwise cost 3,000 label lookups
            // a tick to say the same thing again.
            let gauges = UnitGauges {
                failures: policy.as_ref().map(|p| p.consecutive_failures),
                circuit: policy.as_ref().map(|p| p.circuit),
                healthy,
            };
            if self.gauges.insert(unit, gauges) != Some(gauges) {
                if let Some(p) = &policy {
                    self.p
                        .metrics
                        .set_consecutive_failures(&name, p.consecutive_failures);
                    self.p.metrics.set_circuit(&name, p.circuit);
                }
                self.p.metrics.set_unit_healthy(&name, healthy);
            }
            for stall in self.stall.in_progress(unit, now) {
                if stall.reported {
                    self.p.metrics.set_stall(&name, stall.kind, stall.age);
                }
            }
            track_recovery(
                &mut self.incidents,
                &self.p.metrics,
                (unit, &name),
                policy.as_ref(),
                healthy,
                now,
            );
            view.escalated_problem = policy.as_ref().and_then(|p| p.escalated_problem.clone());
            view.policy = policy;
            // A resource not judged yet may settle too: the time its unit stays still is held
            // at its value and judged at its next sample (`LeakDetector::hold`).
            let settled = view.sched.is_some()
                && view.stalls.is_empty()
                && view.probes.is_empty()
                && u.policy.probes.is_empty()
                && !self.incidents.contains_key(&unit)
                && !self.leak.open(unit)
                && self.p.supervisor.policy().settled(unit, now);
            if settled != self.settled_views.contains(&unit) {
                let views = Arc::make_mut(&mut self.settled_views);
                if settled {
                    views.insert(unit);
                } else {
                    views.remove(&unit);
                }
            }
            if *u.view != view
                && let Some(u) = state.unit_mut(unit)
            {
                u.view = std::sync::Arc::new(view);
            }
        }
    }
}

/// The per-unit gauges [`Engine::publish`] last set.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct UnitGauges {
    failures: Option<u32>,
    circuit: Option<crate::policy::CircuitState>,
    healthy: bool,
}

/// An incident that ended with the unit healthy is a recovery, timed from the problem's
/// detection (`incidents` holds when each open one began). One handed to an operator or merely
/// contained (frozen, quarantined) is not.
fn track_recovery(
    incidents: &mut HashMap<u32, Instant>,
    metrics: &Metrics,
    (unit, name): (u32, &str),
    policy: Option<&UnitPolicyStatus>,
    healthy: bool,
    now: Instant,
) {
    let Some(policy) = policy else { return };
    if policy.escalated.is_some() {
        incidents.remove(&unit);
    } else if policy.incident.is_some() {
        // Opened without a problem of ours to time it from (a held one admitted later).
        incidents.entry(unit).or_insert(now);
    } else if let Some(since) = incidents.remove(&unit)
        && healthy
        && !policy.frozen
        && !policy.quarantined
    {
        metrics.recovered(name, now.saturating_duration_since(since));
    }
}

fn leak_name(kind: LeakKind) -> &'static str {
    match kind {
        LeakKind::Fd => "fd",
        LeakKind::Socket => "socket",
        LeakKind::Connection => "connection",
        LeakKind::Thread => "thread",
        LeakKind::Memory => "memory",
    }
}

fn sched_view(sample: &SchedSample) -> SchedView {
    let window = sample.window.as_secs_f64().max(1e-3);
    let oncpu: f64 = sample.tasks.iter().map(|t| t.on_cpu.as_secs_f64()).sum();
    let mut states: Vec<(std::borrow::Cow<'static, str>, usize)> = Vec::new();
    for task in &sample.tasks {
        let name = match task.state {
            TaskState::Running => "running",
            TaskState::Runnable => "runnable",
            TaskState::Sleeping => "sleeping",
            TaskState::DiskSleep => "disk_sleep",
            TaskState::Stopped => "stopped",
            TaskState::Traced => "traced",
        };
        match states.iter_mut().find(|(n, _)| n == name) {
            Some((_, n)) => *n += 1,
            None => states.push((name.into(), 1)),
        }
    }
    SchedView {
        oncpu_percent: 100.0 * oncpu / window,
        runq_p99_ms: sample.contention.runq_p99.map(|d| d.as_secs_f64() * 1000.0),
        psi_cpu_some_avg10: sample.contention.psi_some_avg10,
        nr_throttled: sample.contention.nr_throttled,
        tasks: sample.tasks.len(),
        states,
        idle_seconds: None,
        idle_since_ns: sample.idle_since_ns,
    }
}
