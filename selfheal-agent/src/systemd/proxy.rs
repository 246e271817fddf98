//! zbus proxies for the parts of org.freedesktop.systemd1 the agent uses.

use zbus::{
    proxy,
    zvariant::{ObjectPath, OwnedObjectPath},
};

/// One row of `ListUnits`.
pub type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    /// Asks systemd to emit unit and job signals to us.
    fn subscribe(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Every unit systemd has loaded: name, description, load, active and sub state, followed
    /// unit, object path, job id, type and path.
    fn list_units(&self) -> zbus::Result<Vec<ListedUnit>>;
    /// "enabled", "static", "indirect"…; an error when no unit file backs the name.
    fn get_unit_file_state(&self, name: &str) -> zbus::Result<String>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn freeze_unit(&self, name: &str) -> zbus::Result<()>;
    fn thaw_unit(&self, name: &str) -> zbus::Result<()>;
    /// `whom`: "main", "control" or "all" processes of the unit.
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;
    fn set_unit_properties(
        &self,
        name: &str,
        runtime: bool,
        properties: &[(&str, zbus::zvariant::Value<'_>)],
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    fn job_new(&self, id: u32, job: ObjectPath<'_>, unit: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
    #[zbus(signal)]
    fn unit_new(&self, id: &str, unit: ObjectPath<'_>) -> zbus::Result<()>;
    #[zbus(signal)]
    fn unit_removed(&self, id: &str, unit: ObjectPath<'_>) -> zbus::Result<()>;
    /// `active == false` when a daemon-reload finished: unit files may have appeared.
    #[zbus(signal)]
    fn reloading(&self, active: bool) -> zbus::Result<()>;

    /// The manager's own root cgroup ("" for the system instance).
    #[zbus(property)]
    fn control_group(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Job",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Job {
    #[zbus(property)]
    fn job_type(&self) -> zbus::Result<String>;
}
