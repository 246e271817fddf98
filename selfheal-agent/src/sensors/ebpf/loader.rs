//! Loads the embedded eBPF object, fills in kernel-specific offsets from BTF, attaches each
//! program to its hook, and hands out the maps to the parts of the agent that use them.

use std::sync::{Arc, Mutex};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, CgroupSkb, CgroupSock, Iter, ProgramError, TracePoint},
};
use log::{info, warn};
use selfheal_common::{exit, filter, sched};
use serde::Serialize;
use thiserror::Error;

use super::{
    CgroupFilter, KernelCounters, SchedMaps, TaskWalk, UnitExitCounts, UnitSockets,
    btf::KernelBtf,
    hooks::{FLOOR_ENV, FLOOR_HOOKS, HOOKS, Hook, HookKind},
};

/// The object built by build.rs from the `selfheal-ebpf` crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/selfheal"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot mount {what} at {path}: {source} (the agent needs root)")]
    Mount {
        what: &'static str,
        path: &'static str,
        source: std::io::Error,
    },
    #[error(
        "reading this kernel's BTF (/sys/kernel/btf/vmlinux, needs CONFIG_DEBUG_INFO_BTF): {0}"
    )]
    Btf(String),
    #[error(
        "loading selfheal's eBPF object: {0} (the agent must run as root, or with CAP_BPF and CAP_PERFMON)"
    )]
    Load(#[from] aya::EbpfError),
    #[error("the eBPF object has no map {0}: the agent and its kernel programs are out of step")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// Whether one kernel hook is attached; shown by `selfheal-agent status`.
#[derive(Clone, Debug, Serialize)]
pub struct HookStatus {
    pub hook: &'static str,
    pub attached: bool,
    /// What is lost without it, or the attach error.
    pub detail: String,
}

pub struct KernelSensors {
    /// File systems the agent mounted itself; unmounted after the programs are gone.
    _mounts: Mounts,
    pub hooks: Vec<HookStatus>,
    pub filter: CgroupFilter,
    pub counters: KernelCounters,
    /// Per-unit exit counts: clean child exits without a record, records lost.
    pub unit_exits: Option<UnitExitCounts>,
    pub events: Option<RingBuf<MapData>>,
    pub sched: Option<SchedMaps>,
    pub unit_sockets: Option<UnitSockets>,
    /// The loaded object, for actuators that attach programs (quarantine).
    pub programs: Arc<Mutex<Ebpf>>,
}

/// Choices made when loading the programs.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Network quarantine lets loopback traffic through.
    pub quarantine_allow_loopback: bool,
}

/// Mount points the agent created, lazily unmounted when dropped so that stopping the agent
/// leaves the host's mounts as it found them.
#[derive(Default)]
struct Mounts(Vec<&'static str>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for path in self.0.drain(..).rev() {
            let Ok(c_path) = std::ffi::CString::new(path) else {
                continue;
            };
            // SAFETY: umount2 with a valid NUL-terminated path.
            if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
                info!("unmounted {path}");
            }
        }
    }
}

/// Mounts `fstype` at `path` unless it is mounted there already (tracefs for classic
/// tracepoints, bpffs for pinning; both may be missing on minimal hosts).
fn ensure_mounted(
    mounts: &mut Mounts,
    path: &'static str,
    fstype: &'static str,
) -> Result<(), LoadError> {
    if is_mounted(path, fstype) {
        return Ok(());
    }
    let c_path = std::ffi::CString::new(path).map_err(|e| LoadError::Mount {
        what: fstype,
        path,
        source: std::io::Error::other(e),
    })?;
    let c_type = std::ffi::CString::new(fstype).map_err(|e| LoadError::Mount {
        what: fstype,
        path,
        source: std::io::Error::other(e),
    })?;
    // SAFETY: mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c_path.as_ptr(),
            c_type.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let source = std::io::Error::last_os_error();
        // Someone else (another agent, the init system) may have mounted it meanwhile.
        if is_mounted(path, fstype) {
            return Ok(());
        }
        return Err(LoadError::Mount {
            what: fstype,
            path,
            source,
        });
    }
    info!("mounted {fstype} at {path}");
    mounts.0.push(path);
    Ok(())
}

