//! The agent's batch reads of BPF maps against real maps of the kernel: what aya's per-entry
//! reads would return, in a few syscalls.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, FromRawFd as _, OwnedFd},
};

use selfheal_agent::sensors::ebpf::{lookup_all, per_cpu_array_prefix, possible_cpus};
use selfheal_tests::require_root;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
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

#[test]
fn a_per_cpu_array_prefix_is_read_in_one_call_with_every_cpus_value() {
    require_root!();
    let cpus = possible_cpus().expect("the possible CPUs");
    // 12 bytes: each CPU's value is padded to 16 in what the kernel copies in and out.
    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Slot {
        a: u64,
        b: u32,
    }
    let stride = size_of::<Slot>().next_multiple_of(8);
    let mut create = CreateAttr {
        map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
        key_size: 4,
        value_size: size_of::<Slot>() as u32,
        max_entries: 64,
        map_flags: 0,
    };
    let fd = bpf(BPF_MAP_CREATE, &mut create).expect("BPF_MAP_CREATE");
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    let map = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let slot = |index: u32, cpu: usize| Slot {
        a: (u64::from(index) << 20) + cpu as u64,
        b: index * 7 + cpu as u32,
    };
    for index in 0..10u32 {
        let mut bytes = vec![0u8; cpus * stride];
        for cpu in 0..cpus {
            let value = slot(index, cpu);
            // SAFETY: plain data copied into a buffer with room for it.
            unsafe {
                bytes
                    .as_mut_ptr()
                    .add(cpu * stride)
                    .cast::<Slot>()
                    .write_unaligned(value)
            };
        }
        let mut update = ElemAttr {
            map_fd: fd as u32,
            key: &raw const index as u64,
            value: bytes.as_ptr() as u64,
            ..ElemAttr::default()
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut update).expect("BPF_MAP_UPDATE_ELEM");
    }
    let read: Vec<(u32, Vec<Slot>)> = per_cpu_array_prefix(map.as_fd(), 10, cpus).expect("batch");
    let expected: Vec<(u32, Vec<Slot>)> = (0..10)
        .map(|index| (index, (0..cpus).map(|cpu| slot(index, cpu)).collect()))
        .collect();
    assert_eq!(read, expected);
    // Past the end of the array: what there is, and no error.
    let all: Vec<(u32, Vec<Slot>)> = per_cpu_array_prefix(map.as_fd(), 100, cpus).expect("batch");
    assert_eq!(all.len(), 64);
    assert_eq!(all[..10], expected[..]);
}
