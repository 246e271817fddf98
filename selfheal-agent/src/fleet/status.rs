//! `selfheal-agent fleet status | pause | resume`: one view of the fleet read straight from
//! etcd (no agent needed), and the operator's pause switch.

use std::{collections::BTreeMap, fmt::Write as _};

use etcd_client::Client;
use serde::Serialize;
use serde_json::Value;

use super::{
    FleetError,
    client::{Entry, list},
    keys::Keys,
};

#[derive(Debug, Default, Serialize)]
pub struct FleetView {
    pub fleet: String,
    /// Set when the whole fleet is paused.
    pub paused: bool,
    /// Hosts alive by lease, with what they registered.
    pub hosts: BTreeMap<String, Value>,
    pub groups: BTreeMap<String, GroupView>,
}

#[derive(Debug, Default, Serialize)]
pub struct GroupView {
    pub paused: bool,
    pub members: Vec<String>,
    /// Slots held now: host → what it is doing.
    pub slots: BTreeMap<String, Value>,
    pub budget: Value,
    pub breaker: Value,
    /// Hosts reporting the group failing.
    pub failing: Vec<String>,
    /// Each host's last action on the group.
    pub recent: BTreeMap<String, Value>,
}

pub async fn read(client: &mut Client, fleet: &str) -> Result<FleetView, FleetError> {
    let keys = Keys::new(fleet);
    let mut view = FleetView {
        fleet: fleet.to_owned(),
        ..Default::default()
    };
    for entry in list(client, keys.root()).await? {
        place(&mut view, entry);
    }
    Ok(view)
}

/// Files one key of the fleet's tree into the view.
fn place(view: &mut FleetView, entry: Entry) {
    let json = || serde_json::from_str(&entry.value).unwrap_or(Value::String(entry.value.clone()));
    let parts: Vec<&str> = entry.name.split('/').collect();
    match parts.as_slice() {
        ["pause"] => view.paused = true,
        ["hosts", host] => {
            view.hosts.insert((*host).to_owned(), json());
        }
        ["groups", group, rest @ ..] => {
            let g = view.groups.entry((*group).to_owned()).or_default();
            match rest {
                ["pause"] => g.paused = true,
                ["budget"] => g.budget = json(),
                ["breaker"] => g.breaker = json(),
                ["members", host] => g.members.push((*host).to_owned()),
                ["failing", host] => g.failing.push((*host).to_owned()),
                ["slots", host] => {
                    g.slots.insert((*host).to_owned(), json());
                }
                ["recent", host] => {
                    g.recent.insert((*host).to_owned(), json());
                }
                _ => {}
            }
        }
        _ => {}
    }
}

pub fn render(view: &FleetView) -> String {
    let mut out = String::new();
    let paused = if view.paused {
        " (PAUSED: no automated action)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "fleet {}{paused}: {} host(s) alive",
        view.fleet,
        view.hosts.len()
    );
    for (host, info) in &view.hosts {
        let zone = info["zone"]
            .as_str()
            .filter(|z| !z.is_empty())
            .unwrap_or("-");
        let _ = writeln!(out, "  host {host}  zone {zone}");
    }
    for (name, g) in &view.groups {
        let breaker = g.breaker["phase"].as_str().unwrap_or("closed");
        let limit = g.budget["limit"]
            .as_u64()
            .map_or("?".into(), |l| l.to_string());
        let paused = if g.paused { "  PAUSED" } else { "" };
        let _ = writeln!(
            out,
            "group {name}: {} host(s), slots {}/{limit}, breaker {breaker}, {} failing{paused}",
            g.members.len(),
            g.slots.len(),
            g.failing.len()
        );
        for (host, slot) in &g.slots {
            let _ = writeln!(
                out,
                "  acting  {host}: {} {}",
                slot["action"].as_str().unwrap_or("?"),
                slot["unit"].as_str().unwrap_or("?")
            );
        }
        for (host, last) in &g.recent {
            let outcome = if last["ok"].as_bool() == Some(true) {
                "ok"
            } else {
                "failed"
            };
            let _ = writeln!(
                out,
                "  recent  {host}: {} ({outcome})",
                last["action"].as_str().unwrap_or("?")
            );
        }
    }
    out
}

/// Pauses (or resumes) automated action on one group, or on the whole fleet.
pub async fn set_paused(
    client: &mut Client,
    fleet: &str,
    group: Option<&str>,
    paused: bool,
) -> Result<String, FleetError> {
    let keys = Keys::new(fleet);
    let key = match group {
        Some(group) => keys.group(group, "pause"),
        None => keys.pause(),
    };
    if paused {
        client
            .put(key.clone(), super::gate::unix_now().to_string(), None)
            .await?;
    } else {
        client.delete(key.clone(), None).await?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, value: &str) -> Entry {
        Entry {
            name: name.into(),
            value: value.into(),
            mod_revision: 1,
            lease: 0,
        }
    }

    #[test]
    fn keys_fill_the_view() {
        let mut view = FleetView::default();
        for (k, v) in [
            ("hosts/a", r#"{"zone":"z1"}"#),
            ("groups/web/members/a", ""),
            (
                "groups/web/slots/a",
                r#"{"unit":"web.service","action":"restart"}"#,
            ),
            (
                "groups/web/budget",
                r#"{"limit":1,"members":1,"holders":["a"]}"#,
            ),
            (
                "groups/web/breaker",
                r#"{"phase":"open","since":1,"canary":null,"closed_at":0}"#,
            ),
            ("groups/web/pause", "1"),
        ] {
            place(&mut view, entry(k, v));
        }
        let text = render(&view);
        assert!(text.contains("1 host(s) alive"), "{text}");
        assert!(
            text.contains("group web: 1 host(s), slots 1/1, breaker open, 0 failing  PAUSED"),
            "{text}"
        );
        assert!(text.contains("acting  a: restart web.service"), "{text}");
    }
}
