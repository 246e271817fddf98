//! The policy's state on disk: histories, budgets, circuit breakers, scaling steps,
//! quarantines and escalations survive an agent restart. Written atomically (temp file, fsync,
//! rename); a corrupt file is kept aside and the agent starts fresh, saying so.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use log::{info, warn};

use crate::policy::{Policy, PolicyState};

pub const STATE_FILE: &str = "policy.json";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// Restores `policy` from `file` when it exists; the state of a unit a pattern may adopt
/// (`adoptable`) is kept until it is.
pub fn restore(policy: &mut Policy, file: &Path, adoptable: &dyn Fn(&str) -> bool) {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(
                "cannot read the saved state {}: {e}; starting fresh",
                file.display()
            );
            return;
        }
    };
    let restored = serde_json::from_str::<PolicyState>(&text)
        .map_err(|e| e.to_string())
        .and_then(|state| {
            policy
                .restore(state, Instant::now(), SystemTime::now(), adoptable)
                .map_err(|e| e.to_string())
        });
    match restored {
        Ok(gone) => {
            info!(
                "restored budgets, breakers and timers from {}",
                file.display()
            );
            for name in gone {
                info!("saved state of {name} dropped: the unit is no longer configured");
            }
        }
        Err(e) => {
            let aside = file.with_extension(format!(
                "corrupt-{}",
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            ));
            let kept = std::fs::rename(file, &aside).is_ok();
            warn!(
                "the saved state {} is unreadable ({e}); {}starting with fresh budgets and breakers",
                file.display(),
                if kept {
                    format!("kept it as {}, ", aside.display())
                } else {
                    String::new()
                }
            );
        }
    }
}

/// Writes the policy's state atomically.
pub fn save(policy: &Policy, file: &Path) -> std::io::Result<()> {
    let state = policy.save(Instant::now(), SystemTime::now());
    let text = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(&text)?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)
}
