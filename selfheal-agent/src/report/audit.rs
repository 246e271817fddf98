//! The audit log: one JSON line per decision and per action outcome, appended to
//! `/var/log/selfheal/actions.jsonl` (configurable), so that every action can be explained
//! after the fact: the problem, its evidence, the decision and why, the action, its outcome and
//! how long it took. Lines are made where the decision is taken and appended by a writer
//! thread of their own, in order: a slow disk never holds up an exit or a decision.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::Path,
    sync::mpsc,
    thread::JoinHandle,
    time::{SystemTime, UNIX_EPOCH},
};

use log::warn;
use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditRecord<'a> {
    Decision {
        unit: &'a str,
        problem: &'a str,
        evidence: &'a str,
        actions: &'a str,
        reason: &'a str,
        dry_run: bool,
    },
    Action {
        unit: &'a str,
        action: &'a str,
        outcome: &'a str,
        detail: &'a str,
        duration_ms: u64,
        /// CLOCK_MONOTONIC (ns) when the agent sent the systemd call (restarts): with the
        /// kernel's exit timestamp, the agent's own share of a crash's reaction time.
        #[serde(skip_serializing_if = "Option::is_none")]
        issued_monotonic_ns: Option<u64>,
        /// Fleet mode: the slot the action held (its etcd key, lease and revision).
        #[serde(skip_serializing_if = "Option::is_none")]
        slot: Option<&'a crate::fleet::SlotRecord>,
    },
}

pub struct Audit {
    /// Lines to append; `None` when the log could not be opened or the writer stopped.
    lines: Option<mpsc::Sender<String>>,
    writer: Option<JoinHandle<()>>,
}

impl Audit {
    /// Opens (creating directories as needed) the log for appending, and starts its writer. A
    /// log that cannot be opened is reported once; the agent keeps working without it.
    pub fn open(path: &Path) -> Audit {
        let file = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(path));
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                warn!(
                    "cannot open the audit log {}: {e}; decisions are only logged",
                    path.display()
                );
                return Audit {
                    lines: None,
                    writer: None,
                };
            }
        };
        let (tx, rx) = mpsc::channel();
        let path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || append(file, &path, &rx));
        match writer {
            Ok(writer) => Audit {
                lines: Some(tx),
                writer: Some(writer),
            },
            Err(e) => {
                warn!("cannot start the audit log's writer: {e}; decisions are only logged");
                Audit {
                    lines: None,
                    writer: None,
                }
            }
        }
    }

    /// Hands the record, stamped with the time now, to the writer.
    pub fn record(&mut self, record: &AuditRecord<'_>) {
        let Some(lines) = self.lines.as_ref() else {
            return;
        };
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut line = match serde_json::to_value(record) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.insert("at_ms".into(), at_ms.into());
                serde_json::Value::Object(map).to_string()
            }
            _ => return,
        };
        line.push('\n');
        if lines.send(line).is_err() {
            // The writer stopped on a write error, which it reported.
            self.lines = None;
        }
    }

    /// Waits until every record handed over so far is written.
    pub fn close(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.lines = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Audit {
    /// Records handed over are written before the agent exits.
    fn drop(&mut self) {
        self.finish();
    }
}

/// The writer: appends each line as it comes until the agent drops the log, or a write fails
/// (reported once; the agent goes on without the log).
fn append(mut file: File, path: &Path, lines: &mpsc::Receiver<String>) {
    for line in lines {
        if let Err(e) = file.write_all(line.as_bytes()) {
            warn!("cannot write the audit log {}: {e}", path.display());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_is_one_json_line_with_its_time() {
        let dir = std::env::temp_dir().join(format!("selfheal-audit-{}", std::process::id()));
        let path = dir.join("actions.jsonl");
        let mut audit = Audit::open(&path);
        audit.record(&AuditRecord::Action {
            unit: "web.service",
            action: "restart",
            outcome: "done",
            detail: "active",
            duration_ms: 12,
            issued_monotonic_ns: None,
            slot: None,
        });
        audit.record(&AuditRecord::Decision {
            unit: "web.service",
            problem: "crash",
            evidence: "killed by SIGKILL",
            actions: "restart",
            reason: "first failure",
            dry_run: false,
        });
        audit.close();
        let text = std::fs::read_to_string(&path).expect("log written");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "action");
        assert_eq!(lines[1]["problem"], "crash");
        assert!(lines[1]["at_ms"].as_u64().is_some_and(|t| t > 0));
        let _ = std::fs::remove_dir_all(dir);
    }
}
