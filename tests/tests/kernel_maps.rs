//! The agent's batch read of a BPF hash map against a real map of the kernel: what aya's
//! per-entry iterator would return, in a few syscalls.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, FromRawFd as _, OwnedFd},
};

use selfheal_agent::sensors::ebpf::lookup_all;
use selfheal_tests::require_root;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_F_NO_PREALLOC: u32 = 1;

#[repr(C)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Value {
    a: u64,
    b: u32,
    c: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a bpf_attr prefix of the size passed.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

#[test]
fn a_hash_map_is_read_whole_in_chunks() {
    require_root!();
    let mut create = CreateAttr {
        map_type: BPF_MAP_TYPE_HASH,
        key_size: 4,
        value_size: size_of::<Value>() as u32,
        max_entries: 1024,
        // As the agent's TASKS map.
        map_flags: BPF_F_NO_PREALLOC,
    };
    let fd = bpf(BPF_MAP_CREATE, &mut create).expect("BPF_MAP_CREATE");
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    let map = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut expected = Vec::new();
    for key in 0..700u32 {
        let value = Value {
            a: u64::from(key) << 33,
            b: key * 3,
            c: !key,
        };
        let mut update = ElemAttr {
            map_fd: fd as u32,
            key: &raw const key as u64,
            value: &raw const value as u64,
            ..ElemAttr::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut update).expect("BPF_MAP_UPDATE_ELEM");
        expected.push((key, value));
    }
    // Chunks smaller than the map, one larger, and an empty end.
    for chunk in [64, 699, 700, 4096] {
        let mut all: Vec<(u32, Value)> = lookup_all(map.as_fd(), chunk).expect("batch");
        all.sort_by_key(|(k, _)| *k);
        assert_eq!(all, expected, "chunk {chunk}");
    }
}
