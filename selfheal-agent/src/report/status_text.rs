//! Renders a status document as the tree operators read in a terminal.

use std::{
    fmt::Write as _,
    time::{Duration, UNIX_EPOCH},
};

use super::status::{StatusDoc, UnitStatus};

/// Records shown per unit in the text view (the JSON view has them all).
const RECENT: usize = 5;

pub fn render(doc: &StatusDoc) -> String {
    let mut out = String::new();
    let attached = doc.kernel.hooks.iter().filter(|h| h.attached).count();
    let overall = serde_json::to_value(doc.health.overall)
        .ok()
        .and_then(|v| v.as_str().map(str::to_uppercase))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "System Health: {overall} — selfheal {}, pid {}, up {}, {} manager{}, kernel hooks {attached}/{} attached",
        doc.agent.version,
        doc.agent.pid,
        human(Duration::from_secs(doc.agent.uptime_seconds)),
        doc.agent.bus,
        if doc.agent.dry_run { ", DRY RUN" } else { "" },
        doc.kernel.hooks.len(),
    );
    for hook in doc.kernel.hooks.iter().filter(|h| !h.attached) {
        let _ = writeln!(out, "  ! {} not attached: {}", hook.hook, hook.detail);
    }
    let breakers = &doc.health.circuit_breakers;
    let _ = writeln!(
        out,
        "├── Circuit Breakers: {} closed, {} half-open, {} open",
        breakers.closed, breakers.half_open, breakers.open
    );
    let _ = writeln!(
        out,
        "├── Active Recoveries: {}",
        doc.health.active_recoveries
    );
    if doc.units.is_empty() && doc.patterns.is_empty() {
        let _ = writeln!(out, "└── no units configured");
    }
    let entries = entries(doc);
    for (i, entry) in entries.iter().enumerate() {
        let (branch, indent) = tree(i + 1 == entries.len());
        match entry {
            Entry::Unit(unit) => render_unit(&mut out, unit, branch, indent),
            Entry::Pattern(pattern, instances) => {
                let count = match instances.len() {
                    0 => "no instance yet".to_owned(),
                    1 => "1 instance".to_owned(),
                    n => format!("{n} instances"),
                };
                let _ = writeln!(out, "{branch} pattern {pattern}: {count}");
                for (j, unit) in instances.iter().enumerate() {
                    let (twig, more) = tree(j + 1 == instances.len());
                    let (branch, indent) = (format!("{indent}{twig}"), format!("{indent}{more}"));
                    render_unit(&mut out, unit, &branch, &indent);
                }
            }
        }
    }
    out
}

/// A top-level line of the tree: a unit named exactly, or a pattern with its instances.
enum Entry<'a> {
    Unit(&'a UnitStatus),
    Pattern(&'a str, Vec<&'a UnitStatus>),
}

/// Units named exactly first, in config order, then each pattern with its instances.
fn entries(doc: &StatusDoc) -> Vec<Entry<'_>> {
    let mut entries: Vec<Entry<'_>> = doc
        .units
        .iter()
        .filter(|u| u.pattern.is_none())
        .map(Entry::Unit)
        .collect();
    let mut patterns: Vec<&str> = doc.patterns.iter().map(String::as_str).collect();
    for pattern in doc.units.iter().filter_map(|u| u.pattern.as_deref()) {
        if !patterns.contains(&pattern) {
            patterns.push(pattern);
        }
    }
    for pattern in patterns {
        let instances = doc
            .units
            .iter()
            .filter(|u| u.pattern.as_deref() == Some(pattern))
            .collect();
        entries.push(Entry::Pattern(pattern, instances));
    }
    entries
}

/// The branch of an entry and the indent of what hangs below it.
fn tree(last: bool) -> (&'static str, &'static str) {
    if last {
        ("└──", "    ")
    } else {
        ("├──", "│   ")
    }
}

