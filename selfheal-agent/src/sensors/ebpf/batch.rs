//! Reading many BPF map entries in one `bpf(BPF_MAP_LOOKUP_BATCH)` call (Linux 5.6+), where
//! aya 0.14 makes a syscall per entry (its hash-map iterator two: next key, then lookup): 2,000
//! a tick for 1,000 monitored tasks, 1,000 for the per-unit aggregates of 1,000 units.

use std::{
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `enum bpf_cmd` in the kernel's uapi/linux/bpf.h.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The CPUs the kernel may bring up: how many values a per-CPU map holds per entry.
pub fn possible_cpus() -> io::Result<usize> {
    aya::util::nr_cpus().map_err(|(what, e)| io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// One `BPF_MAP_LOOKUP_BATCH` call; true when it reached the end of the map (`ENOENT`, with
/// `attr.count` saying how many entries this last call read).
///
/// # Safety
/// The buffers `attr` points to must hold `attr.count` keys and values of the map's sizes
/// (per-CPU values: one padded value per possible CPU), and the batch tokens 8 bytes.
unsafe fn lookup_batch(attr: &mut BatchAttr) -> io::Result<bool> {
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; the caller vouches for the
    // buffers it points to.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>(),
        )
    };
    if ret >= 0 {
        return Ok(false);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::ENOENT) => Ok(true),
        _ => Err(error),
    }
}

/// Every entry of the (non-per-CPU) hash map `map`, whose keys are `K` and values `V`, read
/// `chunk` entries a call. `Err` when the kernel has no batch operations for it (before 5.6:
/// `EINVAL`), and the caller reads it entry by entry instead.
///
/// `K` and `V` must be the map's own key and value types: plain `#[repr(C)]` data that any
/// bytes the kernel writes are a valid value of.
pub fn lookup_all<K: Copy, V: Copy>(map: BorrowedFd<'_>, chunk: usize) -> io::Result<Vec<(K, V)>> {
    let chunk = chunk.max(1);
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(chunk);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(chunk);
    // SAFETY: MaybeUninit needs no initialisation; the kernel writes what `count` says.
    unsafe {
        keys.set_len(chunk);
        values.set_len(chunk);
    }
    // The position in the map the kernel hands back (a bucket number for hash maps): 8 bytes
    // are room for any of them.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    let mut found = Vec::new();
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const token_in as u64 },
            out_batch: &raw mut token_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).unwrap_or(u32::MAX),
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` and `values` hold `count` entries of the map's key and value sizes,
        // and the tokens 8 bytes.
        let done = unsafe { lookup_batch(&mut attr)? };
        let read = (attr.count as usize).min(chunk);
        found.extend(
            keys[..read]
                .iter()
                .zip(&values[..read])
                // SAFETY: the kernel wrote the first `read` keys and values.
                .map(|(k, v)| unsafe { (k.assume_init(), v.assume_init()) }),
        );
        if done {
            return Ok(found);
        }
        token_in = token_out;
        first = false;
    }
}

/// Entries `0..count` of the per-CPU array `map` whose values are `V`, each with its index and
/// its `cpus` per-CPU values (`cpus`: [`possible_cpus`], as the kernel lays them out), in one
/// call. `Err` when the kernel has no batch operations for it, and the caller reads entry by
/// entry.
///
/// `V` must be the map's own value type: plain `#[repr(C)]` data that any bytes the kernel
/// writes are a valid value of.
pub fn per_cpu_array_prefix<V: Copy>(
    map: BorrowedFd<'_>,
    count: u32,
    cpus: usize,
) -> io::Result<Vec<(u32, Vec<V>)>> {
    // Each CPU's value is padded to 8 bytes in what the kernel copies out.
    let stride = size_of::<V>().next_multiple_of(8);
    let entries = count as usize;
    let mut keys = vec![0u32; entries];
    let mut values = vec![0u8; entries * cpus * stride];
    let mut token_out = 0u64;
    let mut attr = BatchAttr {
        out_batch: &raw mut token_out as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `keys` and `values` hold `count` keys and `count` × `cpus` padded values, the
    // token 8 bytes.
    unsafe { lookup_batch(&mut attr)? };
    let read = (attr.count as usize).min(entries);
    Ok((0..read)
        .map(|entry| {
            let per_cpu = (0..cpus)
                .map(|cpu| {
                    let at = (entry * cpus + cpu) * stride;
                    // SAFETY: `at + size_of::<V>()` is within `values`, which the kernel filled
                    // for the first `read` entries; `V` is plain data (see above).
                    unsafe { values.as_ptr().add(at).cast::<V>().read_unaligned() }
                })
                .collect();
            (keys[entry], per_cpu)
        })
        .collect())
}

/// The first `count` entries of a per-CPU array folded by `fold` (each entry's values, one per
/// CPU), indexed by key, in one batch read. `None` once the kernel has refused batches for this
/// map (`batch`, set false with a warning naming `name` the first time): the caller then reads
/// entry by entry.
pub fn per_cpu_array_folded<V: Copy, T: Clone + Default>(
    name: &str,
    map: BorrowedFd<'_>,
    count: u32,
    batch: &std::cell::Cell<bool>,
    fold: impl Fn(&[V]) -> T,
) -> Option<Vec<T>> {
    if !batch.get() {
        return None;
    }
    let read = possible_cpus().and_then(|cpus| per_cpu_array_prefix::<V>(map, count, cpus));
    match read {
        Ok(entries) => {
            let mut by_key = vec![T::default(); count as usize];
            for (key, per_cpu) in entries {
                if let Some(slot) = by_key.get_mut(key as usize) {
                    *slot = fold(&per_cpu);
                }
            }
            Some(by_key)
        }
        Err(e) => {
            log::warn!("reading {name} in batches: {e}; reading it entry by entry from now on");
            batch.set(false);
            None
        }
    }
}
