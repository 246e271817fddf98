//! Hooks: cgroup_sock `sock_create` and `sock_release` (BPF_CGROUP_INET_SOCK_CREATE/RELEASE).
//!
//! They count live inet sockets per monitored unit, exactly: on creation the socket's cookie is
//! tied to the creating task's unit, on release the count of that unit goes down, whichever
//! process closes it. The agent attaches them to the parent cgroups (slices) of monitored units,
//! which systemd does not recreate when a unit restarts, so no socket is created before the
//! hook is there; sockets of other units in those slices cost one hash lookup.

use aya_ebpf::{
    EbpfContext as _, helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock,
    programs::SockContext,
};

use crate::maps::{SOCKET_OWNER, UNIT_SOCKETS, current_unit};

/// Return value that lets the operation proceed.
const ALLOW: i32 = 1;

#[cgroup_sock(sock_create)]
#[inline(always)]
pub fn sock_create(ctx: SockContext) -> i32 {
    if let Some((_, unit)) = current_unit() {
        // SAFETY: the context is a valid bpf_sock for this program type.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        if SOCKET_OWNER.insert(&cookie, &unit.unit, 0).is_ok() {
            add(unit.unit, 1);
        }
    }
    ALLOW
}

#[cgroup_sock(sock_release)]
#[inline(always)]
pub fn sock_release(ctx: SockContext) -> i32 {
    // SAFETY: as above.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(unit) = unsafe { SOCKET_OWNER.get(&cookie) }.copied() {
        let _ = SOCKET_OWNER.remove(&cookie);
        add(unit, -1);
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
