//! The `wedged` rule: work waits on the unit and it does not drain. Work is connections in its
//! listen queues or unread bytes in its accepted connections; draining is judged socket by
//! socket by the sensor ([`PendingWork::draining`](super::PendingWork)). Whether a task still
//! runs does not matter: an acceptor or a timer thread can run while every worker is
//! deadlocked. Idle keep-alive connections hold no bytes and an idle server has empty queues,
//! so neither is ever wedged; a busy server reads some socket in every window.

use std::time::Duration;

use super::SchedSample;
use super::evidence::human;

/// The condition on one sample; the detector reports it once it held for the threshold, dated
/// from the first sample in which the queues stopped draining.
pub(super) fn holds(sample: &SchedSample) -> bool {
    let pending = &sample.pending;
    !sample.tasks.is_empty()
        && (pending.accept_queue > 0 || pending.recv_queue > 0)
        && !pending.draining
}

/// The evidence: what waits, for how long, and whether the unit still ran meanwhile.
pub(super) fn evidence(sample: &SchedSample, held: Duration) -> String {
    let pending = &sample.pending;
    let ran = match sample.idle_for {
        Some(idle) => format!(
            "no task of the unit ran on a CPU for {}",
            human(idle.max(held))
        ),
        None => "some of its tasks still ran".to_owned(),
    };
    format!(
        "{ran}, and for {} work waited for it without draining: {} connection(s) in accept \
         queues, {} byte(s) in receive queues",
        human(held),
        pending.accept_queue,
        pending.recv_queue
    )
}
