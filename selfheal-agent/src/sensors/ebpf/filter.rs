//! Keeps the kernel's cgroup filter in step with the monitored units.
//!
//! For each unit the agent writes the hash of the unit's cgroup path into `WATCHED_PATHS`
//! (so the kernel adopts the cgroup, and any below it, when systemd creates it) and the ids of
//! the cgroups that exist now into `MONITORED_CGROUPS`.

use std::{io, os::unix::fs::MetadataExt as _, path::Path};

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError},
    programs::{CgroupAttachMode, CgroupSock},
};
use log::{debug, warn};
use selfheal_common::{filter::UnitRef, path_hash::path_hash};

use super::TaskWalk;

pub struct CgroupFilter {
    /// The loaded programs, shared with the quarantine actuator; the last owner to drop it
    /// detaches everything.
    ebpf: Arc<Mutex<Ebpf>>,
    monitored: HashMap<MapData, u64, UnitRef>,
    watched: HashMap<MapData, u64, UnitRef>,
    /// Parent cgroups (slices) the socket-counting programs are attached to.
    sock_parents: HashSet<PathBuf>,
    walk: TaskWalk,
    /// Cgroups were watched since the last walk: their tasks wait for one (see
    /// [`Self::pending_walk`]).
    walk_pending: bool,
}

impl CgroupFilter {
    pub fn new(
        ebpf: Arc<Mutex<Ebpf>>,
        monitored: HashMap<MapData, u64, UnitRef>,
        watched: HashMap<MapData, u64, UnitRef>,
        walk: TaskWalk,
    ) -> Self {
        Self {
            ebpf,
            monitored,
            watched,
            sock_parents: HashSet::new(),
            walk,
            walk_pending: false,
        }
    }

    /// Attaches the socket-counting programs to the unit's parent cgroup, once per parent.
    /// The parent (a slice) survives the unit's restarts, so no socket escapes the count.
    fn attach_socket_counting(&mut self, unit_dir: &Path) {
        let Some(parent) = unit_dir.parent() else {
            return;
        };
        if self.sock_parents.contains(parent) {
            return;
        }
        let result = (|| -> Result<(), String> {
            let dir = std::fs::File::open(parent).map_err(|e| e.to_string())?;
            let mut ebpf = self
                .ebpf
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for name in ["sock_create", "sock_release"] {
                let program: &mut CgroupSock = ebpf
                    .program_mut(name)
                    .ok_or("program missing")?
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| e.to_string())?;
                // On 5.7+ aya attaches through a bpf_link, which always coexists with other
                // programs on the cgroup, and the kernel rejects any attach flag there: Single
                // is the mode that passes none.
                program
                    .attach(&dir, CgroupAttachMode::Single)
                    .map_err(|e| match std::error::Error::source(&e) {
                        Some(cause) => format!("{name}: {e}: {cause}"),
                        None => format!("{name}: {e}"),
                    })?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                debug!("counting sockets below {}", parent.display());
                self.sock_parents.insert(parent.to_path_buf());
            }
            Err(e) => warn!("cannot count sockets below {}: {e}", parent.display()),
        }
    }

    /// Watches `cgroup_path` (relative to the v2 root, e.g. "/system.slice/web.service") for
    /// `unit`, and adopts the cgroups that already exist there: the unit's and its descendants'.
    /// Returns the unit's own cgroup id when the directory exists.
    pub fn watch(
        &mut self,
        unit: u32,
        v2_root: &Path,
        cgroup_path: &str,
    ) -> Result<Option<u64>, MapError> {
        let cgroup_path = cgroup_path.trim_end_matches('/');
        self.watched.insert(
            path_hash(cgroup_path.as_bytes()),
            UnitRef {
                unit,
                is_unit_root: 1,
            },
            0,
        )?;
        let dir = v2_root.join(cgroup_path.trim_start_matches('/'));
        self.attach_socket_counting(&dir);
        let mut root_id = None;
        let mut stack = vec![(dir, true)];
        while let Some((dir, is_root)) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let id = meta.ino();
            self.monitored.insert(
                id,
                UnitRef {
                    unit,
                    is_unit_root: u32::from(is_root),
                },
                0,
            )?;
            if is_root {
                root_id = Some(id);
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| (e.path(), false)),
                );
            }
        }
        // The cgroups are in the filter now, so every task that joins from here on is tagged by
        // the fork and cgroup-move hooks; the walk tags those already there, once for a whole
        // batch of watches (a walk visits every task of the host).
        self.walk_pending = true;
        debug!("watching {cgroup_path} for unit #{unit} (cgroup id {root_id:?})");
        Ok(root_id)
    }

    /// The walk that tags the tasks already in the cgroups watched since the last call, if any
    /// were: the caller runs it off the async threads once its batch of watches is done.
    pub fn pending_walk(&mut self) -> Option<TaskWalk> {
        std::mem::take(&mut self.walk_pending).then(|| self.walk.clone())
    }

    /// Stops watching everything filed under `unit`: its path and its cgroups leave the
    /// filter, so the kernel reports nothing new from them (tasks already tagged keep their
    /// tag until they exit; the agent ignores records for a unit it let go).
    pub fn unwatch(&mut self, unit: u32) -> Result<(), MapError> {
        for map in [&mut self.monitored, &mut self.watched] {
            let keys: Vec<u64> = map
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, value)| value.unit == unit)
                .map(|(key, _)| key)
                .collect();
            for key in keys {
                map.remove(&key)?;
            }
        }
        debug!("unit #{unit} no longer watched");
        Ok(())
    }
}

/// The v2 cgroup id of a directory: its inode number on cgroupfs (kernfs node id).
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}
