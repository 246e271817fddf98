//! `cargo xtask run`: the agent on this host, or a self-contained demo when the host has no
//! systemd to manage (or no config): a sandboxed `systemd --user` with misbehaving units that
//! the agent heals while printing what it sees and does. Ctrl-C tears everything down.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail};
use selfheal_tests::{Sandbox, sandbox::sweep_stale, service_unit};

use crate::{cmd, setup};

#[path = "run/fleet_demo.rs"]
mod fleet_demo;

const HOST_CONFIG: &str = "/etc/selfheal/selfheal.toml";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "the agent loads eBPF programs and manages systemd units: run `cargo xtask run` as root"
        );
    }
    setup::ensure()?;
    cmd::run(cmd::cargo().args(["build", "--bins"]))?;
    let bin = cmd::target_dir().join("debug");
    let agent = bin.join("selfheal-agent");
    if args.iter().any(|a| a == "--fleet-demo") {
        return fleet_demo::fleet_demo();
    }

    let has_config =
        Path::new(HOST_CONFIG).exists() || args.iter().any(|a| a.starts_with("--config"));
    if host_runs_systemd() && has_config {
        println!(
            "xtask run: systemd is PID 1 and a config is there; starting the agent on the system bus"
        );
        let err = Command::new(&agent).arg("run").args(args).exec();
        return Err(err).with_context(|| format!("cannot exec {}", agent.display()));
    }
    println!(
        "xtask run: {}; starting the demo: a sandboxed systemd --user with misbehaving units",
        if host_runs_systemd() {
            "no config at /etc/selfheal/selfheal.toml"
        } else {
            "systemd is not PID 1 here"
        }
    );
    demo(&agent, &bin.join("selfheal-workload"), args)
}

fn host_runs_systemd() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|comm| comm.trim() == "systemd")
}

/// The embedded default: demo units and the config that watches them.
const DEMO_CONFIG: &str = r#"
[defaults]
restart = "on-failure"

# Crashes (exit status 3) a few seconds after every start: restarted each time.
[[unit]]
name = "crashy.service"

# Healthy; kill it (`kill -9 <main pid>`) to see the agent react.
[[unit]]
name = "steady.service"
restart = "always"
"#;

/// Ctrl-C and SIGTERM set [`STOP`]; the demos stop things in order.
fn stop_on_signals() {
    let handler = request_stop as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
    // SAFETY: installing async-signal-safe handlers that only store to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn demo(agent: &Path, workload: &Path, args: &[String]) -> anyhow::Result<()> {
    stop_on_signals();
    sweep_stale();
    let sandbox = Sandbox::start("demo")?;
    let w = workload.display();
    sandbox.install_unit(
        "crashy.service",
        &service_unit(
            "selfheal demo: crashes every 4 s",
            &format!("{w} exit 3 4000"),
            &[],
        ),
    )?;
    sandbox.install_unit(
        "steady.service",
        &service_unit("selfheal demo: healthy", &format!("{w} sleep"), &[]),
    )?;
    sandbox.systemctl(&["start", "crashy.service", "steady.service"])?;

    let dir = sandbox.runtime_dir();
    let config = dir.join("selfheal.toml");
    let socket = dir.join("agent.sock");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstatus_socket = \"{}\"\nstate_dir = \"{}\"\naudit_log = \"{}\"\n{DEMO_CONFIG}",
            socket.display(),
            dir.join("state").display(),
            dir.join("actions.jsonl").display(),
        ),
    )?;
    let env = sandbox.env();
    let mut child = Command::new(agent)
        .args(["run", "--user", "--config"])
        .arg(&config)
        .args(args)
        .envs(env.iter().cloned())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        // Its own process group: Ctrl-C reaches xtask, which stops things in order.
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .context("starting selfheal-agent")?;

    let exports: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("xtask run: demo running. In another shell, as root:");
    println!("  {} status --socket {}", agent.display(), socket.display());
    println!(
        "  {} systemctl --user status crashy.service steady.service",
        exports.join(" ")
    );
    println!("xtask run: press Ctrl-C to stop the agent and tear the sandbox down");

    let exited = loop {
        if STOP.load(Ordering::SeqCst) {
            break None;
        }
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if exited.is_none() {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    drop(sandbox);
    println!("xtask run: stopped; the sandbox is gone");
    match exited {
        Some(status) if !status.success() => bail!("the agent exited with {status}"),
        _ => Ok(()),
    }
}
