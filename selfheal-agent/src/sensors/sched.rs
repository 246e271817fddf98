//! Turns the kernel's scheduler maps plus procfs and cgroupfs into one [`SchedSample`] per
//! unit per tick: task states and how long they have held them, CPU time and context switches
//! over the window, how long the unit has been off-CPU, work waiting in its sockets, and CPU
//! contention (run-queue p99, PSI, throttling).

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use selfheal_common::sched::{
    RUNQ_BUCKETS, TASK_INTERRUPTIBLE, TASK_NOLOAD, TASK_RUNNING, TASK_STOPPED, TASK_TRACED,
    TASK_UNINTERRUPTIBLE, TaskStat, UnitSched,
};

use super::{
    cgroup_stats,
    cgroup_v1::V1Dirs,
    ebpf::{PerCpuRead, SchedMaps, UnitAggregate, UnitTable, monotonic_ns},
    procfs, sockets,
    tcp_tables::TcpTables,
};
use crate::detect::stall::{CpuContention, SchedSample, TaskSample, TaskState};

/// `__TASK_STOPPED`: set alone or with TASK_WAKEKILL.
const STOPPED_BIT: u32 = TASK_STOPPED;
/// Frozen by the cgroup freezer (6.1+): reported as stopped.
const FROZEN_BIT: u32 = 0x8000;

/// A unit to sample: its index and its cgroup directory on the v2 tree.
#[derive(Clone, Debug)]
pub struct UnitCgroup {
    pub unit: u32,
    pub dir: Arc<Path>,
    pub main_pid: Option<u32>,
}

#[derive(Clone, Copy, Default)]
struct Totals {
    oncpu_ns: u64,
    run_delay_ns: u64,
    voluntary: u64,
    involuntary: u64,
}

pub struct SchedSensor {
    maps: SchedMaps,
    last_at: Option<Instant>,
    prev_tasks: HashMap<u32, Totals>,
    prev_hist: HashMap<u32, [u64; RUNQ_BUCKETS]>,
    prev_throttle: HashMap<u32, (u64, u64)>,
    prev_pending: HashMap<u32, sockets::QueueReading>,
    /// When the agent first sampled each unit: the floor for "idle since".
    watched_since_ns: HashMap<u32, u64>,
    /// Thread ids in the kernel map at the last sample.
    tracked: Vec<u32>,
    /// Threads seeded from procfs because the kernel had not tagged them: each asks for one
    /// task walk, not one per tick.
    seeded: HashSet<u32>,
    /// Each unit's kernel aggregate `last_ran_ns` at the last pass.
    last_ran: HashMap<u32, u64>,
    /// Units found quiet at the last pass (see [`Self::quiet`]).
    quiet: HashSet<u32>,
    /// The quiet units left unsampled at the last pass (see [`Self::still`]).
    still: HashSet<u32>,
    /// Those of the pass before (see [`Self::was_still`]).
    was_still: HashSet<u32>,
    /// The units (and their main processes) the last pass sampled.
    members: Vec<(u32, Option<u32>)>,
    /// The last batch read of the per-unit aggregates, its pages reused by the next.
    unit_read: PerCpuRead<UnitSched>,
    /// Socket inodes each unit's processes held at its last full read (shared with the
    /// pass's resource read, see [`Self::socket_inodes`]).
    inodes: HashMap<u32, Arc<HashSet<u64>>>,
    /// Each unit's CPU PSI at its last full read.
    psi: HashMap<u32, Option<f64>>,
    /// The units' main processes' v1 cpu cgroups (hybrid hosts).
    v1: V1Dirs,
    /// Passes so far: staggers the full reads of quiet units.
    pass: u64,
    /// Whether the scheduler hook is attached: without it `last_ran_ns` never moves, and no
    /// unit may be taken for quiet on its word.
    switches_seen: bool,
}

