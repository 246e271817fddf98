//! `TASK_TAGS`, a `BPF_MAP_TYPE_TASK_STORAGE` map: the tag of every task of a monitored unit.
//!
//! aya-ebpf 0.2.1 has the `bpf_task_storage_get` helper but no map type for it, so the BTF map
//! definition is written out here the way its `SkStorage` is (a `.maps` struct whose pointer
//! fields encode type, key, value, max_entries and flags in BTF). The kernel frees a task's
//! storage with the task, so nothing has to be removed on exit; userspace never writes it
//! (aya sees it as an unsupported map): the kernel programs tag tasks where they join a unit.

use core::ptr;

use aya_ebpf::{
    bindings::task_struct,
    helpers::generated::{bpf_task_storage_delete, bpf_task_storage_get},
    macros::btf_map,
};
use selfheal_common::sched::TaskTag;

const BPF_MAP_TYPE_TASK_STORAGE: usize = 29;
const BPF_F_NO_PREALLOC: usize = 1;
const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

/// Layout read by the loader from BTF: only the types of the fields matter.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC],
}

// SAFETY: placeholder pointers the loader reads from BTF, never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
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
    fn as_ptr(&self) -> *mut core::ffi::c_void {
        ptr::from_ref(self).cast_mut().cast()
    }

    /// The task's value, if it has one. `task` must be a BTF task pointer (a tp_btf argument
    /// or an iterator's task), which the verifier checks.
    #[inline(always)]
    pub fn get(&self, task: *const u8) -> Option<*mut T> {
        // SAFETY: the helper accepts any task pointer the verifier lets through.
        let value = unsafe {
            bpf_task_storage_get(
                self.as_ptr(),
                task.cast_mut().cast::<task_struct>(),
                ptr::null_mut(),
                0,
            )
        };
        (!value.is_null()).then_some(value.cast::<T>())
    }

    /// Gives the task `value`, replacing what it had.
    #[inline(always)]
    pub fn set(&self, task: *const u8, value: &T)
    where
        T: Copy,
    {
        // SAFETY: as in `get`; the value is copied in by the helper when it creates storage.
        let slot = unsafe {
            bpf_task_storage_get(
                self.as_ptr(),
                task.cast_mut().cast::<task_struct>(),
                ptr::from_ref(value).cast_mut().cast(),
                BPF_LOCAL_STORAGE_GET_F_CREATE,
            )
        };
        if !slot.is_null() {
            // SAFETY: a pointer to this task's value, valid for this program run.
            unsafe { *slot.cast::<T>() = *value };
        }
    }

    #[inline(always)]
    pub fn remove(&self, task: *const u8) {
        // SAFETY: as in `get`.
        unsafe { bpf_task_storage_delete(self.as_ptr(), task.cast_mut().cast::<task_struct>()) };
    }
}

#[btf_map]
pub static TASK_TAGS: TaskStorage<TaskTag> = TaskStorage::new();
