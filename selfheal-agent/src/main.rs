//! selfheal-agent: parses the command line and hands over to the daemon or a CLI command.

mod cli;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser as _;
use cli::{AgentSocket, Cli, Command};
use log::warn;
use selfheal_agent::{
    config::{Config, ConfigError},
    daemon,
    report::{self, history::Record},
    systemd,
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
            config: config_arg,
            user,
            dry_run,
        } => {
            let config = match load_for_run(config_arg.as_deref()) {
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
                config_path: config_path(config_arg.as_deref()),
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
            watch: true,
            interval,
            agent,
            ..
        } => {
            let every = Duration::try_from_secs_f64(interval)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| {
                    format!("--interval {interval}: give a positive number of seconds")
                })?;
            cli::watch::watch(&agent.path()?, every).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json, agent, .. } => {
            let doc = cli::hints::query(&agent.path()?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", report::status_text::render(&doc));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { unit, json, agent } => {
            let answer = cli::hints::request(&agent.path()?, "history", unit.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print_history(&answer)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { unit, agent } => text_answer(&agent, "explain", &unit).await,
        Command::Reset { unit, agent } => text_answer(&agent, "reset", &unit).await,
        Command::Release { unit, agent } => text_answer(&agent, "release", &unit).await,
        // --- operator experience -----------------------------------------------------------
        Command::Events {
            follow,
            json,
            lines,
            log,
            config,
        } => {
            let log = match (log, config) {
                (Some(log), _) => log,
                (None, Some(config)) => Config::load(&config)?.agent.audit_log,
                (None, None) if Config::default_path().exists() => {
                    Config::load(Config::default_path())?.agent.audit_log
                }
                (None, None) => Config::default().agent.audit_log,
            };
            tokio::task::spawn_blocking(move || cli::events::events(&log, lines, follow, json))
                .await??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate { what } => {
            cli::generate::generate(&what)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fleet { command, config } => fleet_command(command, config.as_deref()).await,
    }
}

/// `fleet status | pause | resume`: reads and writes etcd directly, no agent needed.
async fn fleet_command(
    command: cli::FleetCommand,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use selfheal_agent::fleet::{client, status};
    let config = Config::load(config.unwrap_or(Config::default_path()))?.fleet;
    if !config.enabled() {
        anyhow::bail!("fleet mode is off: the config's [fleet] section names no etcd endpoints");
    }
    let mut etcd = client::connect(&config)
        .await
        .with_context(|| format!("cannot reach etcd at {}", config.endpoints.join(", ")))?;
    match command {
        cli::FleetCommand::Status { json } => {
            let view = status::read(&mut etcd, &config.name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", status::render(&view));
            }
        }
        cli::FleetCommand::Pause { group } => pause(&mut etcd, &config.name, group, true).await?,
        cli::FleetCommand::Resume { group } => pause(&mut etcd, &config.name, group, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `fleet pause` / `fleet resume`.
async fn pause(
    etcd: &mut etcd_client::Client,
    fleet: &str,
    group: Option<String>,
    pause: bool,
) -> anyhow::Result<()> {
    use selfheal_agent::fleet::status;
    let key = status::set_paused(etcd, fleet, group.as_deref(), pause).await?;
    let what = group.map_or_else(|| format!("fleet {fleet}"), |g| format!("group {g}"));
    let done = if pause {
        "paused: no automated disruptive action"
    } else {
        "resumed"
    };
    println!("{what}: {done} ({key})");
    Ok(())
}

impl AgentSocket {
    /// --socket, else the config's status socket, else the default one.
    fn path(&self) -> anyhow::Result<PathBuf> {
        Ok(match (&self.socket, &self.config) {
            (Some(socket), _) => socket.clone(),
            (None, Some(config)) => Config::load(config)?.agent.status_socket,
            (None, None) => Config::default().agent.status_socket,
        })
    }
}

/// explain, reset, release: the agent answers in words.
async fn text_answer(agent: &AgentSocket, command: &str, unit: &str) -> anyhow::Result<ExitCode> {
    let answer = cli::hints::request(&agent.path()?, command, Some(unit)).await?;
    match answer["text"].as_str() {
        Some(text) => println!("{unit}: {}", text.trim_end()),
        None => println!("{answer}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per record: "2026-11-25 21:03:04.120Z web.service: restart done after 27 ms: ...".
fn print_history(answer: &serde_json::Value) -> anyhow::Result<()> {
    let units = answer["units"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for unit in units {
        let name = unit["name"].as_str().unwrap_or("?");
        let records: Vec<Record> = serde_json::from_value(unit["history"].clone()).context(
            "the agent's history has an unexpected shape (agent and CLI versions differ?)",
        )?;
        if records.is_empty() {
            println!("{name}: nothing recorded yet");
        }
        for record in records {
            println!(
                "{} {name}: {}",
                cli::events::utc(record.at_ms),
                record.event.summary()
            );
        }
    }
    Ok(())
}

/// The file `run` reads (and reads again on SIGHUP): the one given, else the default one
/// when it exists.
fn config_path(given: Option<&Path>) -> Option<PathBuf> {
    match given {
        Some(path) => Some(path.to_owned()),
        None => Some(Config::default_path().to_owned()).filter(|p| p.exists()),
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
