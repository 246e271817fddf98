//! Runs the `iter/task` program `tag_walk`, which tags every task of a monitored cgroup and
//! untags the tasks that left them (see selfheal-ebpf/src/tag.rs). The scheduler hook only
//! looks at tagged tasks, and the fork and cgroup-move hooks tag tasks as they join a unit;
//! the walk covers what those hooks cannot see: tasks already in a unit's cgroup when it
//! starts being watched, and the threads of a process moved as a whole.

use std::{
    io::Read as _,
    sync::{Arc, Mutex, PoisonError},
};

use aya::{Ebpf, programs::Iter};
use log::warn;
use selfheal_common::sched::TAG_WALK;

#[derive(Clone)]
pub struct TaskWalk {
    ebpf: Arc<Mutex<Ebpf>>,
}

impl TaskWalk {
    pub fn new(ebpf: Arc<Mutex<Ebpf>>) -> Self {
        Self { ebpf }
    }

    /// Walks every task of the host once (a few hundred microseconds for thousands of
    /// tasks). Reading the iterator to its end is what runs the program.
    pub fn run(&self) -> Result<(), String> {
        let mut file = {
            let mut ebpf = self.ebpf.lock().unwrap_or_else(PoisonError::into_inner);
            let program: &mut Iter = ebpf
                .program_mut(TAG_WALK)
                .ok_or("program missing from the object")?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| e.to_string())?;
            let link = program.attach().map_err(|e| e.to_string())?;
            let link = program.take_link(link).map_err(|e| e.to_string())?;
            link.into_file().map_err(|e| e.to_string())?
        };
        // The walk runs as the file is read, without the object's lock: the other users of
        // the object (attaching hooks, reading maps) do not wait for it.
        let mut sink = Vec::new();
        file.read_to_end(&mut sink).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// [`Self::run`], logging a failure: without the walk the probes still tag every task
    /// that forks or moves into a unit, so the agent goes on.
    pub fn run_or_warn(&self, why: &str) {
        if let Err(e) = self.run() {
            warn!("task walk ({why}): {e}; tasks that predate it are not tracked for stalls");
        }
    }
}
