//! systemd over D-Bus: the proxies, connecting to the right bus, and reading a unit's state.
//!
//! Both the unit tracker (a sensor) and the restart actuator talk to systemd; this module is
//! the one place that knows the D-Bus names.

mod proxy;
mod snapshot;

pub use proxy::{JobProxy, ManagerProxy};
pub use snapshot::{ExitStatusSet, UnitSnapshot, read_snapshot};

use thiserror::Error;

/// Which systemd instance the agent serves: the system manager (system bus) or the calling
/// user's manager (session bus), like `systemctl` and `systemctl --user`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    System,
    User,
}

#[derive(Debug, Error)]
pub enum SystemdError {
    #[error("cannot connect to the {bus} bus: {source}; {hint}")]
    Connect {
        bus: &'static str,
        hint: &'static str,
        source: zbus::Error,
    },
    #[error("systemd call {call} failed for {unit}: {source}")]
    Call {
        call: &'static str,
        unit: String,
        source: zbus::Error,
    },
}

pub async fn connect(bus: Bus) -> Result<zbus::Connection, SystemdError> {
    match bus {
        Bus::System => zbus::Connection::system().await.map_err(|source| SystemdError::Connect {
            bus: "system",
            hint: "is systemd PID 1 and dbus running? Use --user to manage a user's systemd",
            source,
        }),
        Bus::User => zbus::Connection::session().await.map_err(|source| SystemdError::Connect {
            bus: "session",
            hint: "set DBUS_SESSION_BUS_ADDRESS (and XDG_RUNTIME_DIR) to the user manager's bus",
            source,
        }),
    }
}

/// The D-Bus interface that carries `ControlGroup` and `MainPID` for a unit of this type.
pub fn type_interface(unit: &str) -> Option<&'static str> {
    let suffix = unit.rsplit_once('.')?.1;
    Some(match suffix {
        "service" => "org.freedesktop.systemd1.Service",
        "scope" => "org.freedesktop.systemd1.Scope",
        "slice" => "org.freedesktop.systemd1.Slice",
        "socket" => "org.freedesktop.systemd1.Socket",
        "mount" => "org.freedesktop.systemd1.Mount",
        "swap" => "org.freedesktop.systemd1.Swap",
        _ => return None,
    })
}

/// The PID of the service manager on the other end of the bus (1 for the system instance).
pub async fn manager_pid(conn: &zbus::Connection) -> Option<u32> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.ok()?;
    let name = zbus::names::BusName::try_from("org.freedesktop.systemd1").ok()?;
    dbus.get_connection_unix_process_id(name).await.ok()
}