/// A quiet unit is still read in full once every this many passes (its share of the reads
/// staggered across passes by unit number), so what changes without its tasks running (a
/// peer closing a connection, PSI decaying, a limit written to cgroupfs by hand) is at most
/// this stale: a minute at the default 1 s tick. Nothing a leak or a stall is made of changes
/// that way: fds, threads, heap and accepted connections only grow when the unit's own tasks
/// run, and a task moved into its cgroup is tagged by the kernel's `cgroup_attach_task` hook.
pub const REFRESH_PASSES: u64 = 60;

/// Whether `unit` is read in full at pass `pass` even when quiet.
pub fn refresh_due(pass: u64, unit: u32) -> bool {
    (pass + u64::from(unit)).is_multiple_of(REFRESH_PASSES)
}

impl SchedSensor {
    /// `switches_seen`: the `sched_switch` hook is attached (see [`Self::quiet`]).
    pub fn new(maps: SchedMaps, switches_seen: bool) -> Self {
        Self {
            maps,
            last_at: None,
            prev_tasks: HashMap::new(),
            prev_hist: HashMap::new(),
            prev_throttle: HashMap::new(),
            prev_pending: HashMap::new(),
            watched_since_ns: HashMap::new(),
            tracked: Vec::new(),
            seeded: HashSet::new(),
            last_ran: HashMap::new(),
            quiet: HashSet::new(),
            still: HashSet::new(),
            was_still: HashSet::new(),
            members: Vec::new(),
            unit_read: PerCpuRead::default(),
            inodes: HashMap::new(),
            psi: HashMap::new(),
            v1: V1Dirs::default(),
            pass: 0,
            switches_seen,
        }
    }

    /// Whether none of the unit's tasks ran or could run since the pass before the last one:
    /// none was on a CPU (the kernel's per-unit `last_ran_ns` did not move) and every one is
    /// asleep or stopped. Such a unit cannot have forked, opened an fd, grown its heap or
    /// been throttled, so its procfs and cgroupfs readings are reused rather than read again.
    /// Never quiet without the `sched_switch` hook, whose runs are what moves `last_ran_ns`.
    pub fn quiet(&self, unit: u32) -> bool {
        self.quiet.contains(&unit)
    }

    /// Whether the last pass left the unit unsampled: quiet, every task asleep (a stopped one
    /// must be timed), no socket held (nothing can wait unread in it), and settled by its
    /// caller. Nothing that the detectors judge can have changed since its last sample, so
    /// none is made: its readings, judgements and view stand until it moves or its full read
    /// is due.
    pub fn still(&self, unit: u32) -> bool {
        self.still.contains(&unit)
    }

    /// Whether the pass before the last one left the unit unsampled (and the last did not):
    /// nothing of it ran in between, so what it was sampled as then held until now.
    pub fn was_still(&self, unit: u32) -> bool {
        self.was_still.contains(&unit) && !self.still.contains(&unit)
    }

    /// The socket inodes the unit's processes held at the last pass that read them (this pass
    /// unless it was quiet: then they are the ones it still holds), for the resource read of
    /// the same pass not to list every process's fds again.
    pub fn socket_inodes(&self, unit: u32) -> Option<Arc<HashSet<u64>>> {
        self.inodes.get(&unit).cloned()
    }

    /// Thread ids in the kernel's map at the start of the last sample.
    pub fn tracked(&self) -> &[u32] {
        &self.tracked
    }

