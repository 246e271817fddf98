//! The Alertmanager webhook's body, after the bearer token: whatever it is, the webhook answers
//! with a summary or a 4xx/5xx rejection, never a panic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use selfheal_agent::report::webhook::{BearerToken, IsMonitored, Webhook};
use tokio::sync::mpsc;

/// More than a 64 KiB body can hold alerts, so `accept` never waits on a full channel.
const ROOM: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let (tx, mut rx) = mpsc::channel(ROOM);
    let monitored: IsMonitored = Arc::new(|unit| unit == "web.service" || unit == "db.service");
    let webhook = Webhook::new(BearerToken::new("fuzz"), ROOM, monitored, tx);
    let _ = runtime.block_on(webhook.accept(data));
    while rx.try_recv().is_ok() {}
});
