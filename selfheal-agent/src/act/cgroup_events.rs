//! Waiting for a cgroup v2 `cgroup.events` file to say something (`frozen 1`, `populated 0`):
//! the kernel signals every change of the file as an inotify `IN_MODIFY`, so the wait wakes
//! when the value changes instead of re-reading the file on a timer.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    time::Duration,
};

use tokio::io::unix::AsyncFd;

/// An inotify watch on one file's modifications.
pub struct FileWatch {
    fd: AsyncFd<OwnedFd>,
}

impl FileWatch {
    pub fn new(path: &Path) -> io::Result<Self> {
        // SAFETY: inotify_init1 takes no pointers; a non-negative result is a new fd we own.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by inotify_init1 and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `fd` is an open inotify fd and `c_path` a NUL-terminated string that lives
        // across the call.
        let watch =
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_path.as_ptr(), libc::IN_MODIFY) };
        if watch < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns `fd` (an OwnedFd) for its whole life, so the descriptor
        // stays open and refers to the same inotify instance until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Waits until the file was modified since the last call (or since the watch was made).
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let mut events = [0u8; 1024];
            let fd = guard.get_inner().as_raw_fd();
            // SAFETY: `events` is a writable buffer of the length passed, alive for the call.
            let n = unsafe { libc::read(fd, events.as_mut_ptr().cast(), events.len()) };
            if n > 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            guard.clear_ready();
        }
    }
}

/// Waits until the `cgroup.events` file at `events` has the line `wanted`, for at most
/// `timeout`. Woken by the file's modifications; re-read on a short timer only when inotify
/// is not available (out of watches or fds).
pub async fn wait_for_line(events: &Path, wanted: &str, timeout: Duration) -> Result<(), String> {
    // Watching before the first read: a change between the read and the wait is not missed.
    let mut watch = FileWatch::new(events).ok();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = tokio::fs::read_to_string(events)
            .await
            .map_err(|e| format!("reading {}: {e}", events.display()))?;
        if text.lines().any(|line| line == wanted) {
            return Ok(());
        }
        let woken = match watch.as_mut() {
            Some(watch) => tokio::time::timeout_at(deadline, watch.changed()).await,
            None => {
                tokio::time::timeout_at(deadline, async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(())
                })
                .await
            }
        };
        match woken {
            Ok(Ok(())) => {}
            // The watch broke: fall back to the timer for the rest of the wait.
            Ok(Err(_)) => watch = None,
            Err(_) => {
                return Err(format!(
                    "{} does not say \"{wanted}\" {timeout:?} later",
                    events.display()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_to_the_file_wakes_the_watch() {
        let dir = std::env::temp_dir().join(format!("selfheal-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("cgroup.events");
        std::fs::write(&file, "populated 1\nfrozen 0\n").expect("write");
        let mut watch = FileWatch::new(&file).expect("inotify");
        let quiet = tokio::time::timeout(Duration::from_millis(100), watch.changed()).await;
        assert!(quiet.is_err(), "woken with nothing written");
        std::fs::write(&file, "populated 1\nfrozen 0\n").expect("write");
        let woken = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
        assert!(matches!(woken, Ok(Ok(()))), "{woken:?}");

        let writer = {
            let file = file.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::fs::write(&file, "populated 1\nfrozen 1\n").expect("write");
            })
        };
        let waited = wait_for_line(&file, "frozen 1", Duration::from_secs(5)).await;
        writer.await.expect("writer");
        assert_eq!(waited, Ok(()));
        let never = wait_for_line(&file, "frozen 0", Duration::from_millis(200)).await;
        assert!(
            never
                .as_ref()
                .is_err_and(|e| e.contains("does not say \"frozen 0\"")),
            "{never:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
