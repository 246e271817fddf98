//! Renders a status document as the tree operators read in a terminal.

use std::{
    fmt::Write as _,
    time::{Duration, UNIX_EPOCH},
};

use super::status::StatusDoc;

/// Records shown per unit in the text view (the JSON view has them all).
const RECENT: usize = 5;

pub fn render(doc: &StatusDoc) -> String {
    let mut out = String::new();
    let attached = doc.kernel.hooks.iter().filter(|h| h.attached).count();
    let _ = writeln!(
        out,
        "selfheal {} — pid {}, up {}, {} manager{}, kernel hooks {attached}/{} attached",
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
    if doc.units.is_empty() {
        let _ = writeln!(out, "└── no units configured");
    }
    for (i, unit) in doc.units.iter().enumerate() {
        let last = i + 1 == doc.units.len();
        let (branch, indent) = if last {
            ("└──", "    ")
        } else {
            ("├──", "│   ")
        };
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
        let recent: Vec<_> = unit.history.iter().rev().take(RECENT).rev().collect();
        for (j, record) in recent.iter().enumerate() {
            let twig = if j + 1 == recent.len() {
                "└──"
            } else {
                "├──"
            };
            let _ = writeln!(
                out,
                "{indent}{twig} {} {}",
                clock(record.at_ms),
                record.event.summary()
            );
        }
    }
    out
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

    #[test]
    fn the_tree_shows_each_unit_with_its_last_events() {
        let doc = StatusDoc {
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
            units: vec![UnitStatus {
                name: "web.service".into(),
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
                view: Default::default(),
            }],
        };
        let text = render(&doc);
        assert!(text.contains("up 1m15s"), "{text}");
        assert!(
            text.contains(
                "└── web.service: active (running), main pid 42, restart=on-failure, restarts 1"
            ),
            "{text}"
        );
        assert!(text.contains("    └── 01:02:03Z unit found"), "{text}");
    }
}
