//! `selfheal-agent status --watch`: the status tree, refreshed in place, with the problems and
//! actions of every unit streaming under it as the agent records them.
//!
//! On a terminal the screen is redrawn each interval, with colours (unless NO_COLOR is set).
//! Into a pipe or file it prints plain lines instead: the tree whenever a unit's state or the
//! overall health changes, and each new record once, so `status --watch | tee incident.log`
//! keeps a readable account. It polls the status socket: the tree is a snapshot by nature, and
//! the records come with it, so one source serves both.

use std::{
    collections::{HashSet, VecDeque},
    io::{ErrorKind, IsTerminal as _, Write as _},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use selfheal_agent::report::{status::StatusDoc, status_text};

use super::{events::utc, hints};

/// Records kept under the tree on a terminal.
const SHOWN: usize = 15;

const RESET: &str = "\x1b[0m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";

pub async fn watch(socket: &PathBuf, interval: Duration) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let colour = terminal && std::env::var_os("NO_COLOR").is_none();
    // The first answer must come: a wrong socket is reported, not watched forever.
    let mut doc = hints::query(socket).await?;
    let mut stream = Stream::default();
    stream.mark_seen(&doc);
    let mut shape = String::new();
    let mut ticker = tokio::time::interval(interval);
    loop {
        let screen = if terminal {
            redraw(&doc, &stream, colour)
        } else {
            let mut text = String::new();
            if shape != state_key(&doc) {
                shape = state_key(&doc);
                text.push_str(&status_text::render(&doc));
            }
            for line in stream.fresh.drain(..) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        };
        if !show(&screen)? {
            return Ok(());
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        match hints::query(socket).await {
            Ok(next) => {
                stream.add_new(&next);
                doc = next;
            }
            // A restarting agent: say so and keep watching.
            Err(e) => stream.note(format!("agent not answering: {e:#}")),
        }
    }
}

/// Writes a screenful; false once stdout is closed.
fn show(text: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

fn redraw(doc: &StatusDoc, stream: &Stream, colour: bool) -> String {
    // Home, clear to the end of the screen: the tree replaces itself without scrolling.
    let mut text = String::from("\x1b[H\x1b[2J");
    for line in status_text::render(doc).lines() {
        text.push_str(&paint(line, colour));
        text.push('\n');
    }
    text.push_str("\nProblems and actions (newest last, Ctrl-C to quit):\n");
    if stream.shown.is_empty() {
        text.push_str("  nothing yet\n");
    }
    for line in &stream.shown {
        text.push_str("  ");
        text.push_str(&paint(line, colour));
        text.push('\n');
    }
    text
}

/// What makes the plain mode print the tree again: health, circuits and each unit's state.
fn state_key(doc: &StatusDoc) -> String {
    let mut key = format!(
        "{:?} {:?} {}",
        doc.health.overall, doc.health.circuit_breakers, doc.health.active_recoveries
    );
    for unit in &doc.units {
        key.push_str(&format!(
            "|{} {} {} {}",
            unit.name, unit.active_state, unit.sub_state, unit.restarts
        ));
    }
    key
}

/// Green for good news, yellow for work in progress, red for trouble; plain without colour.
pub fn paint(line: &str, colour: bool) -> String {
    if !colour {
        return line.to_owned();
    }
    let lower = line.to_lowercase();
    let tint = if [
        "critical",
        "failed",
        "escalat",
        "not attached",
        "not answering",
        "stall",
        "killed",
        "exited",
    ]
    .iter()
    .any(|w| lower.contains(w))
    {
        RED
    } else if ["degraded", "activating", "suspected"]
        .iter()
        .any(|w| lower.contains(w))
    {
        YELLOW
    } else if ["healthy", "done", "active (running)"]
        .iter()
        .any(|w| lower.contains(w))
    {
        GREEN
    } else {
        return line.to_owned();
    };
    format!("{tint}{line}{RESET}")
}

/// The records of every unit, each shown once, in the order they happened.
#[derive(Default)]
struct Stream {
    seen: HashSet<(String, u64, String)>,
    /// Not printed yet (plain mode).
    fresh: Vec<String>,
    /// The latest few (terminal mode).
    shown: VecDeque<String>,
}

impl Stream {
    /// What the agent recorded before we started is in the tree already.
    fn mark_seen(&mut self, doc: &StatusDoc) {
        for (key, _) in records(doc) {
            self.seen.insert(key);
        }
    }

    fn add_new(&mut self, doc: &StatusDoc) {
        let mut new: Vec<_> = records(doc)
            .filter(|(key, _)| !self.seen.contains(key))
            .collect();
        new.sort_by_key(|((_, at, _), _)| *at);
        for (key, line) in new {
            self.seen.insert(key);
            self.note(line);
        }
    }

    fn note(&mut self, line: String) {
        self.fresh.push(line.clone());
        self.shown.push_back(line);
        while self.shown.len() > SHOWN {
            self.shown.pop_front();
        }
    }
}

/// ((unit, time, summary), "time unit: summary") for every record in the document.
fn records(doc: &StatusDoc) -> impl Iterator<Item = ((String, u64, String), String)> + '_ {
    doc.units.iter().flat_map(|unit| {
        unit.history.iter().map(move |r| {
            let summary = r.event.summary();
            let line = format!("{} {}: {summary}", utc(r.at_ms), unit.name);
            ((unit.name.clone(), r.at_ms, summary), line)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_when_asked_and_by_what_the_line_says() {
        assert_eq!(
            paint("x.service: restart failed", false),
            "x.service: restart failed"
        );
        assert!(paint("System Health: CRITICAL", true).starts_with(RED));
        assert!(paint("System Health: DEGRADED", true).starts_with(YELLOW));
        assert!(paint("System Health: HEALTHY", true).starts_with(GREEN));
        assert!(paint("main process 7 (web) was killed by SIGKILL", true).starts_with(RED));
        // "on-failure" is a setting, not a failure.
        assert!(!paint("web.service: restart=on-failure", true).starts_with(RED));
        assert_eq!(
            paint("├── Active Recoveries: 0", true),
            "├── Active Recoveries: 0"
        );
    }
}
