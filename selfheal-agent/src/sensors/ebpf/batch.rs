//! Reading many BPF map entries in one `bpf(BPF_MAP_LOOKUP_BATCH)` call (Linux 5.6+), where
//! aya 0.14 makes a syscall per entry (its hash-map iterator two: next key, then lookup): 2,000
//! a tick for 1,000 monitored tasks, 1,000 for the per-unit aggregates of 1,000 units.

use std::{
    io,
    marker::PhantomData,
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

/// A batch read of a per-CPU array's first entries, kept by its reader from one read to the
/// next: a pass reads into the pages of the last one rather than mapping (and zeroing) fresh
/// ones, and an entry is folded only when asked for, straight from what the kernel copied out
/// (no allocation per entry).
pub struct PerCpuRead<V> {
    keys: Vec<u32>,
    values: Vec<u8>,
    /// Entries the last read filled.
    read: usize,
    cpus: usize,
    _value: PhantomData<V>,
}

impl<V: Copy> Default for PerCpuRead<V> {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
            read: 0,
            cpus: 0,
            _value: PhantomData,
        }
    }
}

/// Each CPU's value is padded to 8 bytes in what the kernel copies out.
const fn stride<V>() -> usize {
    size_of::<V>().next_multiple_of(8)
}

impl<V: Copy> PerCpuRead<V> {
    /// Reads entries `0..count` of the per-CPU array `map` whose values are `V` (`cpus`:
    /// [`possible_cpus`], as the kernel lays them out) in one call. `Err` when the kernel has
    /// no batch operations for it, and the caller reads entry by entry.
    ///
    /// `V` must be the map's own value type: plain `#[repr(C)]` data that any bytes the
    /// kernel writes are a valid value of.
    pub fn fill(&mut self, map: BorrowedFd<'_>, count: u32, cpus: usize) -> io::Result<()> {
        let entries = count as usize;
        self.read = 0;
        self.cpus = cpus;
        self.keys.resize(entries, 0);
        self.values.resize(entries * cpus * stride::<V>(), 0);
        let mut token_out = 0u64;
        let mut attr = BatchAttr {
            out_batch: &raw mut token_out as u64,
            keys: self.keys.as_mut_ptr() as u64,
            values: self.values.as_mut_ptr() as u64,
            count,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` and `values` hold `count` keys and `count` × `cpus` padded values,
        // the token 8 bytes.
        unsafe { lookup_batch(&mut attr)? };
        self.read = (attr.count as usize).min(entries);
        Ok(())
    }

    /// Entries the last [`Self::fill`] read.
    pub fn len(&self) -> usize {
        self.read
    }

    pub fn is_empty(&self) -> bool {
        self.read == 0
    }

    /// The `position`th entry read: its key and its values, a CPU each.
    pub fn entry(&self, position: usize) -> Option<(u32, PerCpu<'_, V>)> {
        if position >= self.read {
            return None;
        }
        let size = self.cpus * stride::<V>();
        let bytes = self.values.get(position * size..(position + 1) * size)?;
        Some((
            self.keys[position],
            PerCpu {
                bytes,
                _value: PhantomData,
            },
        ))
    }

    /// The values of the entry whose key is `key` (an array's keys are its indices, read in
    /// order: position and key agree).
    pub fn of(&self, key: u32) -> Option<PerCpu<'_, V>> {
        self.entry(key as usize)
            .filter(|(k, _)| *k == key)
            .map(|(_, values)| values)
    }
}

/// One entry's values in a [`PerCpuRead`], a CPU each.
#[derive(Clone, Copy)]
pub struct PerCpu<'a, V> {
    bytes: &'a [u8],
    _value: PhantomData<V>,
}

impl<V: Copy> Iterator for PerCpu<'_, V> {
    type Item = V;

    fn next(&mut self) -> Option<V> {
        if self.bytes.len() < size_of::<V>() {
            return None;
        }
        // SAFETY: at least `size_of::<V>()` bytes the kernel wrote; `V` is plain data (see
        // `PerCpuRead::fill`).
        let value = unsafe { self.bytes.as_ptr().cast::<V>().read_unaligned() };
        self.bytes = self.bytes.get(stride::<V>()..).unwrap_or_default();
        Some(value)
    }
}

/// Entries `0..count` of the per-CPU array `map` whose values are `V`, each with its index and
/// its `cpus` per-CPU values, in one call (see [`PerCpuRead::fill`]).
pub fn per_cpu_array_prefix<V: Copy>(
    map: BorrowedFd<'_>,
    count: u32,
    cpus: usize,
) -> io::Result<Vec<(u32, Vec<V>)>> {
    let mut read = PerCpuRead::<V>::default();
    read.fill(map, count, cpus)?;
    Ok((0..read.len())
        .filter_map(|position| read.entry(position))
        .map(|(key, values)| (key, values.collect()))
        .collect())
}

/// Reads the first `count` entries of a per-CPU array into `read`; false once the kernel has
/// refused batches for this map (`batch`, set false with a warning naming `name` the first
/// time): the caller then reads entry by entry.
pub fn per_cpu_array_batch<V: Copy>(
    name: &str,
    map: BorrowedFd<'_>,
    count: u32,
    batch: &std::cell::Cell<bool>,
    read: &mut PerCpuRead<V>,
) -> bool {
    if !batch.get() {
        return false;
    }
    match possible_cpus().and_then(|cpus| read.fill(map, count, cpus)) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("reading {name} in batches: {e}; reading it entry by entry from now on");
            batch.set(false);
            false
        }
    }
}
