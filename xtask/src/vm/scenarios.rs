//! The scenarios the guest runs, and the console markers it reports them with. Each scenario
//! here is a function `scenario_<name>` in tests/vm/scenarios.sh (dashes become underscores);
//! the script's header documents the protocol. The short form, which `cargo xtask test` runs,
//! holds the scenarios that prove something nothing else proves on a real systemd host (today
//! all of them: the test sandbox's `systemd --user` cannot apply CPU or memory limits, for
//! one); `--full` adds those too slow for every CI run.

use std::time::Duration;

pub struct Scenario {
    pub name: &'static str,
    /// Part of the short form that `cargo xtask test` runs; `vm-test --full` runs them all.
    pub short: bool,
    /// From its start marker to its result, under TCG (the slow case).
    pub timeout: Duration,
}

/// In the order the guest runs them; later ones rely on earlier ones (the installed agent).
pub const SCENARIOS: &[Scenario] = &[
    // systemd is PID 1, /sys/fs/cgroup is a pure v2 tree, the kernel has BTF.
    Scenario {
        name: "environment",
        short: true,
        timeout: Duration::from_secs(30),
    },
    // The operator's install: `apt install ./selfheal_….deb` (enabled and started by the
    // package), then the test config; the agent is active, enabled, in the journal, and answers
    // `status` watching nginx.service.
    Scenario {
        name: "agent-starts",
        short: true,
        timeout: Duration::from_secs(240),
    },
    // SIGKILL of nginx's main process: the agent restarts the unit and records it.
    Scenario {
        name: "crash-restart",
        short: true,
        timeout: Duration::from_secs(120),
    },
    // SIGSTOP of every nginx process: `stopped` after [unit.stall] threshold, then a restart.
    Scenario {
        name: "sigstop",
        short: true,
        timeout: Duration::from_secs(180),
    },
    // A service leaking fds under LimitNOFILE=512: fd_leak with a predicted exhaustion, then a
    // restart before it runs out.
    Scenario {
        name: "fd-leak",
        short: true,
        timeout: Duration::from_secs(240),
    },
    // Busy loops under CPUQuota=10% and MemoryMax=64M: `starved`, scale ×1.5 (cpu.max,
    // memory.max), and one step back down once idle.
    Scenario {
        name: "cpu-scale",
        short: true,
        timeout: Duration::from_secs(300),
    },
    // A custom detector's kind whose ladder isolates the unit's network: the unit cannot reach
    // nginx on loopback, other processes can, and `selfheal-agent release` ends it.
    Scenario {
        name: "quarantine",
        short: true,
        timeout: Duration::from_secs(200),
    },
    // The agent is restarted again and again with every unit watched: each time it is back,
    // answers with all kernel hooks attached, and the kernel stays healthy (a soft lockup
    // panics the guest: see scenarios.sh).
    Scenario {
        name: "agent-restarts",
        short: false,
        timeout: Duration::from_secs(400),
    },
    // `man selfheal-agent`; an upgrade to a newer package keeps config, state and audit log
    // and restarts the agent; a purge removes everything. Last: it uninstalls the agent.
    Scenario {
        name: "package",
        short: true,
        // Measured: 1m50s under TCG (apt, man-db's trigger and two agent restarts).
        timeout: Duration::from_secs(300),
    },
];

/// The short form, every scenario with `full`, or the scenarios named in `only` (in the order
/// of [`SCENARIOS`]); a name that is not a scenario is an error that lists them.
pub fn selected(full: bool, only: &[String]) -> anyhow::Result<Vec<&'static Scenario>> {
    if let Some(unknown) = only
        .iter()
        .find(|name| !SCENARIOS.iter().any(|s| s.name == name.as_str()))
    {
        let known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        anyhow::bail!(
            "--only: no scenario '{unknown}' (scenarios: {})",
            known.join(", ")
        );
    }
    Ok(SCENARIOS
        .iter()
        .filter(|s| {
            if only.is_empty() {
                full || s.short
            } else {
                only.iter().any(|name| name == s.name)
            }
        })
        .collect())
}

