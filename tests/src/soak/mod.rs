//! The chaos soak (`cargo xtask soak`, and a short form among the tests): a fleet of units
//! misbehaving at random under a real `systemd --user`, while the agent itself is SIGKILLed,
//! SIGSTOPped and restarted at random moments. What must hold throughout is in [`check`].

mod check;
mod fleet;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::{
    Sandbox,
    agent::{Agent, agent_pid},
};

pub use check::Report;

/// A small xorshift generator: the soak needs no quality, only a seed to replay a run.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(seed | 1)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Runs the soak for `length`: chaos for the first 70 %, then a calm tail in which the agent is
/// left alone so its RSS and fds can be seen to stay flat. Fails when an invariant breaks.
pub fn run(length: Duration) -> anyhow::Result<Report> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("soak: {length:?}, seed {seed}");
    let mut dice = Dice::new(seed);
    let sandbox = Sandbox::start("soak")?;
    let fleet = fleet::Fleet::start(&sandbox)?;
    let mut agent = Agent::start(&sandbox, &fleet.config(), &[])?;
    fleet.flag_suspect(&sandbox, &agent)?;
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut report = Report {
        seed,
        ..Report::default()
    };
    let started = Instant::now();
    let calm_from = length.mul_f64(0.7);
    let mut calm_start = None;
    let mut in_flight_breaks = Vec::new();
    while started.elapsed() < length {
        fleet.record_invocations(&sandbox, &mut seen)?;
        // The agent's own word on what it has in flight; it may be restarting right now.
        if let Ok(status) = agent.status() {
            check::in_flight(&status, &mut report, &mut in_flight_breaks);
        }
        let calm = started.elapsed() >= calm_from;
        if calm && calm_start.is_none() {
            // The calm tail starts with a fresh look at the agent's footprint, and the suspect
            // cleared: its last freeze must be undone by the end.
            calm_start = Some(check::footprint(agent_pid(&agent)?)?);
            fleet.calm_down()?;
        }
        match dice.below(10) {
            0 if !calm => {
                report.agent_kills += 1;
                signal(agent_pid(&agent)?, libc::SIGKILL)?;
                drop(agent);
                // The restarted agent must load what its predecessor left, mid-action or not.
                agent = Agent::start(&sandbox, &fleet.config(), &[])
                    .context("the agent did not come back after a SIGKILL")?;
            }
            1 if !calm => {
                report.agent_stops += 1;
                let pid = agent_pid(&agent)?;
                signal(pid, libc::SIGSTOP)?;
                std::thread::sleep(Duration::from_millis(500 + dice.below(3000)));
                signal(pid, libc::SIGCONT)?;
            }
            _ => report.unit_events += u64::from(fleet.misbehave(&sandbox, &mut dice, calm)?),
        }
        std::thread::sleep(Duration::from_millis(200 + dice.below(800)));
    }
    fleet.record_invocations(&sandbox, &mut seen)?;
    let calm_start = calm_start.context("the soak was too short for a calm tail")?;
    let seen = check::Seen {
        invocations: seen,
        in_flight_breaks,
    };
    check::at_the_end(&sandbox, &agent, &fleet, &seen, calm_start, &mut report)?;
    Ok(report)
}

fn signal(pid: i32, signal: i32) -> anyhow::Result<()> {
    // SAFETY: kill(2) on the agent or a unit process this soak started.
    if unsafe { libc::kill(pid, signal) } != 0 {
        anyhow::bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}