    /// `settled`: the units nothing about which is in progress (no stall, leak, incident or
    /// timer): a still one among them need not be sampled at all. `tables`: the pass's TCP
    /// tables, shared with the resource reads.
    pub fn sample(
        &mut self,
        units: &[UnitCgroup],
        settled: &HashSet<u32>,
        now: Instant,
        tables: &mut TcpTables,
    ) -> Vec<(u32, SchedSample)> {
        let now_ns = monotonic_ns();
        let window = self.last_at.map_or(Duration::from_secs(1), |last| {
            now.saturating_duration_since(last)
        });
        self.last_at = Some(now);

        // Sorted by unit, then thread: a unit's tasks are a slice of it, found by binary
        // search, with nothing allocated per unit.
        let mut tracked: Vec<(u32, TaskStat)> = self.maps.tasks();
        tracked.sort_unstable_by_key(|(tid, stat)| (stat.unit, *tid));
        // What the kernel itself put in the map, before we seed or prune anything.
        self.tracked.clear();
        self.tracked.extend(tracked.iter().map(|(tid, _)| *tid));
        self.tracked.sort_unstable();
        self.pass += 1;
        self.follow(units, now_ns);
        // The aggregates in one read of the kernel's array, up to the highest unit number (at
        // most 1,024 entries of a few hundred bytes: less than the syscalls of a lookup each),
        // into the pages of the last pass's read.
        let batched = units
            .iter()
            .map(|u| u.unit)
            .max()
            .is_some_and(|highest| self.maps.read_units(highest + 1, &mut self.unit_read));
        let last_ran: Vec<u64> = {
            let table = UnitTable {
                maps: &self.maps,
                read: batched.then_some(&self.unit_read),
            };
            units.iter().map(|u| table.last_ran_ns(u.unit)).collect()
        };
        std::mem::swap(&mut self.was_still, &mut self.still);
        self.quiet.clear();
        self.still.clear();
        let mut alive: Vec<u32> = Vec::with_capacity(tracked.len());
        let mut seeded_now: Vec<(u32, TaskStat)> = Vec::new();
        let mut untagged = false;
        for (unit, last_ran) in units.iter().zip(last_ran) {
            let ran = self.last_ran.insert(unit.unit, last_ran) != Some(last_ran);
            let tasks = tasks_of(&tracked, unit.unit);
            if self.switches_seen
                && !ran
                && !tasks.is_empty()
                && tasks.iter().all(|(_, stat)| resting(stat))
                && !refresh_due(self.pass, unit.unit)
            {
                // No task of its can have forked or left: the kernel's list is the list.
                self.quiet.insert(unit.unit);
                if settled.contains(&unit.unit)
                    && self.inodes.get(&unit.unit).is_some_and(|i| i.is_empty())
                    && tasks
                        .iter()
                        .all(|(_, stat)| task_state(stat) == TaskState::Sleeping)
                {
                    self.still.insert(unit.unit);
                }
                alive.extend(tasks.iter().map(|(tid, _)| *tid));
                continue;
            }
            for tid in procfs::threads_in_tree(&unit.dir) {
                alive.push(tid);
                if tasks.binary_search_by_key(&tid, |(t, _)| *t).is_ok() {
                    continue;
                }
                // Not tagged in the kernel yet (or not switched since): its state from /proc
                // until the scheduler hook takes over.
                untagged |= self.seeded.insert(tid);
                if let Some(stat) = seed_stat(tid, unit.unit, now_ns) {
                    let _ = self.maps.seed(tid, &stat);
                    // What it used before it was seen is not the window's: its first sample
                    // counts from here (else a task asleep for hours would show the CPU of its
                    // whole life in its first view).
                    self.prev_tasks.entry(tid).or_insert(Totals {
                        oncpu_ns: stat.oncpu_ns,
                        run_delay_ns: stat.run_delay_ns,
                        voluntary: stat.voluntary,
                        involuntary: stat.involuntary,
                    });
                    seeded_now.push((tid, stat));
                }
            }
        }
        if untagged {
            self.maps.tag_untracked();
        }
        alive.sort_unstable();
        alive.dedup();
        let is_alive = |tid: u32| alive.binary_search(&tid).is_ok();
        self.seeded.retain(|tid| is_alive(*tid));
        // Tasks that left every monitored cgroup, or whose exit we did not see.
        for (tid, _) in tracked.iter().filter(|(tid, _)| !is_alive(*tid)) {
            self.maps.forget(*tid);
            self.prev_tasks.remove(tid);
        }
        tracked.retain(|(tid, _)| is_alive(*tid));
        if !seeded_now.is_empty() {
            // A seeded task replaces what the map said of it (under another unit's cgroup).
            let mut seeded: Vec<u32> = seeded_now.iter().map(|(tid, _)| *tid).collect();
            seeded.sort_unstable();
            tracked.retain(|(tid, _)| seeded.binary_search(tid).is_err());
            tracked.extend(seeded_now);
            tracked.sort_unstable_by_key(|(tid, stat)| (stat.unit, *tid));
        }

        let wanted: Vec<(&UnitCgroup, UnitAggregate)> = {
            let table = UnitTable {
                maps: &self.maps,
                read: batched.then_some(&self.unit_read),
            };
            units
                .iter()
                .filter(|unit| !self.still.contains(&unit.unit))
                .map(|unit| (unit, table.aggregate(unit.unit)))
                .collect()
        };
        wanted
            .into_iter()
            .map(|(unit, aggregate)| {
                let tasks = tasks_of(&tracked, unit.unit);
                (
                    unit.unit,
                    self.unit_sample(unit, tasks, aggregate, (now, now_ns, window), tables),
                )
            })
            .collect()
    }

