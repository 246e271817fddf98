//! Where a network quarantine's BPF links are pinned, so that the quarantine outlives the
//! agent's own process: a link held only by the agent's file descriptor is detached by the
//! kernel when the agent dies, while the saved policy state would still say "quarantined".
//!
//! One directory per agent state (`/sys/fs/bpf/selfheal/<state dir, '/' → '_'>/`), one pin per
//! unit and direction (`<unit>-ingress`, `<unit>-egress`; bpffs refuses names with a dot, so
//! the unit's dots are written `%`, a character unit names never hold): two agents with different state
//! dirs (the tests run many) never touch each other's pins, and the unit's name, not its index
//! in the config, ties a pin to the saved state across restarts and config changes.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};

/// The bpffs root of the agent's pins (bpffs is mounted there by the kernel sensors' loader).
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/selfheal";

/// The pin directory of the agent whose state lives in `state_dir`.
pub fn dir_for(state_dir: &Path) -> PathBuf {
    let key: String = state_dir
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| match c {
            '/' => '_',
            '.' => '%',
            c => c,
        })
        .collect();
    Path::new(BPFFS_ROOT).join(if key.is_empty() { "root".into() } else { key })
}

/// The pin of `unit`'s link in `direction` ("ingress", "egress").
pub fn path(dir: &Path, unit: &str, direction: &str) -> PathBuf {
    dir.join(format!("{}-{direction}", unit.replace('.', "%")))
}

/// Pins `link` at `at`, replacing a pin a previous agent left there. The returned link keeps
/// the quarantine while the agent runs; the pin keeps it after.
pub fn pin(link: FdLink, at: &Path) -> Result<FdLink, String> {
    if let Some(dir) = at.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(at);
    link.pin(at)
        .map(FdLink::from)
        .map_err(|e| format!("pinning {}: {e}", at.display()))
}

/// Removes the pins: once the agent's descriptors close too, the kernel detaches the links.
pub fn unpin(pins: &[PathBuf]) {
    for pin in pins {
        let _ = std::fs::remove_file(pin);
        // The agent's directory goes with its last pin (remove_dir fails while one is left).
        if let Some(dir) = pin.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Pinned links taken over, by unit name, each with its pin.
pub type Found = HashMap<String, Vec<(FdLink, PathBuf)>>;

/// The links found pinned in `dir`, by unit name, with their pin paths. Pins of units `keep`
/// rejects are removed (their quarantine is over in the saved state), so the kernel ends up
/// saying what the state says.
pub fn adopt(dir: &Path, keep: impl Fn(&str) -> bool) -> (Found, Vec<String>) {
    let mut adopted = Found::new();
    let mut dropped = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (adopted, dropped);
    };
    for entry in entries.flatten() {
        let pin = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((unit, _direction)) = name.rsplit_once('-') else {
            continue;
        };
        let unit = unit.replace('%', ".");
        let unit = unit.as_str();
        if !keep(unit) {
            let _ = std::fs::remove_file(&pin);
            dropped.push(unit.to_owned());
            continue;
        }
        match PinnedLink::from_pin(&pin) {
            Ok(link) => adopted
                .entry(unit.to_owned())
                .or_default()
                .push((FdLink::from(link), pin)),
            Err(e) => log::warn!("cannot take over the pinned link {}: {e}", pin.display()),
        }
    }
    dropped.sort();
    dropped.dedup();
    (adopted, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_dir_has_its_own_pin_directory() {
        assert_eq!(
            dir_for(Path::new("/var/lib/selfheal")),
            Path::new("/sys/fs/bpf/selfheal/var_lib_selfheal")
        );
        assert_ne!(
            dir_for(Path::new("/tmp/a/state")),
            dir_for(Path::new("/tmp/b/state"))
        );
        assert_eq!(
            dir_for(Path::new("/")),
            Path::new("/sys/fs/bpf/selfheal/root")
        );
    }

    #[test]
    fn a_pin_is_named_after_the_unit_and_direction_without_dots() {
        let dir = Path::new("/sys/fs/bpf/selfheal/x");
        assert_eq!(
            path(dir, "web@a.service", "ingress"),
            dir.join("web@a%service-ingress")
        );
    }
}
