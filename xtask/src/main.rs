//! `cargo xtask …`: the project's own commands. It orchestrates cargo, installs prerequisites
//! and runs things; the eBPF object itself is built by selfheal-agent's build.rs.

mod bench;
mod cmd;
mod deb;
mod fuzz;
mod run;
mod setup;
mod soak;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "selfheal's development commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent; run and test call it themselves).
    Setup,
    /// Build and start the agent as root. Without a host systemd (or a config), starts a
    /// sandboxed systemd with demo units that misbehave, and heals them. Ctrl-C stops it all.
    /// `-- --fleet-demo`: three sandboxed hosts share one disruption budget through etcd.
    Run {
        /// Arguments for `selfheal-agent run` (e.g. `-- --dry-run`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Lints, unit tests, then the privileged integration tests and the VM test. Without root,
    /// the unprivileged tier only, naming every test it could not run.
    Test {
        /// Only run tests whose name contains this string.
        filter: Option<String>,
    },
    /// Runs each fuzz target (config, webhook body, status request, BTF, procfs, cgroupfs,
    /// /proc/net/tcp) for a while with cargo-fuzz on nightly; fails on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target.
        target: Option<String>,
    },
    /// Chaos soak: ~20 units misbehaving at random under a real systemd --user while the agent
    /// is SIGKILLed, SIGSTOPped and restarted; checks budgets, the audit log, state and
    /// footprint (needs root).
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Measures overhead, latency, footprint and scale, side by side with systemd and monit,
    /// and writes target/bench/report.md (and docs/performance.md). Needs root.
    Bench {
        /// A short sanity run (~5 minutes) instead of the full one (~30 minutes).
        #[arg(long)]
        quick: bool,
        /// Measure only these parts (comma-separated): overhead, exit-event, crash-restart,
        /// detection, compare, footprint, bursts, many-units. Writes target/bench/report.md only.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Builds the Debian package (target/debian/selfheal_*.deb) with cargo-deb and checks it
    /// with lintian.
    Deb {
        /// Package version instead of the crate's (e.g. to test an upgrade).
        #[arg(long)]
        deb_version: Option<String>,
    },
    /// Boots a Debian guest under qemu (systemd as PID 1, cgroup v2), installs the agent's
    /// Debian package and runs scenarios against real services, then upgrades and purges the
    /// package (needs root).
    VmTest {
        /// Run every scenario, not only the short form.
        #[arg(long)]
        full: bool,
        /// Keep the run directory (console log, guest journal) even when everything passed.
        #[arg(long)]
        keep: bool,
        /// Run only these scenarios (comma-separated, in the usual order), e.g.
        /// `--only agent-starts,agent-restarts` to chase one failure quickly.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup(),
        Command::Run { args } => run::run(&args),
        Command::Test { filter } => test::test(filter.as_deref()),
        Command::Fuzz { seconds, target } => fuzz::fuzz(seconds, target.as_deref()),
        Command::Soak { minutes } => soak::soak(minutes),
        Command::VmTest { full, keep, only } => vm::vm_test(full, keep, &only),
        Command::Bench { quick, only } => bench::bench(quick, &only),
        Command::Deb { deb_version } => deb::deb(deb_version.as_deref()).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