fn is_mounted(path: &str, fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let mut fields = line.split(' ').skip(1);
            fields.next() == Some(path) && fields.next() == Some(fstype)
        })
    })
}

impl KernelSensors {
    pub fn load(options: LoadOptions) -> Result<Self, LoadError> {
        let mut mounts = Mounts::default();
        ensure_mounted(&mut mounts, "/sys/kernel/tracing", "tracefs")?;
        ensure_mounted(&mut mounts, "/sys/fs/bpf", "bpf")?;

        let kernel_btf = KernelBtf::from_sys_fs().map_err(|e| LoadError::Btf(e.to_string()))?;
        let offset = |field| {
            kernel_btf
                .member_offset("task_struct", field)
                .map_err(|e| LoadError::Btf(e.to_string()))
        };
        let (pid, tgid) = (offset("pid")?, offset("tgid")?);
        let (exit_code, real_parent) = (offset("exit_code")?, offset("real_parent")?);
        let struct_offset = |strukt, field| {
            kernel_btf
                .member_offset(strukt, field)
                .map_err(|e| LoadError::Btf(e.to_string()))
        };
        let (sum_exec, run_delay) = (
            offset("se.sum_exec_runtime")?,
            offset("sched_info.run_delay")?,
        );
        let bpf_storage = offset("bpf_storage")?;
        let task_cgroups = offset("cgroups")?;
        let dfl_cgrp = struct_offset("css_set", "dfl_cgrp")?;
        let (cgroup_kn, cgroup_root) = (
            struct_offset("cgroup", "kn")?,
            struct_offset("cgroup", "root")?,
        );
        let kn_id = struct_offset("kernfs_node", "id")?;
        let hierarchy_id = struct_offset("cgroup_root", "hierarchy_id")?;
        let has_group_dead = u32::from(
            kernel_btf
                .tracepoint_arg_count("sched_process_exit")
                .unwrap_or(1)
                >= 2,
        );
        drop(kernel_btf);

        let mut ebpf = EbpfLoader::new()
            // TASK_TAGS (task storage) has no aya map type; the kernel programs alone use it.
            .allow_unsupported_maps()
            .override_global("TASK_PID_OFFSET", &pid, true)
            .override_global("TASK_TGID_OFFSET", &tgid, true)
            .override_global("TASK_EXIT_CODE_OFFSET", &exit_code, true)
            .override_global("TASK_REAL_PARENT_OFFSET", &real_parent, true)
            .override_global("TASK_SUM_EXEC_OFFSET", &sum_exec, true)
            .override_global("TASK_RUN_DELAY_OFFSET", &run_delay, true)
            .override_global("TASK_BPF_STORAGE_OFFSET", &bpf_storage, true)
            .override_global("TASK_CGROUPS_OFFSET", &task_cgroups, true)
            .override_global("CSS_SET_DFL_CGRP_OFFSET", &dfl_cgrp, true)
            .override_global("CGROUP_KN_OFFSET", &cgroup_kn, true)
            .override_global("CGROUP_ROOT_OFFSET", &cgroup_root, true)
            .override_global("KERNFS_NODE_ID_OFFSET", &kn_id, true)
            .override_global("CGROUP_ROOT_HIERARCHY_ID_OFFSET", &hierarchy_id, true)
            .override_global("HAS_GROUP_DEAD", &has_group_dead, true)
            .override_global(
                "QUARANTINE_ALLOW_LOOPBACK",
                &u32::from(options.quarantine_allow_loopback),
                true,
            )
            .load(OBJECT)?;
        let aya_btf = Btf::from_sys_fs().map_err(|e| LoadError::Btf(e.to_string()))?;

        let hooks = HOOKS
            .iter()
            .map(|hook| attach(&mut ebpf, &aya_btf, hook))
            .collect();
        if std::env::var_os(FLOOR_ENV).is_some_and(|v| v == "1") {
            for hook in &FLOOR_HOOKS {
                attach(&mut ebpf, &aya_btf, hook);
            }
        }
        let monitored = HashMap::try_from(take(&mut ebpf, filter::MONITORED_CGROUPS)?)
            .map_err(map_error(filter::MONITORED_CGROUPS))?;
        let watched = HashMap::try_from(take(&mut ebpf, filter::WATCHED_PATHS)?)
            .map_err(map_error(filter::WATCHED_PATHS))?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, filter::COUNTERS)?)
            .map_err(map_error(filter::COUNTERS))?;
        let events = RingBuf::try_from(take(&mut ebpf, filter::EVENTS)?)
            .map_err(map_error(filter::EVENTS))?;
        let tasks =
            HashMap::try_from(take(&mut ebpf, sched::TASKS)?).map_err(map_error(sched::TASKS))?;
        let unit_sched = PerCpuArray::try_from(take(&mut ebpf, sched::UNIT_SCHED)?)
            .map_err(map_error(sched::UNIT_SCHED))?;

        let unit_exits = PerCpuArray::try_from(take(&mut ebpf, exit::UNIT_EXITS)?)
            .map_err(map_error(exit::UNIT_EXITS))?;
        let unit_sockets = PerCpuArray::try_from(take(&mut ebpf, filter::UNIT_SOCKETS)?)
            .map_err(map_error(filter::UNIT_SOCKETS))?;
        let programs = Arc::new(Mutex::new(ebpf));
        let walk = TaskWalk::new(programs.clone());
        Ok(Self {
            _mounts: mounts,
            hooks,
            filter: CgroupFilter::new(programs.clone(), monitored, watched, walk.clone()),
            programs,
            unit_sockets: Some(UnitSockets::new(unit_sockets)),
            counters: KernelCounters::new(counters),
            unit_exits: Some(UnitExitCounts::new(unit_exits)),
            events: Some(events),
            sched: Some(SchedMaps::new(tasks, unit_sched, walk)),
        })
    }
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
}

fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

/// Loads and attaches one program; a failure is reported, not fatal: the agent runs with
/// what the kernel offers and says what is missing.
fn attach(ebpf: &mut Ebpf, btf: &Btf, hook: &Hook) -> HookStatus {
    let result = (|| -> Result<(), String> {
        let program = ebpf
            .program_mut(hook.program)
            .ok_or_else(|| "program missing from the object".to_owned())?;
        match hook.kind {
            HookKind::BtfTracepoint(tracepoint) => {
                let program: &mut BtfTracePoint = program
                    .try_into()
                    .map_err(|e: ProgramError| e.to_string())?;
                program
                    .load(tracepoint, btf)
                    .map_err(|e| format!("tp_btf/{tracepoint}: {e}"))?;
                program
                    .attach()
                    .map_err(|e| format!("tp_btf/{tracepoint}: {e}"))?;
            }
            HookKind::CgroupSock => {
                let program: &mut CgroupSock = program
                    .try_into()
                    .map_err(|e: ProgramError| e.to_string())?;
                program
                    .load()
                    .map_err(|e| format!("cgroup_sock {}: {e}", hook.program))?;
            }
            HookKind::CgroupSkb => {
                let program: &mut CgroupSkb = program
                    .try_into()
                    .map_err(|e: ProgramError| e.to_string())?;
                program
                    .load()
                    .map_err(|e| format!("cgroup_skb {}: {e}", hook.program))?;
            }
            HookKind::Iter(kind) => {
                let program: &mut Iter = program
                    .try_into()
                    .map_err(|e: ProgramError| e.to_string())?;
                program
                    .load(kind, btf)
                    .map_err(|e| format!("iter/{kind}: {e}"))?;
            }
            HookKind::Tracepoint(category, name) => {
                let program: &mut TracePoint = program
                    .try_into()
                    .map_err(|e: ProgramError| e.to_string())?;
                program
                    .load()
                    .map_err(|e| format!("tracepoint {category}:{name}: {e}"))?;
                program
                    .attach(category, name)
                    .map_err(|e| format!("tracepoint {category}:{name}: {e}"))?;
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            info!("attached {}", hook.program);
            HookStatus {
                hook: hook.program,
                attached: true,
                detail: String::new(),
            }
        }
        Err(err) => {
            warn!(
                "cannot attach {}: {err}; running without it: {}",
                hook.program, hook.lost
            );
            HookStatus {
                hook: hook.program,
                attached: false,
                detail: format!("{err}; {}", hook.lost),
            }
        }
    }
}