    /// Keeps per-unit state for the units sampled now only, and starts timing new ones; the
    /// work of a pass whose units (and main processes) are the last pass's is a comparison.
    fn follow(&mut self, units: &[UnitCgroup], now_ns: u64) {
        if units
            .iter()
            .map(|u| (u.unit, u.main_pid))
            .eq(self.members.iter().copied())
        {
            return;
        }
        self.members = units.iter().map(|u| (u.unit, u.main_pid)).collect();
        let sampled: HashSet<u32> = units.iter().map(|u| u.unit).collect();
        self.last_ran.retain(|u, _| sampled.contains(u));
        self.inodes.retain(|u, _| sampled.contains(u));
        self.psi.retain(|u, _| sampled.contains(u));
        let main_pids: HashSet<u32> = units.iter().filter_map(|u| u.main_pid).collect();
        self.v1.retain(|pid| main_pids.contains(&pid));
        for unit in units {
            self.watched_since_ns.entry(unit.unit).or_insert(now_ns);
        }
    }

    fn unit_sample(
        &mut self,
        unit: &UnitCgroup,
        tasks: &[(u32, TaskStat)],
        aggregate: UnitAggregate,
        (now, now_ns, window): (Instant, u64, Duration),
        tables: &mut TcpTables,
    ) -> SchedSample {
        let quiet = self.quiet(unit.unit);
        let window_ns = window.as_nanos() as u64;
        let mut samples = Vec::with_capacity(tasks.len());
        for (tid, stat) in tasks {
            let running_for = if stat.on_cpu != 0 {
                now_ns.saturating_sub(stat.since_ns)
            } else {
                0
            };
            let totals = Totals {
                oncpu_ns: stat.oncpu_ns + running_for,
                run_delay_ns: stat.run_delay_ns,
                voluntary: stat.voluntary,
                involuntary: stat.involuntary,
            };
            let prev = self.prev_tasks.insert(*tid, totals);
            let delta = |now: u64, before: Option<u64>| before.map_or(0, |b| now.saturating_sub(b));
            let on_cpu_ns = match prev {
                Some(p) => totals.oncpu_ns.saturating_sub(p.oncpu_ns),
                // First seen off a CPU since before the window: it ran before it, not in it
                // (else its first view would show CPU it used long ago, and change for no
                // reason at its next sample).
                None if stat.on_cpu == 0 && now_ns.saturating_sub(stat.since_ns) >= window_ns => 0,
                None => totals.oncpu_ns.min(window_ns),
            };
            let run_delay_ns =
                prev.map_or(0, |p| totals.run_delay_ns.saturating_sub(p.run_delay_ns));
            let state = task_state(stat);
            let voluntary = delta(totals.voluntary, prev.map(|p| p.voluntary));
            // Any task the detector may name needs its comm. A task that ran without blocking
            // may be spinning at whatever share the unit's `spinning_cpu_percent` asks, which
            // the sensor does not know.
            let interesting = matches!(
                state,
                TaskState::DiskSleep | TaskState::Stopped | TaskState::Traced
            ) || on_cpu_ns * 2 > window_ns
                || (voluntary == 0 && on_cpu_ns > 0);
            let hung = state == TaskState::DiskSleep;
            samples.push(TaskSample {
                pid: *tid,
                tgid: stat.tgid,
                comm: if interesting {
                    procfs::comm(*tid).unwrap_or_default()
                } else {
                    String::new()
                },
                state,
                state_for: Duration::from_nanos(now_ns.saturating_sub(stat.since_ns)),
                on_cpu: Duration::from_nanos(on_cpu_ns),
                run_delay: Duration::from_nanos(run_delay_ns),
                voluntary_switches: voluntary,
                involuntary_switches: delta(totals.involuntary, prev.map(|p| p.involuntary)),
                wchan: if hung { procfs::wchan(*tid) } else { None },
                kernel_stack: if hung {
                    procfs::kernel_stack(*tid)
                } else {
                    None
                },
            });
        }

        let any_on_cpu = tasks.iter().any(|(_, t)| t.on_cpu != 0);
        let floor = self
            .watched_since_ns
            .get(&unit.unit)
            .copied()
            .unwrap_or(now_ns);
        let last_ran = aggregate.last_ran_ns.max(floor);
        let idle_ns = now_ns.saturating_sub(last_ran);
        let idle_for = (!any_on_cpu && idle_ns >= window_ns).then(|| Duration::from_nanos(idle_ns));

        // Read every tick, running or not: a unit is wedged when requests wait unread in its
        // accepted connections even while an acceptor or a timer thread still runs. A quiet
        // unit holds the sockets it held (only its tasks open or close them): no socket, no
        // read.
        let pending = {
            let tgid = tasks.iter().map(|(_, t)| t.tgid).min();
            let inodes = match self.inodes.get(&unit.unit) {
                Some(inodes) if quiet => inodes,
                _ => {
                    let mut tgids: Vec<u32> = tasks.iter().map(|(_, t)| t.tgid).collect();
                    tgids.sort_unstable();
                    tgids.dedup();
                    self.inodes
                        .entry(unit.unit)
                        .insert_entry(Arc::new(sockets::socket_inodes(&tgids)))
                        .into_mut()
                }
            };
            let table = match (inodes.is_empty(), tgid) {
                (false, Some(tgid)) => tables.of(tgid),
                _ => None,
            };
            let reading = sockets::QueueReading::of(table, inodes);
            let work = reading.work(self.prev_pending.get(&unit.unit));
            self.prev_pending.insert(unit.unit, reading);
            work
        };

        let hist_delta = {
            let prev = self.prev_hist.insert(unit.unit, aggregate.runq_hist);
            let mut d = aggregate.runq_hist;
            if let Some(prev) = prev {
                for (d, p) in d.iter_mut().zip(prev.iter()) {
                    *d = d.saturating_sub(*p);
                }
            }
            d
        };
        // A quiet unit was not throttled (nothing of it ran) and its PSI only decays.
        let throttle = if quiet {
            self.prev_throttle.get(&unit.unit).copied()
        } else {
            cgroup_stats::cpu_throttling(&unit.dir, unit.main_pid, &mut self.v1)
        };
        let (nr_throttled, throttled_ns) = match (throttle, self.prev_throttle.get(&unit.unit)) {
            (Some(now), Some(before)) => (
                now.0.saturating_sub(before.0),
                now.1.saturating_sub(before.1),
            ),
            _ => (0, 0),
        };
        if let Some(t) = throttle {
            self.prev_throttle.insert(unit.unit, t);
        }
        let psi = match self.psi.get(&unit.unit) {
            Some(psi) if quiet => *psi,
            _ => {
                let psi = cgroup_stats::psi_some_avg10(&unit.dir, "cpu");
                self.psi.insert(unit.unit, psi);
                psi
            }
        };

        SchedSample {
            at: now,
            window,
            tasks: samples,
            idle_for,
            // Set as soon as no task is on a CPU: a still unit's view is not rebuilt, and must
            // become idle by itself when it is read (`UnitView::read_at`).
            idle_since_ns: (!any_on_cpu).then_some(last_ran),
            pending,
            contention: CpuContention {
                runq_p99: runq_percentile(&hist_delta, 0.99),
                psi_some_avg10: psi,
                nr_throttled,
                throttled_time: Duration::from_nanos(throttled_ns),
            },
        }
    }
}

