//! Hooks: cgroup_skb `ingress` and `egress`, attached by the agent to the cgroup of a unit it
//! isolates (network quarantine) and detached on release. They drop every packet of the unit;
//! with `QUARANTINE_ALLOW_LOOPBACK` set, packets to or from 127.0.0.0/8 and ::1 still pass,
//! so local health checks and the agent's own probes keep working.
//!
//! `__sk_buff` fields used: `family`, `remote_ip4`, `remote_ip6`, which cgroup_skb programs may
//! read (the peer for both directions).

use aya_ebpf::{macros::cgroup_skb, programs::SkBuffContext};

/// 1: let loopback traffic through (set by the agent from its config).
#[unsafe(no_mangle)]
static QUARANTINE_ALLOW_LOOPBACK: u32 = 0;

const DROP: i32 = 0;
const PASS: i32 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[cgroup_skb(ingress)]
#[inline(always)]
pub fn quarantine_ingress(ctx: SkBuffContext) -> i32 {
    verdict(&ctx)
}

#[cgroup_skb(egress)]
#[inline(always)]
pub fn quarantine_egress(ctx: SkBuffContext) -> i32 {
    verdict(&ctx)
}

#[inline(always)]
fn verdict(ctx: &SkBuffContext) -> i32 {
    // SAFETY: a plain integer global, written by the loader before any program runs.
    let allow_loopback = unsafe { core::ptr::read_volatile(&QUARANTINE_ALLOW_LOOPBACK) } != 0;
    if allow_loopback && is_loopback(ctx) {
        PASS
    } else {
        DROP
    }
}

#[inline(always)]
fn is_loopback(ctx: &SkBuffContext) -> bool {
    match ctx.skb.family() {
        // remote_ip4 is in network byte order: 127.x.x.x has 127 in its first byte.
        AF_INET => ctx.skb.remote_ipv4().to_ne_bytes()[0] == 127,
        AF_INET6 => {
            let ip = ctx.skb.remote_ipv6();
            ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && u32::from_be(ip[3]) == 1
        }
        _ => false,
    }
}
