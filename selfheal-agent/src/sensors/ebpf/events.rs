//! Reads exit records from the kernel's ring buffer by readiness: the task sleeps in epoll
//! until the kernel writes, drains everything, then waits again. No polling, no sleeps.

use std::os::fd::AsRawFd as _;

use aya::maps::{MapData, RingBuf};
use log::{error, warn};
use selfheal_common::exit::ExitEvent;
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, watch},
};

/// Forwards every exit record to `tx` until `shutdown` changes or the receiver goes away.
pub async fn read_exit_events(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<ExitEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let fd = ring.as_raw_fd();
    // SAFETY: the fd belongs to `ring`, which the AsyncFd owns for its whole life, so it stays
    // open and refers to the same ring buffer map until the AsyncFd is dropped.
    let mut ring = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
        Ok(ring) => ring,
        Err(err) => {
            error!("cannot watch the exit ring buffer (fd {fd}): {err}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            guard = ring.readable_mut() => {
                let mut guard = match guard {
                    Ok(guard) => guard,
                    Err(err) => { error!("exit ring buffer: {err}"); return; }
                };
                let ring = guard.get_inner_mut();
                while let Some(event) = next_event(ring) {
                    let Some(event) = event else { continue };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                guard.clear_ready();
            }
        }
    }
}

/// The next record: `None` when the buffer is drained, `Some(None)` for a malformed record.
fn next_event(ring: &mut RingBuf<MapData>) -> Option<Option<ExitEvent>> {
    let item = ring.next()?;
    if item.len() < size_of::<ExitEvent>() {
        warn!(
            "short exit record ({} bytes): agent and kernel programs out of step",
            item.len()
        );
        return Some(None);
    }
    // SAFETY: the kernel wrote this record as an ExitEvent (repr(C), plain integers);
    // read_unaligned copes with any alignment of the ring buffer's data.
    Some(Some(unsafe {
        item.as_ptr().cast::<ExitEvent>().read_unaligned()
    }))
}
