//! The report: one Markdown document, a summary table of targets first, then a section per
//! measurement saying what was measured and how.

use std::fmt::Write as _;

/// One target of the issue and what the bench measured for it.
#[derive(Clone, Debug)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    /// None: a figure reported without a pass/fail target.
    pub met: Option<bool>,
}

impl Target {
    pub fn new(what: &str, target: &str, measured: String, met: Option<bool>) -> Target {
        Target {
            what: what.to_owned(),
            target: target.to_owned(),
            measured,
            met,
        }
    }
}

/// What a section found.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub title: String,
    /// Markdown: tables and how each figure was measured.
    pub body: String,
    pub targets: Vec<Target>,
    /// Plain words on misses: what would close them.
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(title: &str) -> Section {
        Section {
            title: title.to_owned(),
            ..Section::default()
        }
    }

    /// A section that could not be measured: the report says why instead of a figure.
    pub fn failed(title: &str, error: &anyhow::Error) -> Section {
        let mut s = Section::new(title);
        let _ = writeln!(s.body, "**Not measured**: {error:#}");
        s
    }

    pub fn line(&mut self, text: impl AsRef<str>) {
        self.body.push_str(text.as_ref());
        self.body.push('\n');
    }
}

/// Everything about the run itself.
pub struct RunFacts {
    /// The flags the bench ran with, as typed (`""` for the full run).
    pub flags: String,
    pub machine: String,
    pub date: String,
    pub load_before: String,
    pub load_after: String,
    pub foreign_agents: String,
    pub duration_s: u64,
}

pub fn render(facts: &RunFacts, sections: &[Section]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# selfheal performance report\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench{}` on {} in {} s.\n",
        facts.flags, facts.date, facts.duration_s
    );
    let _ = writeln!(out, "- Machine: {}", facts.machine);
    let _ = writeln!(
        out,
        "- Load average (1, 5, 15 min): {} before, {} after",
        facts.load_before, facts.load_after
    );
    let _ = writeln!(
        out,
        "- Other agents' scheduler probes loaded: {}",
        facts.foreign_agents
    );
    let _ = writeln!(
        out,
        "- Agent and workloads: release builds; every agent runs against a sandboxed `systemd --user` \
         (the test harness), with `RUST_LOG=info`.\n"
    );

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| | target | measured | |");
    let _ = writeln!(out, "|---|---|---|---|");
    for t in sections.iter().flat_map(|s| &s.targets) {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "reported",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {verdict} |",
            t.what, t.target, t.measured
        );
    }
    out.push('\n');
    for s in sections {
        let _ = writeln!(out, "## {}\n\n{}", s.title, s.body.trim_end());
        out.push('\n');
    }
    let notes: Vec<&String> = sections.iter().flat_map(|s| &s.notes).collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "## Notes: misses and what would close them\n");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}
