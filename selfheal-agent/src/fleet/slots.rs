//! A counting semaphore from leases and transactions (etcd has a lock, not a semaphore): a
//! slot is a key under the group bound to its holder's short lease, taken in one transaction
//! with a compare-and-swap on the group's budget document. Every take and release rewrites
//! that document, so two hosts that both saw a free slot cannot both win; a dead or cut-off
//! holder's key vanishes with its lease, which frees the slot without anyone's help.

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::Serialize;

use super::{
    FleetError,
    budget::{Admission, BudgetDoc, admit},
    client::{get, list},
    config::Share,
    keys::Keys,
};

/// A held slot as the audit log records it: its key, its lease and the revision that took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotRecord {
    pub key: String,
    pub lease: i64,
    pub revision: i64,
}

pub enum Take {
    Taken(SlotRecord),
    Full {
        holders: Vec<String>,
        limit: usize,
    },
    NoView,
    /// Another host changed the budget between our read and our write: read again.
    Raced,
}

pub struct Request<'a> {
    pub keys: &'a Keys,
    pub group: &'a str,
    pub host: &'a str,
    pub budget: Share,
    /// The slot's own lease, kept alive by its holder.
    pub lease: i64,
    /// What the slot is for (stored as the slot's value, shown by `fleet status`).
    pub note: &'a str,
}

pub async fn try_take(client: &mut Client, r: &Request<'_>) -> Result<Take, FleetError> {
    let budget_key = r.keys.group(r.group, "budget");
    let seen = get(client, &budget_key)
        .await?
        .map_or(0, |e| e.mod_revision);
    let members = names(list(client, &r.keys.group(r.group, "members/")).await?);
    let holders = names(list(client, &r.keys.group(r.group, "slots/")).await?);
    let limit = match admit(r.budget, &members, &holders, r.host) {
        Admission::Take { limit } => limit,
        Admission::Full { holders, limit } => return Ok(Take::Full { holders, limit }),
        Admission::NoView => return Ok(Take::NoView),
    };
    let slot_key = r.keys.group(r.group, &format!("slots/{}", r.host));
    let mut after = holders;
    after.push(r.host.to_owned());
    let doc = BudgetDoc {
        limit,
        members: members.len(),
        holders: after,
    };
    let txn = Txn::new()
        .when([
            Compare::mod_revision(budget_key.clone(), CompareOp::Equal, seen),
            Compare::create_revision(slot_key.clone(), CompareOp::Equal, 0),
        ])
        .and_then([
            TxnOp::put(
                slot_key.clone(),
                r.note,
                Some(PutOptions::new().with_lease(r.lease)),
            ),
            TxnOp::put(budget_key, serde_json::to_string(&doc)?, None),
        ]);
    let response = client.txn(txn).await?;
    if !response.succeeded() {
        return Ok(Take::Raced);
    }
    Ok(Take::Taken(SlotRecord {
        key: slot_key,
        lease: r.lease,
        revision: response.header().map_or(0, |h| h.revision()),
    }))
}

/// Deletes the slot and rewrites the budget document without it, then revokes the lease. When
/// etcd is away the lease runs out by itself.
pub async fn release(client: &mut Client, r: &Request<'_>) -> Result<(), FleetError> {
    let budget_key = r.keys.group(r.group, "budget");
    let slot_key = r.keys.group(r.group, &format!("slots/{}", r.host));
    for _ in 0..5 {
        let seen = get(client, &budget_key).await?;
        let mut doc: BudgetDoc = seen
            .as_ref()
            .and_then(|e| serde_json::from_str(&e.value).ok())
            .unwrap_or_default();
        doc.holders = names(list(client, &r.keys.group(r.group, "slots/")).await?)
            .into_iter()
            .filter(|h| h != r.host)
            .collect();
        let txn = Txn::new()
            .when([Compare::mod_revision(
                budget_key.clone(),
                CompareOp::Equal,
                seen.map_or(0, |e| e.mod_revision),
            )])
            .and_then([
                TxnOp::delete(slot_key.clone(), None),
                TxnOp::put(budget_key.clone(), serde_json::to_string(&doc)?, None),
            ]);
        if client.txn(txn).await?.succeeded() {
            break;
        }
    }
    client.lease_revoke(r.lease).await?;
    Ok(())
}

fn names(entries: Vec<super::client::Entry>) -> Vec<String> {
    entries.into_iter().map(|e| e.name).collect()
}
