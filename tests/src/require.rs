//! Preconditions of privileged tests, checked up front so a missing one fails with a clear message
//! instead of an obscure EPERM deep inside a test.

/// Panics unless the process runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "selfheal's privileged tests need root: they load eBPF programs, create cgroups and start \
         systemd; run them with `sudo cargo xtask test`"
    );
}