/// One unit's line and, below it, its details and last events.
fn render_unit(out: &mut String, unit: &UnitStatus, branch: &str, indent: &str) {
    let state = if unit.exists {
        format!("{} ({})", unit.active_state, unit.sub_state)
    } else if unit.load_state.is_empty() {
        "unknown (not resolved yet)".to_owned()
    } else {
        format!("{} (waiting for it to appear)", unit.load_state)
    };
    let pid = if unit.main_pid != 0 {
        format!(", main pid {}", unit.main_pid)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{branch} {}: {state}{pid}, restart={}, restarts {}",
        unit.name, unit.restart, unit.restarts
    );
    let mut lines = details(unit);
    let recent: Vec<_> = unit.history.iter().rev().take(RECENT).rev().collect();
    lines.extend(
        recent
            .iter()
            .map(|r| format!("{} {}", clock(r.at_ms), r.event.summary())),
    );
    for (j, line) in lines.iter().enumerate() {
        let twig = if j + 1 == lines.len() {
            "└──"
        } else {
            "├──"
        };
        let _ = writeln!(out, "{indent}{twig} {line}");
    }
}

/// The engine's picture of a unit: policy, stalls, scheduler, resources, probes.
fn details(unit: &UnitStatus) -> Vec<String> {
    let view = &unit.view;
    let mut lines = Vec::new();
    if let Some(reason) = view.policy.as_ref().and_then(|p| p.escalated.as_deref()) {
        let what = view.escalated_problem.as_deref().unwrap_or("a problem");
        lines.push(format!(
            "ESCALATED ({what}): {reason}; no action until `selfheal-agent reset {}`",
            unit.name
        ));
    }
    if !view.explain.is_empty() && view.policy.is_some() {
        lines.push(format!(
            "Policy: {}",
            view.explain.trim_start_matches(&format!("{}: ", unit.name))
        ));
    }
    for stall in &view.stalls {
        let what = if stall.reported {
            "STALL"
        } else {
            "suspected stall"
        };
        lines.push(format!(
            "{what}: {} for {}",
            stall.kind,
            human(Duration::from_secs_f64(stall.age_seconds))
        ));
    }
    if let Some(sched) = &view.sched {
        let p99 = sched
            .runq_p99_ms
            .map_or(String::new(), |ms| format!(", run-queue p99 {ms:.1} ms"));
        let states: Vec<String> = sched
            .states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        lines.push(format!(
            "Scheduler: {:.1}% CPU{p99}, {} task(s) ({})",
            sched.oncpu_percent,
            sched.tasks,
            states.join(", ")
        ));
    }
    let resources: Vec<String> = view.resources.iter().map(resource).collect();
    if !resources.is_empty() {
        lines.push(format!("Resources: {}", resources.join("; ")));
    }
    for probe in &view.probes {
        let name = probe["name"].as_str().unwrap_or("?");
        let up = match probe["up"].as_bool() {
            Some(true) => "up",
            Some(false) => "DOWN",
            None => "no result yet",
        };
        let latency = probe["latency_ms"]
            .as_f64()
            .map_or(String::new(), |ms| format!(", {ms:.0} ms"));
        let baseline = probe["baseline_ms"]
            .as_f64()
            .map_or(String::new(), |ms| format!(" (baseline {ms:.0} ms)"));
        lines.push(format!("Probe {name}: {up}{latency}{baseline}"));
    }
    lines
}

