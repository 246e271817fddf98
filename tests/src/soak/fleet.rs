//! The soak's units and how they misbehave: crash loops, steady services that get SIGKILLed or
//! SIGSTOPped, an fd leaker, a spinner, HTTP services whose health probe flaps, and a suspect
//! that a detector flags as compromised, which the agent freezes for a short quarantine.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::TcpListener,
    path::PathBuf,
};

use anyhow::Context as _;

use super::{Dice, signal};
use crate::{Sandbox, agent::workload, service_unit};

/// The restart budget of every unit (per hour: longer than any soak).
pub const MAX_RESTARTS: usize = 3;

const POLICY: &str = r#"
[policy]
cooldown = "30s"
escalate_after = 5
# The suspect's freeze: short, so it ends (and must be undone) many times in a soak.
quarantine_duration = "4s"

[policy.budget]
max_restarts = 3
window = "1h"

[policy.backoff]
initial = "1s"
multiplier = 2.0
max = "10s"
max_attempts = 5
"#;

enum Kind {
    /// Exits 3 this many ms after each start.
    Crash(u32),
    /// Sleeps; the soak kills or stops it.
    Steady,
    /// Leaks 20 fds a second under LimitNOFILE=1024.
    Leak,
    /// Spins one thread without syscalls; systemd ends each run after 30 s.
    Spin,
    /// Answers HTTP as its state file says; the soak flips it between 200 and 500.
    Flappy { port: u16, state: PathBuf },
    /// Sleeps; a detector flags it compromised while `flag` exists, and its ladder freezes it.
    Suspect { flag: PathBuf },
}

pub struct Fleet {
    units: Vec<(String, Kind)>,
}

