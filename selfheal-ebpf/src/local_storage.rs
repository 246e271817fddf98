//! Object-local storage maps: `TASK_TAGS` (`BPF_MAP_TYPE_TASK_STORAGE`), the tag of every task
//! of a monitored unit, and `SOCKET_OWNER` (`BPF_MAP_TYPE_SK_STORAGE`), the unit that created
//! an inet socket. The value lives in the object itself: a task or socket without one costs a
//! NULL check to look up, nothing is preallocated, and the kernel frees it with the object.
//!
//! aya-ebpf 0.2.1 has the helpers but no task storage map type, and its `SkStorage` only takes
//! a `sock_addr` context, so the BTF map definition is written out here the way its own
//! storage maps are (a `.maps` struct whose pointer fields encode type, key, value,
//! max_entries and flags in BTF). Userspace never touches them (aya sees TASK_TAGS as an
//! unsupported map): the kernel programs tag tasks and sockets where they join a unit.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::task_struct,
    helpers::generated::{bpf_sk_storage_get, bpf_task_storage_delete, bpf_task_storage_get},
    macros::btf_map,
};
use selfheal_common::sched::TaskTag;

const BPF_MAP_TYPE_SK_STORAGE: usize = 24;
const BPF_MAP_TYPE_TASK_STORAGE: usize = 29;
const BPF_F_NO_PREALLOC: usize = 1;
const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

/// Layout read by the loader from BTF: only the types of the fields matter.
#[repr(C)]
pub struct LocalStorage<T, const MAP_TYPE: usize> {
    r#type: *const [i32; MAP_TYPE],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC],
}

// SAFETY: placeholder pointers the loader reads from BTF, never dereferenced.
unsafe impl<T, const MAP_TYPE: usize> Sync for LocalStorage<T, MAP_TYPE> {}

impl<T: Copy, const MAP_TYPE: usize> LocalStorage<T, MAP_TYPE> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    #[inline(always)]
    fn as_ptr(&self) -> *mut c_void {
        ptr::from_ref(self).cast_mut().cast()
    }

    /// `helper(map, object, init, flags)`: the value, created from `init` with
    /// `BPF_LOCAL_STORAGE_GET_F_CREATE`.
    #[inline(always)]
    fn lookup(
        &self,
        helper: impl FnOnce(*mut c_void, *mut c_void, u64) -> *mut c_void,
        init: Option<&T>,
    ) -> Option<*mut T> {
        let (init, flags) = match init {
            Some(init) => (
                ptr::from_ref(init).cast_mut().cast(),
                BPF_LOCAL_STORAGE_GET_F_CREATE,
            ),
            None => (ptr::null_mut(), 0),
        };
        let value = helper(self.as_ptr(), init, flags);
        (!value.is_null()).then_some(value.cast::<T>())
    }
}

pub type TaskStorage<T> = LocalStorage<T, BPF_MAP_TYPE_TASK_STORAGE>;
pub type SkStorage<T> = LocalStorage<T, BPF_MAP_TYPE_SK_STORAGE>;

impl<T: Copy> TaskStorage<T> {
    /// `task` must be a BTF task pointer (a tp_btf argument or an iterator's task), which the
    /// verifier checks.
    #[inline(always)]
    fn task_helper(task: *const u8) -> impl FnOnce(*mut c_void, *mut c_void, u64) -> *mut c_void {
        move |map, init, flags| {
            // SAFETY: the helper accepts any task pointer the verifier lets through.
            unsafe { bpf_task_storage_get(map, task.cast_mut().cast::<task_struct>(), init, flags) }
        }
    }

    /// The task's value, if it has one.
    #[inline(always)]
    pub fn get(&self, task: *const u8) -> Option<*mut T> {
        self.lookup(Self::task_helper(task), None)
    }

    /// Gives the task `value`, replacing what it had.
    #[inline(always)]
    pub fn set(&self, task: *const u8, value: &T) {
        if let Some(slot) = self.lookup(Self::task_helper(task), Some(value)) {
            // SAFETY: a pointer to this task's value, valid for this program run.
            unsafe { *slot = *value };
        }
    }

    #[inline(always)]
    pub fn remove(&self, task: *const u8) {
        // SAFETY: as in `task_helper`.
        unsafe { bpf_task_storage_delete(self.as_ptr(), task.cast_mut().cast::<task_struct>()) };
    }
}

impl<T: Copy> SkStorage<T> {
    /// `ctx` must be a cgroup_sock program's context (a `struct sock` the kernel gives it).
    #[inline(always)]
    fn sk_helper(ctx: *mut c_void) -> impl FnOnce(*mut c_void, *mut c_void, u64) -> *mut c_void {
        // SAFETY: bpf_sk_storage_get takes the context of cgroup_sock programs as its socket.
        move |map, init, flags| unsafe { bpf_sk_storage_get(map, ctx, init, flags) }
    }

    /// The socket's value, if it has one.
    #[inline(always)]
    pub fn get(&self, ctx: *mut c_void) -> Option<*mut T> {
        self.lookup(Self::sk_helper(ctx), None)
    }

    /// Gives the socket `value` if it has none; false when the kernel could not allocate it.
    #[inline(always)]
    pub fn insert(&self, ctx: *mut c_void, value: &T) -> bool {
        self.lookup(Self::sk_helper(ctx), Some(value)).is_some()
    }
}

#[btf_map]
pub static TASK_TAGS: TaskStorage<TaskTag> = TaskStorage::new();

/// Socket → index of the unit that created it, for the inet sockets of monitored units.
#[btf_map]
pub static SOCKET_OWNER: SkStorage<u32> = SkStorage::new();
