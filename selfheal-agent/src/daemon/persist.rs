//! The policy's state on disk: histories, budgets, circuit breakers, scaling steps,
//! quarantines and escalations survive an agent restart. Written atomically (temp file, fsync,
//! rename); a corrupt file is kept aside and the agent starts fresh, saying so.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, SystemTime},
};

use log::{info, warn};
use tokio::sync::watch;

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

/// The policy's state as the file holds it.
pub fn encode(policy: &Policy) -> std::io::Result<Vec<u8>> {
    let state = policy.save(Instant::now(), SystemTime::now());
    serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)
}

/// Writes `text` to `file` atomically: temp file, fsync, rename.
pub fn write(file: &Path, text: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(text)?;
    out.sync_all()?;
    std::fs::rename(&tmp, file)
}

/// Writes the saved state off the async threads, so an fsync never holds up an exit. The engine
/// hands over each new state; only the newest is written (a state that changes twice while a
/// write runs is written once, never an older one after a newer).
pub struct Writer {
    newest: watch::Sender<Option<Arc<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn spawn(file: PathBuf) -> Self {
        let (newest, mut rx) = watch::channel(None::<Arc<Vec<u8>>>);
        let task = tokio::spawn(async move {
            // Ends once the engine closed it and the last state handed over is written.
            while rx.changed().await.is_ok() {
                let Some(text) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let path = file.clone();
                let written = tokio::task::spawn_blocking(move || write(&path, &text)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!("cannot save state to {}: {e}", file.display()),
                    Err(e) => warn!("saving state to {} panicked: {e}", file.display()),
                }
            }
        });
        Self { newest, task }
    }

    /// Hands over the newest state.
    pub fn submit(&self, text: Vec<u8>) {
        self.newest.send_replace(Some(Arc::new(text)));
    }

    /// Waits until the last state handed over is on disk.
    pub async fn close(self) {
        drop(self.newest);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_leaves_the_newest_state_on_disk() {
        let dir = std::env::temp_dir().join(format!("selfheal-writer-{}", std::process::id()));
        let file = dir.join(STATE_FILE);
        let writer = Writer::spawn(file.clone());
        for i in 0..50 {
            writer.submit(format!("{{\"n\": {i}}}").into_bytes());
        }
        writer.close().await;
        assert_eq!(
            std::fs::read_to_string(&file).expect("written"),
            "{\"n\": 49}"
        );
        assert!(
            !file.with_extension("json.tmp").exists(),
            "no temp file left"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