/// The tasks of `unit` in `tracked` (sorted by unit, then thread id).
fn tasks_of(tracked: &[(u32, TaskStat)], unit: u32) -> &[(u32, TaskStat)] {
    let start = tracked.partition_point(|(_, stat)| stat.unit < unit);
    let end = start + tracked[start..].partition_point(|(_, stat)| stat.unit == unit);
    &tracked[start..end]
}

/// Asleep or stopped: a task in this state runs nothing until something wakes it.
fn resting(stat: &TaskStat) -> bool {
    matches!(
        task_state(stat),
        TaskState::Sleeping | TaskState::Stopped | TaskState::Traced
    )
}

fn task_state(stat: &TaskStat) -> TaskState {
    let s = stat.state;
    if stat.on_cpu != 0 {
        TaskState::Running
    } else if s == TASK_RUNNING {
        TaskState::Runnable
    } else if s & (STOPPED_BIT | FROZEN_BIT) != 0 {
        TaskState::Stopped
    } else if s & TASK_TRACED != 0 {
        TaskState::Traced
    } else if s & TASK_UNINTERRUPTIBLE != 0 && s & TASK_NOLOAD == 0 {
        TaskState::DiskSleep
    } else {
        TaskState::Sleeping
    }
}

/// A task found in a unit's cgroup that the probes have not tracked yet, with its state as
/// /proc reports it and the kernel's own CPU and run-queue totals, so that the first switch the
/// probe sees adds only what happened since. Its time in that state counts from now.
fn seed_stat(tid: u32, unit: u32, now_ns: u64) -> Option<TaskStat> {
    let line = procfs::task_stat(tid)?;
    let (exec_ns, run_delay_ns) = schedstat(tid).unwrap_or_default();
    let (state, on_cpu) = match line.state {
        'R' => (TASK_RUNNING, 1),
        'D' => (TASK_UNINTERRUPTIBLE, 0),
        'T' => (TASK_STOPPED, 0),
        't' => (TASK_TRACED, 0),
        'Z' | 'X' => return None,
        _ => (TASK_INTERRUPTIBLE, 0),
    };
    Some(TaskStat {
        tgid: line.tgid,
        unit,
        state,
        on_cpu,
        since_ns: now_ns,
        oncpu_ns: exec_ns,
        run_delay_ns,
        ..TaskStat::default()
    })
}

