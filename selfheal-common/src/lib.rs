//! Types that cross the kernel/userspace boundary, defined once for both sides.
//!
//! Everything here is `#[repr(C)]`, `Copy`, with explicit padding and no `bool`, so that the
//! eBPF programs (`selfheal-ebpf`) and the agent (`selfheal-agent`) can never disagree on a
//! layout. With the `user` feature the types implement `aya::Pod` so the agent can read them
//! from maps and ring buffers.
#![no_std]

pub mod counters;
pub mod exit;
pub mod filter;
pub mod path_hash;
pub mod sched;
