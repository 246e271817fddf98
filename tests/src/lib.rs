//! selfheal's integration harness.
//!
//! [`sandbox::Sandbox`] runs a private D-Bus and a real `systemd --user` in a cgroup of their own, so
//! privileged tests (and `cargo xtask run`) exercise the agent against a real manager and the real
//! kernel without touching the host's units. The `selfheal-workload` binary provides the services
//! those tests run; [`workload_bin`] finds it.

use std::path::PathBuf;

pub mod agent;
pub mod cgroupfs;
pub mod etcd;
pub mod fleet;
pub mod require;
pub mod sandbox;
pub mod soak;
mod unit;
pub mod workloads;

pub use sandbox::Sandbox;
pub use unit::service_unit;

/// The name of the workload binary built from `src/bin/selfheal-workload.rs`.
const WORKLOAD: &str = "selfheal-workload";

/// Path of the `selfheal-workload` binary.
///
/// `SELFHEAL_WORKLOAD` wins when set; otherwise the binary is looked up next to the current
/// executable (`target/<profile>/`), or one level up for test binaries in `target/<profile>/deps/`.
///
/// # Panics
/// When the binary does not exist: cargo only builds it for this package's own tests, so other
/// crates' tests need it built first.
pub fn workload_bin() -> PathBuf {
    let path = match std::env::var_os("SELFHEAL_WORKLOAD") {
        Some(path) => PathBuf::from(path),
        None => sibling_of_current_exe(WORKLOAD),
    };
    assert!(
        path.is_file(),
        "the test workload {} does not exist: build it with `cargo build -p selfheal-tests` \
         (same profile and target dir as the tests), or point SELFHEAL_WORKLOAD at it",
        path.display()
    );
    path
}

/// `name` in the directory of the current executable: `target/<profile>/`, also for test
/// binaries, which live one level down in `target/<profile>/deps/`.
pub(crate) fn sibling_of_current_exe(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the current executable");
    let mut dir = exe
        .parent()
        .expect("an executable lives in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}