/// One line of the guest's reporting protocol.
#[derive(Debug, PartialEq)]
pub enum Marker<'a> {
    /// The guest booted; the text says what it booted (kernel, uptime, systemd's boot time).
    Ready(&'a str),
    Start(&'a str),
    Result {
        scenario: &'a str,
        passed: bool,
        detail: &'a str,
    },
    Done,
}

/// The marker in a console line, if any. It may follow other output on the same line (a
/// kernel message that was being printed when the marker arrived).
pub fn parse(line: &str) -> Option<Marker<'_>> {
    if let Some(at) = line.find("SELFHEAL-SCENARIO ") {
        let mut words = line[at + "SELFHEAL-SCENARIO ".len()..].splitn(3, ' ');
        let scenario = words.next()?;
        let passed = match words.next()? {
            "PASS" => true,
            "FAIL" => false,
            _ => return None,
        };
        let detail = words.next().unwrap_or_default();
        return Some(Marker::Result {
            scenario,
            passed,
            detail,
        });
    }
    let at = line.find("SELFHEAL-VM ")?;
    let rest = &line[at + "SELFHEAL-VM ".len()..];
    let (word, text) = rest.split_once(' ').unwrap_or((rest, ""));
    match word {
        "ready" => Some(Marker::Ready(text)),
        "start" => Some(Marker::Start(text)),
        "done" => Some(Marker::Done),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{Marker, SCENARIOS, parse, selected};

    #[test]
    fn result_lines_give_scenario_verdict_and_detail() {
        assert_eq!(
            parse("SELFHEAL-SCENARIO crash-restart PASS main pid 3 killed: back"),
            Some(Marker::Result {
                scenario: "crash-restart",
                passed: true,
                detail: "main pid 3 killed: back",
            })
        );
        assert_eq!(
            parse("SELFHEAL-SCENARIO environment FAIL"),
            Some(Marker::Result {
                scenario: "environment",
                passed: false,
                detail: "",
            })
        );
        assert_eq!(parse("SELFHEAL-SCENARIO environment MAYBE x"), None);
    }

    #[test]
    fn markers_are_found_after_other_console_output() {
        assert_eq!(
            parse("[   12.3] random: crng init done SELFHEAL-VM start agent-starts"),
            Some(Marker::Start("agent-starts"))
        );
        assert_eq!(
            parse("SELFHEAL-VM ready kernel 6.1.0"),
            Some(Marker::Ready("kernel 6.1.0"))
        );
        assert_eq!(parse("SELFHEAL-VM done"), Some(Marker::Done));
        assert_eq!(parse("[  OK  ] Started nginx.service"), None);
        assert_eq!(parse("SELFHEAL-VM rebooting"), None);
    }

    #[test]
    fn every_scenario_has_its_function_in_the_guest_script() {
        let script =
            std::fs::read_to_string(crate::cmd::workspace_root().join("tests/vm/scenarios.sh"))
                .expect("tests/vm/scenarios.sh is readable");
        for scenario in SCENARIOS {
            let function = format!("scenario_{}() {{", scenario.name.replace('-', "_"));
            assert!(script.contains(&function), "scenarios.sh lacks {function}");
        }
        let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len(), "scenario names are unique");
    }

    #[test]
    fn short_form_runs_only_the_short_scenarios() {
        assert_eq!(selected(true, &[]).unwrap().len(), SCENARIOS.len());
        let short = selected(false, &[]).unwrap();
        assert!(short.iter().all(|s| s.short));
        assert_eq!(short.len(), SCENARIOS.iter().filter(|s| s.short).count());
    }

    #[test]
    fn only_keeps_the_scenario_order_and_refuses_unknown_names() {
        let names = |only: &[&str]| -> anyhow::Result<Vec<&str>> {
            let only: Vec<String> = only.iter().map(|s| (*s).to_owned()).collect();
            Ok(selected(false, &only)?.iter().map(|s| s.name).collect())
        };
        assert_eq!(
            names(&["package", "environment"]).unwrap(),
            ["environment", "package"]
        );
        let error = names(&["environmnet"]).unwrap_err().to_string();
        assert!(
            error.contains("'environmnet'") && error.contains("agent-starts"),
            "{error}"
        );
    }
}
