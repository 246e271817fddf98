//! The kernel hooks selfheal attaches to, and what the agent loses without each one.

pub enum HookKind {
    /// tp_btf: `(tracepoint)`. Cheaper than a classic tracepoint, needs kernel BTF.
    BtfTracepoint(&'static str),
    /// A classic tracepoint: `(category, name)` as under /sys/kernel/tracing/events.
    Tracepoint(&'static str, &'static str),
    /// A cgroup_sock program: loaded here, attached to cgroups as units are watched.
    CgroupSock,
    /// A cgroup_skb program: loaded here, attached to a unit's cgroup when it is quarantined.
    CgroupSkb,
    /// A BPF iterator over `(kind)` objects: loaded here, run on demand (the task walk).
    Iter(&'static str),
}

pub struct Hook {
    /// The program's name in the eBPF object.
    pub program: &'static str,
    pub kind: HookKind,
    /// What the agent cannot see without this hook (told to the operator when it is missing).
    pub lost: &'static str,
}

pub const HOOKS: [Hook; 12] = [
    Hook {
        program: "sched_process_exit",
        kind: HookKind::BtfTracepoint("sched_process_exit"),
        lost: "process exits are not seen",
    },
    Hook {
        program: "sched_switch",
        kind: HookKind::BtfTracepoint("sched_switch"),
        lost: "stalls (stopped, hung, spinning, wedged, starved) are not detected",
    },
    Hook {
        program: "sched_process_fork",
        kind: HookKind::BtfTracepoint("sched_process_fork"),
        lost: "new processes and threads of a unit are tracked only after the next task walk",
    },
    Hook {
        program: "cgroup_attach_task",
        kind: HookKind::BtfTracepoint("cgroup_attach_task"),
        lost: "tasks moved into a unit are tracked only after the next task walk",
    },
    Hook {
        program: "tag_walk",
        kind: HookKind::Iter("task"),
        lost: "tasks already running when a unit is watched are not tracked for stalls",
    },
    Hook {
        program: "oom_mark_victim",
        kind: HookKind::Tracepoint("oom", "mark_victim"),
        lost: "OOM kills are reported as plain SIGKILLs",
    },
    Hook {
        program: "cgroup_mkdir",
        kind: HookKind::Tracepoint("cgroup", "cgroup_mkdir"),
        lost: "a unit's new cgroup is adopted only when systemd reports it",
    },
    Hook {
        program: "cgroup_rmdir",
        kind: HookKind::Tracepoint("cgroup", "cgroup_rmdir"),
        lost: "removed cgroups stay in the filter until the unit is refreshed",
    },
    Hook {
        program: "sock_create",
        kind: HookKind::CgroupSock,
        lost: "live socket counts (socket leaks) are not tracked",
    },
    Hook {
        program: "sock_release",
        kind: HookKind::CgroupSock,
        lost: "live socket counts (socket leaks) are not tracked",
    },
    Hook {
        program: "quarantine_ingress",
        kind: HookKind::CgroupSkb,
        lost: "network quarantine is not available",
    },
    Hook {
        program: "quarantine_egress",
        kind: HookKind::CgroupSkb,
        lost: "network quarantine is not available",
    },
];

/// Empty programs on the hot hooks, attached only for the bench (see selfheal-ebpf/src/floor.rs).
pub const FLOOR_ENV: &str = "SELFHEAL_BENCH_FLOOR";

pub const FLOOR_HOOKS: [Hook; 3] = [
    Hook {
        program: "floor_switch",
        kind: HookKind::BtfTracepoint("sched_switch"),
        lost: "no dispatch floor for sched_switch (bench only)",
    },
    Hook {
        program: "floor_fork",
        kind: HookKind::BtfTracepoint("sched_process_fork"),
        lost: "no dispatch floor for sched_process_fork (bench only)",
    },
    Hook {
        program: "floor_exit",
        kind: HookKind::BtfTracepoint("sched_process_exit"),
        lost: "no dispatch floor for sched_process_exit (bench only)",
    },
];
