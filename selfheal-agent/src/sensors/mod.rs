//! Sensors turn raw data (kernel ring buffers and maps, procfs, cgroupfs, systemd's view) into
//! observations.

pub mod cgroup_stats;
pub mod cgroup_v1;
pub mod ebpf;
pub mod probes;
pub mod procfs;
pub mod resources;
pub mod sched;
pub mod sockets;
pub mod tcp_tables;