impl Fleet {
    /// Installs and starts the twenty-one units.
    pub fn start(sandbox: &Sandbox) -> anyhow::Result<Fleet> {
        let mut units = Vec::new();
        for i in 0..6 {
            units.push((format!("crash{i}.service"), Kind::Crash(3000 + 1500 * i)));
        }
        for i in 0..10 {
            units.push((format!("steady{i}.service"), Kind::Steady));
        }
        units.push(("leak.service".to_owned(), Kind::Leak));
        units.push(("spin.service".to_owned(), Kind::Spin));
        for i in 0..2 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let state = sandbox.runtime_dir().join(format!("flappy{i}.state"));
            std::fs::write(&state, "200 0").context("writing a probe state")?;
            units.push((format!("flappy{i}.service"), Kind::Flappy { port, state }));
        }
        let flag = sandbox.runtime_dir().join("suspect.flag");
        units.push(("suspect.service".to_owned(), Kind::Suspect { flag }));
        for (name, kind) in &units {
            let (args, extra) = match kind {
                Kind::Crash(after_ms) => (format!("exit 3 {after_ms}"), ""),
                Kind::Steady | Kind::Suspect { .. } => ("sleep".to_owned(), ""),
                Kind::Leak => ("leak-fds 20".to_owned(), "LimitNOFILE=1024"),
                Kind::Spin => ("spin 1".to_owned(), "RuntimeMaxSec=30"),
                Kind::Flappy { port, state } => (format!("http {port} {}", state.display()), ""),
            };
            let extra: Vec<&str> = [extra].into_iter().filter(|l| !l.is_empty()).collect();
            sandbox.install_unit(name, &service_unit(name, &workload(&args), &extra))?;
        }
        let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
        sandbox.systemctl(&[&["start"], names.as_slice()].concat())?;
        Ok(Fleet { units })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.units.iter().map(|(n, _)| n.as_str())
    }

    /// The agent's config: the policy above and every unit, with short stall and leak windows.
    pub fn config(&self) -> String {
        let mut config = POLICY.to_owned();
        for (name, kind) in &self.units {
            config.push_str(&format!(
                "\n[[unit]]\nname = \"{name}\"\nrestart = \"on-failure\"\n\n\
                 [unit.stall]\nthreshold = \"3s\"\n\n[unit.leak]\nwindow = \"20s\"\n"
            ));
            match kind {
                Kind::Flappy { port, .. } => config.push_str(&format!(
                    "\n[[unit.probe]]\nname = \"health\"\nkind = \"http\"\n\
                     url = \"http://127.0.0.1:{port}/\"\ninterval = \"500ms\"\ntimeout = \"1s\"\n\
                     grace = \"0s\"\nconsecutive_failures = 3\n"
                )),
                Kind::Suspect { flag } => config.push_str(&format!(
                    "\n[unit.remediation]\nisolation = [\"freeze\"]\n\n\
                     [unit.remediation.custom]\ncompromised = [\"isolate\"]\n\n\
                     [[unit.detector]]\nname = \"ids\"\n\
                     command = [\"/bin/sh\", \"-c\", \"test ! -e '{}'\"]\n\
                     kind = \"compromised\"\ninterval = \"500ms\"\ntimeout = \"5s\"\n",
                    flag.display()
                )),
                _ => {}
            }
        }
        config
    }

    /// One misbehaviour of a unit picked at random; `false` when it had nothing to act on.
    /// In the `calm` tail the suspect is no longer flagged.
    pub fn misbehave(
        &self,
        sandbox: &Sandbox,
        dice: &mut Dice,
        calm: bool,
    ) -> anyhow::Result<bool> {
        let (name, kind) = &self.units[dice.below(self.units.len() as u64) as usize];
        match kind {
            // They crash by themselves.
            Kind::Crash(_) => Ok(false),
            // Flagged or cleared: a freeze now, or its quarantine left to expire.
            Kind::Suspect { .. } if calm => Ok(false),
            Kind::Suspect { flag } => {
                if dice.below(2) == 0 {
                    std::fs::write(flag, "").context("flagging the suspect")?;
                } else {
                    clear(flag)?;
                }
                Ok(true)
            }
            Kind::Flappy { state, .. } => {
                let answer = if dice.below(2) == 0 { "500 0" } else { "200 0" };
                std::fs::write(state, answer).context("flipping a probe")?;
                Ok(true)
            }
            Kind::Steady | Kind::Leak | Kind::Spin => {
                let Ok(pid) = sandbox.main_pid(name) else {
                    return Ok(false);
                };
                let how = if dice.below(3) == 0 {
                    libc::SIGSTOP
                } else {
                    libc::SIGKILL
                };
                // The process may be gone by now: that is part of the chaos.
                Ok(signal(pid as i32, how).is_ok())
            }
        }
    }

    /// Flags the suspect once the agent watches it (flagged before, the agent would try to
    /// freeze it before it knows its cgroup) and waits for its first freeze, so the soak sees
    /// at least one whatever the dice say (an agent SIGKILLed mid-freeze, then a cleared flag,
    /// once left a soak without any).
    pub fn flag_suspect(
        &self,
        sandbox: &Sandbox,
        agent: &crate::agent::Agent,
    ) -> anyhow::Result<()> {
        for (name, kind) in &self.units {
            if let Kind::Suspect { flag } = kind {
                crate::agent::wait_watching(agent, name)?;
                std::fs::write(flag, "").context("flagging the suspect")?;
                let deadline = std::time::Instant::now() + FIRST_FREEZE;
                while !frozen_once(sandbox, name)? {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "{name} flagged compromised was not frozen within {FIRST_FREEZE:?}"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        Ok(())
    }

    /// Before the calm tail: nothing is flagged any more, so every freeze must end with its
    /// quarantine, and the end of the soak can require that none is left.
    pub fn calm_down(&self) -> anyhow::Result<()> {
        for (_, kind) in &self.units {
            if let Kind::Suspect { flag } = kind {
                clear(flag)?;
            }
        }
        Ok(())
    }

    /// Adds every unit's current InvocationID (a new one each time systemd starts it) to `seen`.
    pub fn record_invocations(
        &self,
        sandbox: &Sandbox,
        seen: &mut BTreeMap<String, BTreeSet<String>>,
    ) -> anyhow::Result<()> {
        let mut args = vec!["show", "-p", "Id", "-p", "InvocationID"];
        args.extend(self.names());
        let out = sandbox.systemctl(&args)?;
        for block in out.split("\n\n") {
            let field = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                    .unwrap_or_default()
                    .to_owned()
            };
            let (id, invocation) = (field("Id"), field("InvocationID"));
            if !id.is_empty() && !invocation.is_empty() {
                seen.entry(id).or_default().insert(invocation);
            }
        }
        Ok(())
    }
}

/// How long the suspect's detector (every 500 ms) and its freeze may take the first time.
const FIRST_FREEZE: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether the audit log has a freeze of `unit` done.
fn frozen_once(sandbox: &Sandbox, unit: &str) -> anyhow::Result<bool> {
    Ok(crate::agent::audit_lines(sandbox)?.iter().any(|l| {
        l["event"] == "action"
            && l["unit"] == unit
            && l["action"] == "freeze"
            && l["outcome"] == "done"
    }))
}

/// Removes the suspect's flag; already gone is fine.
fn clear(flag: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::remove_file(flag) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("clearing {}", flag.display()))
        }
        _ => Ok(()),
    }
}
