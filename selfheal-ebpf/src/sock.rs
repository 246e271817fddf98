//! Hooks: cgroup_sock `sock_create` and `sock_release` (BPF_CGROUP_INET_SOCK_CREATE/RELEASE).
//!
//! They count live inet sockets per monitored unit, exactly: on creation the socket is tied to
//! the creating task's unit in its own storage (`SOCKET_OWNER`, socket-local), on release the
//! count of that unit goes down, whichever process closes it. Releasing any other socket costs
//! one socket-storage miss (a NULL check), with no hashing and no preallocated table. The agent attaches them to the parent cgroups (slices) of monitored units,
//! which systemd does not recreate when a unit restarts, so no socket is created before the
//! hook is there; sockets created by other units in those slices cost one cgroup lookup.

use aya_ebpf::{EbpfContext as _, macros::cgroup_sock, programs::SockContext};

use crate::{
    local_storage::SOCKET_OWNER,
    maps::{UNIT_SOCKETS, current_unit},
};

/// Return value that lets the operation proceed.
const ALLOW: i32 = 1;

#[cgroup_sock(sock_create)]
#[inline(always)]
pub fn sock_create(ctx: SockContext) -> i32 {
    if let Some((_, unit)) = current_unit()
        && SOCKET_OWNER.insert(ctx.as_ptr(), &unit.unit)
    {
        add(unit.unit, 1);
    }
    ALLOW
}

#[cgroup_sock(sock_release)]
#[inline(always)]
pub fn sock_release(ctx: SockContext) -> i32 {
    if let Some(unit) = SOCKET_OWNER.get(ctx.as_ptr()) {
        // SAFETY: the socket's own storage, valid for this program run; freed with the socket.
        add(unsafe { *unit }, -1);
    }
    ALLOW
}

#[inline(always)]
fn add(unit: u32, delta: i64) {
    if let Some(count) = UNIT_SOCKETS.get_ptr_mut(unit) {
        // SAFETY: per-CPU slot; a socket created on one CPU may be released on another, so
        // only the sum over CPUs is meaningful (userspace sums).
        unsafe { *count += delta };
    }
}
