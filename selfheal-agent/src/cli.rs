//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// --- operator experience: live view, event stream, generated docs, helpful errors ----------
pub mod events;
pub mod generate;
pub mod hints;
pub mod watch;
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Parser)]
#[command(
    name = "selfheal-agent",
    version,
    about = "eBPF-backed self-healing for systemd units"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (as root): watch the configured units and heal them.
    Run {
        /// Config file [default: /etc/selfheal/selfheal.toml]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Manage the calling user's systemd over the session bus (like `systemctl --user`).
        #[arg(long)]
        user: bool,
        /// Detect and decide, record every decision, but touch nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate a config file; exits 2 when it is invalid.
    CheckConfig { file: PathBuf },
    /// Show the running agent's units, their state and last events.
    Status {
        /// Print the full status as JSON.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Keep watching: the tree refreshed in place, problems and actions streaming under it
        /// (plain lines, no colours, when the output is not a terminal).
        #[arg(long, short)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 1.0, requires = "watch")]
        interval: f64,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Every recorded event (exits, decisions, actions) of one unit, or of all of them.
    History {
        /// Only this unit.
        unit: Option<String>,
        /// Print the records as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Why a unit is in its current state: incident, budget, circuit, escalation, isolation.
    Explain {
        unit: String,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Clear a unit's escalation, failures, backoff and restart budget, and close its circuit.
    Reset {
        unit: String,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// End a unit's freeze or network quarantine now.
    Release {
        unit: String,
        #[command(flatten)]
        agent: AgentSocket,
    },
    // --- operator experience (events, generated docs) --------------------------------------
    /// The audit log's records (decisions and action outcomes), newest last; with --follow,
    /// new records as the agent writes them.
    Events {
        /// Keep streaming records as they are written (like `tail -f`; Ctrl-C stops).
        #[arg(long, short)]
        follow: bool,
        /// Print each record as the JSON line the agent wrote.
        #[arg(long)]
        json: bool,
        /// How many of the latest records to print first.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: usize,
        /// The audit log [default: agent.audit_log of --config, else /var/log/selfheal/actions.jsonl]
        #[arg(long)]
        log: Option<PathBuf>,
        /// Read the audit log's path from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Writes the man page or shell completions generated from these definitions (used by
    /// `cargo xtask deb`, so they never drift from the CLI).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: generate::Generated,
    },
    /// Fleet mode (etcd): `fleet status [--json]`, `fleet pause [GROUP]`, `fleet resume [GROUP]`.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
        /// The config whose `[fleet]` names etcd [default: /etc/selfheal/selfheal.toml]
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
}

/// `selfheal-agent fleet ...`: fleet mode's view and switches, straight from etcd.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Hosts alive, and per group: hosts acting, slots held, breaker state, recent actions.
    Status {
        /// Print the view as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop automated disruptive action on GROUP, or fleet-wide when no group is given.
    Pause { group: Option<String> },
    /// Undo `fleet pause` for GROUP, or fleet-wide when no group is given.
    Resume { group: Option<String> },
}

/// Where to reach the running agent.
#[derive(Debug, clap::Args)]
pub struct AgentSocket {
    /// The agent's status socket [default: agent.status_socket of --config, else /run/selfheal/agent.sock]
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Read the socket path from this config file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}