fn resource(r: &crate::units::view::ResourceView) -> String {
    let arrow = match &*r.shape {
        "leak" => "↗ leak",
        "plateau" => "→ plateau",
        "sawtooth" => "↕",
        "shrinking" => "↘",
        "burst" => "↑ burst",
        _ => "→",
    };
    let value = if r.kind == "memory" {
        mib(r.value)
    } else {
        format!("{:.0}", r.value)
    };
    let limit = r.limit.map_or(String::new(), |l| {
        if r.kind == "memory" {
            format!("/{}", mib(l))
        } else {
            format!("/{l:.0}")
        }
    });
    let exhaustion = r.exhaustion_in_seconds.map_or(String::new(), |s| {
        format!(", exhausted in ~{}", human(Duration::from_secs_f64(s)))
    });
    format!("{} {value}{limit} {arrow}{exhaustion}", r.kind)
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// UTC time of day, enough to order events at a glance.
fn clock(at_ms: u64) -> String {
    let secs = UNIX_EPOCH
        .checked_add(Duration::from_millis(at_ms))
        .map_or(0, |t| {
            t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
        });
    format!(
        "{:02}:{:02}:{:02}Z",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        history::{Event, Record},
        status::{AgentInfo, KernelInfo, UnitStatus},
    };

    fn doc(units: Vec<UnitStatus>, patterns: &[&str]) -> StatusDoc {
        StatusDoc {
            health: crate::report::health::assess(&crate::report::health::HealthInput {
                units: vec![],
                hooks: vec![],
                blind: vec![],
                uptime: Duration::from_secs(75),
            }),
            agent: AgentInfo {
                version: "0.1.0".into(),
                pid: 1,
                uptime_seconds: 75,
                bus: "user".into(),
                dry_run: false,
                http: String::new(),
            },
            kernel: KernelInfo {
                hooks: vec![],
                counters: Default::default(),
                tracked_tasks: vec![],
            },
            units,
            patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn unit(name: &str, pattern: Option<&str>) -> UnitStatus {
        UnitStatus {
            name: name.into(),
            pattern: pattern.map(str::to_owned),
            exists: true,
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            main_pid: 42,
            cgroup: None,
            cgroup_id: None,
            restart: "on-failure".into(),
            restarts: 1,
            history: vec![Record {
                at_ms: 3_723_000,
                event: Event::Unit {
                    message: "unit found".into(),
                },
            }],
            view: crate::units::view::UnitView {
                resources: vec![crate::units::view::ResourceView {
                    kind: "fd".into(),
                    value: 480.0,
                    limit: Some(1024.0),
                    shape: "leak".into(),
                    slope_per_minute: 60.0,
                    exhaustion_in_seconds: Some(540.0),
                    reported: true,
                }],
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_tree_shows_each_unit_with_its_last_events() {
        let text = render(&doc(vec![unit("web.service", None)], &[]));
        assert!(text.starts_with("System Health: HEALTHY"), "{text}");
        assert!(text.contains("up 1m15s"), "{text}");
        assert!(
            text.contains("├── Circuit Breakers: 0 closed, 0 half-open, 0 open"),
            "{text}"
        );
        assert!(
            text.contains("    ├── Resources: fd 480/1024 ↗ leak, exhausted in ~9m00s"),
            "{text}"
        );
        assert!(
            text.contains(
                "└── web.service: active (running), main pid 42, restart=on-failure, restarts 1"
            ),
            "{text}"
        );
        assert!(text.contains("    └── 01:02:03Z unit found"), "{text}");
    }

    #[test]
    fn instances_are_grouped_under_their_pattern_after_the_units_named_exactly() {
        let units = vec![
            unit("work@1.service", Some("work@*.service")),
            unit("web.service", None),
            unit("work@2.service", Some("work@*.service")),
        ];
        let text = render(&doc(units, &["work@*.service", "trading.slice"]));
        let tree: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(".service:") || l.contains("pattern"))
            .collect();
        assert_eq!(
            tree,
            [
                "├── web.service: active (running), main pid 42, restart=on-failure, restarts 1",
                "├── pattern work@*.service: 2 instances",
                "│   ├── work@1.service: active (running), main pid 42, restart=on-failure, restarts 1",
                "│   └── work@2.service: active (running), main pid 42, restart=on-failure, restarts 1",
                "└── pattern trading.slice: no instance yet",
            ],
            "{text}"
        );
        assert!(
            text.contains("│   │   ├── Resources: fd 480/1024"),
            "{text}"
        );
    }
}
