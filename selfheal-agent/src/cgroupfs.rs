//! Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup on pure v2 hosts, or
//! /sys/fs/cgroup/unified on hybrid ones (v1 controllers plus a v2 tree for process tracking).

use std::path::{Path, PathBuf};

pub fn v2_root() -> PathBuf {
    let pure = Path::new("/sys/fs/cgroup");
    if pure.join("cgroup.controllers").exists() {
        pure.to_path_buf()
    } else {
        pure.join("unified")
    }
}
