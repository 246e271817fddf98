//! Loads the embedded eBPF object, fills in kernel-specific offsets from BTF, attaches each
//! program to its hook, and hands out the maps to the parts of the agent that use them.

use std::path::Path;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
};
use log::{info, warn};
use selfheal_common::filter;
use serde::Serialize;
use thiserror::Error;

use super::{CgroupFilter, KernelCounters, btf::KernelBtf};

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
    /// Owns the loaded programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    pub filter: CgroupFilter,
    pub counters: KernelCounters,
    pub events: Option<RingBuf<MapData>>,
}

fn ensure_mounted(path: &'static str, fstype: &'static str, probe: &str) -> Result<(), LoadError> {
    if Path::new(probe).exists() {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", fstype, "nodev", path])
        .status()
        .map_err(|source| LoadError::Mount {
            what: fstype,
            path,
            source,
        })?;
    if !status.success() {
        return Err(LoadError::Mount {
            what: fstype,
            path,
            source: std::io::Error::other(format!("mount exited with {status}")),
        });
    }
    info!("mounted {fstype} at {path}");
    Ok(())
}

impl KernelSensors {
    pub fn load() -> Result<Self, LoadError> {
        ensure_mounted(
            "/sys/kernel/tracing",
            "tracefs",
            "/sys/kernel/tracing/events",
        )?;
        ensure_mounted("/sys/fs/bpf", "bpf", "/sys/fs/bpf/.").or_else(|e| {
            if is_bpffs("/sys/fs/bpf") {
                Ok(())
            } else {
                Err(e)
            }
        })?;

        let kernel_btf = KernelBtf::from_sys_fs().map_err(|e| LoadError::Btf(e.to_string()))?;
        let offset = |field| {
            kernel_btf
                .member_offset("task_struct", field)
                .map_err(|e| LoadError::Btf(e.to_string()))
        };
        let exit_code_offset = offset("exit_code")?;
        let real_parent_offset = offset("real_parent")?;
        let tgid_offset = offset("tgid")?;
        let has_group_dead = u32::from(
            kernel_btf
                .tracepoint_arg_count("sched_process_exit")
                .unwrap_or(1)
                >= 2,
        );
        drop(kernel_btf);

        let mut ebpf = EbpfLoader::new()
            .override_global("EXIT_CODE_OFFSET", &exit_code_offset, true)
            .override_global("HAS_GROUP_DEAD", &has_group_dead, true)
            .override_global("REAL_PARENT_OFFSET", &real_parent_offset, true)
            .override_global("TGID_OFFSET", &tgid_offset, true)
            .load(OBJECT)?;
        let aya_btf = Btf::from_sys_fs().map_err(|e| LoadError::Btf(e.to_string()))?;

        let mut hooks = Vec::new();
        hooks.push(attach_btf(
            &mut ebpf,
            &aya_btf,
            "sched_process_exit",
            "process exits are not seen",
        ));
        hooks.push(attach_tp(
            &mut ebpf,
            "oom_mark_victim",
            "oom",
            "mark_victim",
            "OOM kills are reported as plain SIGKILLs",
        ));
        hooks.push(attach_tp(
            &mut ebpf,
            "cgroup_mkdir",
            "cgroup",
            "cgroup_mkdir",
            "a unit's new cgroup is adopted only when systemd reports it",
        ));
        hooks.push(attach_tp(
            &mut ebpf,
            "cgroup_rmdir",
            "cgroup",
            "cgroup_rmdir",
            "removed cgroups linger in the filter until the unit is refreshed",
        ));

        let monitored =
            HashMap::try_from(take(&mut ebpf, filter::MONITORED_CGROUPS)?).map_err(|source| {
                LoadError::Map {
                    name: filter::MONITORED_CGROUPS,
                    source,
                }
            })?;
        let watched =
            HashMap::try_from(take(&mut ebpf, filter::WATCHED_PATHS)?).map_err(|source| {
                LoadError::Map {
                    name: filter::WATCHED_PATHS,
                    source,
                }
            })?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, filter::COUNTERS)?).map_err(|source| {
                LoadError::Map {
                    name: filter::COUNTERS,
                    source,
                }
            })?;
        let events = RingBuf::try_from(take(&mut ebpf, filter::EVENTS)?).map_err(|source| {
            LoadError::Map {
                name: filter::EVENTS,
                source,
            }
        })?;

        Ok(Self {
            _ebpf: ebpf,
            hooks,
            filter: CgroupFilter::new(monitored, watched),
            counters: KernelCounters::new(counters),
            events: Some(events),
        })
    }
}

fn is_bpffs(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(1) == Some(path) && l.split(' ').nth(2) == Some("bpf"))
        })
        .unwrap_or(false)
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
}

fn report(hook: &'static str, lost: &str, result: Result<(), String>) -> HookStatus {
    match result {
        Ok(()) => {
            info!("attached {hook}");
            HookStatus {
                hook,
                attached: true,
                detail: String::new(),
            }
        }
        Err(err) => {
            warn!("cannot attach {hook}: {err}; running without it: {lost}");
            HookStatus {
                hook,
                attached: false,
                detail: format!("{err}; {lost}"),
            }
        }
    }
}

fn attach_btf(ebpf: &mut Ebpf, btf: &Btf, tracepoint: &'static str, lost: &str) -> HookStatus {
    let result = (|| {
        let program: &mut BtfTracePoint = ebpf
            .program_mut(tracepoint)
            .ok_or("program missing from the object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        program
            .load(tracepoint, btf)
            .map_err(|e| format!("tp_btf/{tracepoint}: {e}"))?;
        program
            .attach()
            .map_err(|e| format!("tp_btf/{tracepoint}: {e}"))?;
        Ok(())
    })();
    report(tracepoint, lost, result.map_err(|e: String| e))
}

fn attach_tp(
    ebpf: &mut Ebpf,
    program: &'static str,
    category: &str,
    name: &str,
    lost: &str,
) -> HookStatus {
    let result = (|| {
        let tp: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or("program missing from the object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        tp.load()
            .map_err(|e| format!("tracepoint {category}:{name}: {e}"))?;
        tp.attach(category, name)
            .map_err(|e| format!("tracepoint {category}:{name}: {e}"))?;
        Ok(())
    })();
    report(program, lost, result.map_err(|e: String| e))
}
