//! Keeps the kernel's cgroup filter in step with the monitored units.
//!
//! For each unit the agent writes the hash of the unit's cgroup path into `WATCHED_PATHS`
//! (so the kernel adopts the cgroup, and any below it, when systemd creates it) and the ids of
//! the cgroups that exist now into `MONITORED_CGROUPS`.

use std::{io, os::unix::fs::MetadataExt as _, path::Path};

use aya::maps::{HashMap, MapData, MapError};
use log::debug;
use selfheal_common::{filter::UnitRef, path_hash::path_hash};

pub struct CgroupFilter {
    monitored: HashMap<MapData, u64, UnitRef>,
    watched: HashMap<MapData, u64, UnitRef>,
}

impl CgroupFilter {
    pub fn new(
        monitored: HashMap<MapData, u64, UnitRef>,
        watched: HashMap<MapData, u64, UnitRef>,
    ) -> Self {
        Self { monitored, watched }
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
        debug!("watching {cgroup_path} for unit #{unit} (cgroup id {root_id:?})");
        Ok(root_id)
    }
}

/// The v2 cgroup id of a directory: its inode number on cgroupfs (kernfs node id).
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}
