//! Preconditions of privileged tests, checked up front.
//!
//! Two tiers. Under plain `cargo test` (a developer, maybe without root) a test whose
//! precondition is missing does not run: it says so on stderr at once, naming itself and the
//! reason, and the test binary ends with the count and the list of what it did not run. Under
//! `cargo xtask test` (CI, as root) [`STRICT_ENV`] is set and a missing precondition fails the
//! test with the same reason, so nothing is skipped there.
//!
//! The notes go straight to the stderr file descriptor: libtest captures `eprintln!` of passing
//! tests, and a skip must never be silent.

use std::{
    io::Write as _,
    sync::{Mutex, Once, PoisonError},
};

/// Set (to anything) by `cargo xtask test`: a missing precondition is then a failure.
pub const STRICT_ENV: &str = "SELFHEAL_STRICT_PRECONDITIONS";

/// When set, every skipped test also appends `name\treason` to this file, so `cargo xtask
/// test` can total them over all test binaries.
pub const SKIP_LOG_ENV: &str = "SELFHEAL_SKIP_LOG";

const ROOT_REASON: &str = "needs root (loads eBPF programs, creates cgroups, starts systemd)";

/// Returns early from the test (as a pass that is announced, counted and listed) when the
/// process is not root, or fails it under [`STRICT_ENV`]. Works in tests returning `()` and
/// `anyhow::Result<()>`.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::require::root() {
            return $crate::require::Skipped::skipped();
        }
    };
}

/// What a test returns when it did not run.
pub trait Skipped {
    fn skipped() -> Self;
}

impl Skipped for () {
    fn skipped() -> Self {}
}

impl<E> Skipped for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
}

/// Whether the process runs as root; see [`precondition`].
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    precondition(unsafe { libc::geteuid() } == 0, ROOT_REASON)
}

/// `true` when `met`. Otherwise: under [`STRICT_ENV`] panics with `reason`; else announces
/// the current test as not run because of `reason`, and returns `false`.
pub fn precondition(met: bool, reason: &str) -> bool {
    if met {
        return true;
    }
    assert!(
        !strict(),
        "missing precondition: {reason} ({STRICT_ENV} is set, as `cargo xtask test` does, so \
         this is a failure rather than a skip)"
    );
    skip(reason);
    false
}

/// Whether missing preconditions are failures ([`STRICT_ENV`] is set).
pub fn strict() -> bool {
    std::env::var_os(STRICT_ENV).is_some()
}

/// What this test binary did not run: `(test, reason)`.
static SKIPPED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_owned();
    note(&format!("NOT RUN {test}: {reason}\n"));
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let logged = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(format!("{test}\t{reason}\n").as_bytes()));
        if let Err(err) = logged {
            note(&format!("(could not log the skip to {path:?}: {err})\n"));
        }
    }
    SKIPPED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((test, reason.to_owned()));
    static SUMMARY: Once = Once::new();
    // SAFETY: registering a plain extern "C" function without arguments.
    SUMMARY.call_once(|| unsafe {
        libc::atexit(print_summary);
    });
}

/// Runs when the test binary exits, after libtest's own summary.
extern "C" fn print_summary() {
    let skipped = SKIPPED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut text = format!(
        "\n{} test(s) or parts of tests of this binary did NOT run, for the reasons below \
         (what needs root runs under `sudo cargo xtask test`):\n",
        skipped.len()
    );
    for (test, reason) in skipped.iter() {
        text.push_str(&format!("  - {test}: {reason}\n"));
    }
    note(&text);
}

/// Writes to the stderr file descriptor, past libtest's capture.
fn note(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
