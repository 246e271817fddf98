//! The kernel side of the agent: loading selfheal's eBPF programs, keeping their cgroup filter
//! current, and reading what they report.

mod batch;
mod btf;
mod counters;
mod events;
mod filter;
mod hooks;
mod loader;
mod sched;
mod unit_sockets;
mod walk;

pub use batch::{
    PerCpu, PerCpuRead, lookup_all, per_cpu_array_batch, per_cpu_array_prefix, possible_cpus,
};
pub use btf::KernelBtf;
pub use counters::{KernelCounters, UnitExitCounts};
pub use events::read_exit_events;
pub use filter::{CgroupFilter, cgroup_id};
pub use loader::{HookStatus, KernelSensors, LoadOptions};
pub use sched::{SchedMaps, UnitAggregate, UnitTable, monotonic_ns};
pub use unit_sockets::UnitSockets;
pub use walk::TaskWalk;
