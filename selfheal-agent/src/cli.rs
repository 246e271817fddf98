//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
        #[arg(long)]
        json: bool,
        /// The agent's status socket [default: agent.status_socket of --config, else /run/selfheal/agent.sock]
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Read the socket path from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}
