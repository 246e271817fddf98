//! selfheal-agent: parses the command line and hands over to the daemon or a CLI command.

mod cli;

use std::{path::Path, process::ExitCode};

use clap::Parser as _;
use cli::{Cli, Command};
use log::warn;
use selfheal_agent::{
    config::{Config, ConfigError},
    daemon, report, systemd,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            config,
            user,
            dry_run,
        } => {
            let config = match load_for_run(config.as_deref()) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let bus = if user {
                systemd::Bus::User
            } else {
                systemd::Bus::System
            };
            daemon::run(daemon::Options {
                config,
                bus,
                dry_run,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => Ok(match Config::load(&file) {
            Ok(config) => {
                println!("{}: ok ({} unit(s))", file.display(), config.units.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        }),
        Command::Status {
            json,
            socket,
            config,
        } => {
            let socket = match (socket, config) {
                (Some(socket), _) => socket,
                (None, Some(config)) => Config::load(&config)?.agent.status_socket,
                (None, None) => Config::default().agent.status_socket,
            };
            let doc = report::status::query(&socket).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", report::status_text::render(&doc));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The config for `run`: the given file, else the default path, else an empty config.
fn load_for_run(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None if Config::default_path().exists() => Config::load(Config::default_path()),
        None => {
            warn!(
                "no config at {}: monitoring no units (see deploy/selfheal.toml for an example)",
                Config::default_path().display()
            );
            Ok(Config::default())
        }
    }
}