/// `/proc/TID/schedstat`: `se.sum_exec_runtime`, `sched_info.run_delay` (ns) and timeslices,
/// the very fields the scheduler hook reads at switch-out.
fn schedstat(tid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).ok()?;
    parse_schedstat(&text)
}

fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// Upper bound of the bucket holding the `q` quantile of run-queue waits (bucket i holds waits
/// in [2^i, 2^(i+1)) µs); None without waits.
fn runq_percentile(hist: &[u64; RUNQ_BUCKETS], q: f64) -> Option<Duration> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (i, count) in hist.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(Duration::from_micros(1 << (i + 1)));
        }
    }
    Some(Duration::from_micros(1 << RUNQ_BUCKETS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runq_p99_is_the_upper_bound_of_the_bucket_holding_the_99th_percentile() {
        let mut hist = [0u64; RUNQ_BUCKETS];
        hist[3] = 98; // 8–16 µs
        hist[10] = 2; // 1–2 ms
        assert_eq!(
            runq_percentile(&hist, 0.99),
            Some(Duration::from_micros(2048))
        );
        assert_eq!(runq_percentile(&hist, 0.5), Some(Duration::from_micros(16)));
        assert_eq!(runq_percentile(&[0; RUNQ_BUCKETS], 0.99), None);
    }

    #[test]
    fn every_unit_is_read_in_full_once_per_refresh_period_and_units_are_staggered() {
        for unit in [0, 7, 1000] {
            let full = (1..=REFRESH_PASSES)
                .filter(|pass| refresh_due(*pass, unit))
                .count();
            assert_eq!(full, 1, "unit {unit}");
        }
        let due_at_once = (0..300).filter(|unit| refresh_due(5, *unit)).count();
        assert_eq!(due_at_once as u64, 300 / REFRESH_PASSES);
    }

    #[test]
    fn only_asleep_or_stopped_tasks_are_resting() {
        let stat = |state, on_cpu| TaskStat {
            state,
            on_cpu,
            ..TaskStat::default()
        };
        assert!(resting(&stat(TASK_INTERRUPTIBLE, 0)));
        assert!(resting(&stat(TASK_STOPPED, 0)));
        assert!(
            !resting(&stat(TASK_RUNNING, 0)),
            "runnable: it may be starved"
        );
        assert!(!resting(&stat(TASK_RUNNING, 1)));
        assert!(
            !resting(&stat(TASK_UNINTERRUPTIBLE, 0)),
            "D: it may be hung"
        );
    }

    #[test]
    fn a_units_tasks_are_its_slice_of_the_tasks_sorted_by_unit() {
        let task = |tid: u32, unit: u32| {
            (
                tid,
                TaskStat {
                    unit,
                    ..TaskStat::default()
                },
            )
        };
        let mut tracked = vec![task(9, 2), task(4, 0), task(7, 2), task(5, 3), task(1, 2)];
        tracked.sort_unstable_by_key(|(tid, stat)| (stat.unit, *tid));
        let tids = |unit| -> Vec<u32> {
            tasks_of(&tracked, unit)
                .iter()
                .map(|(tid, _)| *tid)
                .collect()
        };
        assert_eq!(tids(2), [1, 7, 9]);
        assert_eq!(tids(0), [4]);
        assert_eq!(tids(3), [5]);
        assert!(tids(1).is_empty(), "a unit between two others");
        assert!(tids(8).is_empty(), "a unit past the last");
        assert!(tasks_of(&[], 0).is_empty());
    }

    #[test]
    fn schedstat_gives_exec_time_and_run_delay() {
        assert_eq!(
            parse_schedstat("2520314 10000 12\n"),
            Some((2_520_314, 10_000))
        );
        assert_eq!(parse_schedstat("12 x 1"), None);
        assert_eq!(parse_schedstat(""), None);
        let own = schedstat(std::process::id()).expect("this kernel has CONFIG_SCHED_INFO");
        assert!(own.0 > 0, "this test ran on a CPU: {own:?}");
    }

    #[test]
    fn kernel_states_map_to_task_states() {
        let stat = |state, on_cpu| TaskStat {
            state,
            on_cpu,
            ..TaskStat::default()
        };
        assert_eq!(task_state(&stat(TASK_RUNNING, 1)), TaskState::Running);
        assert_eq!(task_state(&stat(TASK_RUNNING, 0)), TaskState::Runnable);
        assert_eq!(task_state(&stat(0x104, 0)), TaskState::Stopped);
        assert_eq!(task_state(&stat(TASK_TRACED, 0)), TaskState::Traced);
        assert_eq!(task_state(&stat(0x102, 0)), TaskState::DiskSleep);
        assert_eq!(
            task_state(&stat(TASK_UNINTERRUPTIBLE | TASK_NOLOAD, 0)),
            TaskState::Sleeping
        );
        assert_eq!(
            task_state(&stat(TASK_INTERRUPTIBLE, 0)),
            TaskState::Sleeping
        );
    }
}
