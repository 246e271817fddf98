//! The cgroup filter: which cgroups belong to which monitored unit.
//!
//! Two maps make it up. `MONITORED_CGROUPS` (v2 cgroup id → [`UnitRef`]) is what every probe
//! consults first; a miss means "not ours" and the probe returns at once. `WATCHED_PATHS`
//! ([`crate::path_hash::path_hash`] of a unit's cgroup path → [`UnitRef`]) lets the kernel adopt
//! a unit's cgroup — and any cgroup below it — the moment systemd creates it, before the
//! first process runs there, so that an exit right after a (re)start is never missed.

/// Map names, shared so that the agent looks up exactly what the programs declare.
pub const MONITORED_CGROUPS: &str = "MONITORED_CGROUPS";
pub const WATCHED_PATHS: &str = "WATCHED_PATHS";
pub const OOM_VICTIMS: &str = "OOM_VICTIMS";
pub const EVENTS: &str = "EVENTS";
pub const COUNTERS: &str = "COUNTERS";
pub const UNIT_SOCKETS: &str = "UNIT_SOCKETS";

/// Capacity of `MONITORED_CGROUPS`: units plus the sub-cgroups they create.
pub const MAX_MONITORED_CGROUPS: u32 = 16384;
/// Capacity of `WATCHED_PATHS`: one entry per monitored unit.
pub const MAX_WATCHED_PATHS: u32 = 4096;
/// Longest cgroup path (bytes) the kernel hashes; longer ones are left to userspace.
pub const MAX_PATH_LEN: usize = 256;

/// The monitored unit a cgroup belongs to: an index into the agent's unit table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitRef {
    pub unit: u32,
    /// 1 when the cgroup is the unit's own cgroup, 0 for a cgroup below it.
    pub is_unit_root: u32,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields, no padding.
unsafe impl aya::Pod for UnitRef {}
