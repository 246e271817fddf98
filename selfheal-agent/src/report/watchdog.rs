//! systemd's notify protocol (`sd_notify(3)`), for `Type=notify` with `WatchdogSec=`: the agent
//! says READY=1 once it watches its units, STATUS=… as things change, WATCHDOG=1 while its
//! loop is alive, and STOPPING=1 on its way out. systemd restarts an agent whose pings stop.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd, or not `Type=notify`) everything here is
//! a no-op.

use std::{
    io,
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram},
    },
    time::Duration,
};

use log::warn;
use tokio::sync::watch;

/// Sends notifications to systemd, or nowhere when not run by it.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a no-op notifier when it is unset.
    pub fn from_env() -> io::Result<Notifier> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(path) => Notifier::to_socket(&path),
            Err(_) => Ok(Notifier::disabled()),
        }
    }

    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// `path` is a socket path, or an abstract socket name written with a leading '@'.
    pub fn to_socket(path: &str) -> io::Result<Notifier> {
        let addr = if let Some(name) = path.strip_prefix('@') {
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if path.starts_with('/') {
            SocketAddr::from_pathname(path)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET={path:?} is neither a path nor an abstract socket (@name)"),
            ));
        };
        let socket = UnixDatagram::unbound()?;
        // A datagram to a full queue must not stall the agent: drop it, systemd copes.
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            target: Some((socket, addr)),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Startup is done: systemd considers the unit started.
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// One line for `systemctl status`.
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", text.replace('\n', " ")))
    }

    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    fn send(&self, message: &str) -> io::Result<()> {
        let Some((socket, addr)) = &self.target else {
            return Ok(());
        };
        socket.send_to_addr(message.as_bytes(), addr).map(drop)
    }
}

/// How often to ping: half of `$WATCHDOG_USEC`, when the watchdog is on and meant for us.
pub fn ping_interval_from_env() -> Option<Duration> {
    ping_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// Half the timeout leaves a whole ping of slack before systemd gives up on us. A
/// `WATCHDOG_PID` naming another process means the variables were inherited, not ours.
fn ping_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|pid| pid.parse::<u32>().ok() != Some(own_pid)) {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|&usec| usec > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

/// Pings every `interval` while `alive()` says the agent's loop is making progress; when it
/// does not, the pings stop and systemd restarts the agent after `WatchdogSec`.
pub async fn keep_alive(
    notifier: &Notifier,
    interval: Duration,
    alive: impl Fn() -> bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticks.tick() => {}
        }
        if !alive() {
            warn!("the agent's loop is stuck: not pinging systemd's watchdog");
            continue;
        }
        if let Err(e) = notifier.watchdog() {
            warn!("cannot ping systemd's watchdog: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
