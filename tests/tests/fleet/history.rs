//! Reading etcd's history against the agents' audit logs.

use anyhow::Context as _;
use selfheal_tests::{etcd::HistoryEvent, fleet::Host};

/// The most slots etcd's history ever shows held at once (PUTs and DELETEs of slot keys, in
/// revision order; a lease's expiry shows up as a DELETE).
pub fn max_concurrent(history: &[HistoryEvent]) -> usize {
    let mut held = std::collections::BTreeSet::new();
    let mut max = 0;
    for event in history.iter().filter(|e| e.key.contains("/slots/")) {
        if event.put {
            held.insert(event.key.clone());
        } else {
            held.remove(&event.key);
        }
        max = max.max(held.len());
    }
    max
}

/// Each restart in `host`'s audit log names a slot that etcd's history shows taken: same key,
/// lease and revision.
pub fn audit_matches_history(host: &Host, history: &[HistoryEvent]) -> anyhow::Result<()> {
    for record in host.restarts_done() {
        let slot = &record["slot"];
        let key = slot["key"]
            .as_str()
            .with_context(|| format!("{}: a restart without a slot: {record}", host.name))?;
        anyhow::ensure!(
            key.ends_with(&format!("/slots/{}", host.name)),
            "{}: slot {key}",
            host.name
        );
        let found = history.iter().any(|e| {
            e.put
                && e.key == key
                && Some(e.mod_revision) == slot["revision"].as_i64()
                && Some(e.lease) == slot["lease"].as_i64()
        });
        anyhow::ensure!(found, "{}: slot {slot} is not in etcd's history", host.name);
    }
    Ok(())
}
