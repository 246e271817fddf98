//! Hooks: tracepoints `cgroup:cgroup_mkdir` and `cgroup:cgroup_rmdir`.
//!
//! Format (6.x, both events): `int root` @8 (hierarchy id; the v2 hierarchy is 0), `int level`
//! @12, `u64 id` @16 (the kernfs id that `bpf_get_current_cgroup_id()` returns), and
//! `__data_loc char[] path` @24 (offset in the low 16 bits, length in the high 16), the path
//! relative to the hierarchy root — the same form as systemd's `ControlGroup` property.
//!
//! When systemd (re)starts a unit it creates the unit's cgroup, then forks into it. Adopting
//! the cgroup here, synchronously, means the filter is right before the first process of the
//! new incarnation runs: an immediate crash after a restart is still seen. Cgroup creation is
//! rare, so hashing the path costs nothing that matters.

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_probe_read_kernel_str_bytes, macros::tracepoint,
    programs::TracePointContext,
};
use selfheal_common::{
    counters::Counter,
    filter::{MAX_PATH_LEN, UnitRef},
    path_hash::{FNV_OFFSET, fold},
};

use crate::maps::{MONITORED_CGROUPS, PATH_SCRATCH, WATCHED_PATHS, count};

const ROOT_OFFSET: usize = 8;
const ID_OFFSET: usize = 16;
const PATH_LOC_OFFSET: usize = 24;
/// `cgrp_dfl_root.hierarchy_id`: the v2 hierarchy, as in the `0::` line of /proc/PID/cgroup.
const V2_HIERARCHY: i32 = 0;

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
#[inline(always)]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let _ = try_cgroup_mkdir(&ctx);
    0
}

#[inline(always)]
fn try_cgroup_mkdir(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: offsets of this tracepoint's record, see the module comment.
    let root: i32 = unsafe { ctx.read_at(ROOT_OFFSET)? };
    if root != V2_HIERARCHY {
        return Ok(());
    }
    // SAFETY: as above.
    let id: u64 = unsafe { ctx.read_at(ID_OFFSET)? };
    // SAFETY: as above.
    let loc: u32 = unsafe { ctx.read_at(PATH_LOC_OFFSET)? };
    let path_offset = (loc & 0xffff) as usize;

    let buf = PATH_SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch buffer, exclusively ours for the duration of this program.
    let buf = unsafe { &mut *buf };
    // SAFETY: the path lives inside the tracepoint record the context points to.
    let len = unsafe {
        bpf_probe_read_kernel_str_bytes(ctx.as_ptr().cast::<u8>().add(path_offset), buf)?
    }
    .len();
    if len >= MAX_PATH_LEN - 1 {
        count(Counter::PathsTooLong);
        return Ok(());
    }

    // Hash the path once; at each '/' the hash so far is that of an ancestor's path, so a
    // cgroup created anywhere below a watched unit is adopted too.
    // The loop ends at the NUL the helper wrote (at `len`), not at `i >= len`: bounded by
    // `len`, LLVM counts down from it beside the pointer, and the 6.1 verifier, which cannot
    // relate the two, rejects the program (`invalid access to map value, off=256`).
    let mut hash = FNV_OFFSET;
    for i in 0..MAX_PATH_LEN {
        let byte = buf[i];
        if byte == 0 {
            break;
        }
        if byte == b'/' && i > 0 {
            // SAFETY: copied out at once.
            if let Some(unit) = unsafe { WATCHED_PATHS.get(&hash) }.copied() {
                adopt(
                    id,
                    UnitRef {
                        unit: unit.unit,
                        is_unit_root: 0,
                    },
                );
                return Ok(());
            }
        }
        hash = fold(hash, byte);
    }
    // SAFETY: copied out at once.
    if let Some(unit) = unsafe { WATCHED_PATHS.get(&hash) }.copied() {
        adopt(
            id,
            UnitRef {
                unit: unit.unit,
                is_unit_root: 1,
            },
        );
    }
    Ok(())
}

fn adopt(id: u64, unit: UnitRef) {
    if MONITORED_CGROUPS.insert(&id, &unit, 0).is_ok() {
        count(Counter::CgroupsAdopted);
    }
}

#[tracepoint(category = "cgroup", name = "cgroup_rmdir")]
#[inline(always)]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets of this tracepoint's record, see the module comment.
    let (Ok(root), Ok(id)) = (unsafe { ctx.read_at::<i32>(ROOT_OFFSET) }, unsafe {
        ctx.read_at::<u64>(ID_OFFSET)
    }) else {
        return 0;
    };
    if root == V2_HIERARCHY && MONITORED_CGROUPS.remove(&id).is_ok() {
        count(Counter::CgroupsReleased);
    }
    0
}
