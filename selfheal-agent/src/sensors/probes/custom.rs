//! What an operator-written detector's run means. JSON on stdout speaks first:
//! `{"problem": "kind", "evidence": "..."}` raises that kind, `{"ok": true}` is healthy,
//! `{"ok": false, "evidence": "..."}` raises the configured kind. Otherwise the exit status
//! decides: 0 is healthy, anything else raises the configured kind.

use serde_json::Value;

use super::{config::is_kind_name, exec::Finished};

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Healthy { evidence: String },
    Problem { kind: String, evidence: String },
}

pub(super) fn verdict(run: &Finished, configured_kind: &str) -> Verdict {
    if let Some(verdict) = json_verdict(&run.stdout, configured_kind) {
        return verdict;
    }
    if run.status.success() {
        Verdict::Healthy {
            evidence: run.describe(),
        }
    } else {
        Verdict::Problem {
            kind: configured_kind.to_owned(),
            evidence: run.describe(),
        }
    }
}

/// `None` when stdout is not a JSON object with "problem" or "ok".
fn json_verdict(stdout: &str, configured_kind: &str) -> Option<Verdict> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(stdout.trim()) else {
        return None;
    };
    let evidence = match object.get("evidence") {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    match (object.get("problem"), object.get("ok")) {
        (Some(Value::String(named)), _) => {
            // A kind that could not be a config name (spaces, capitals) is not trusted into
            // metric labels and ladders: it becomes evidence for the configured kind.
            let (kind, note) = if is_kind_name(named) {
                (named.clone(), String::new())
            } else {
                (configured_kind.to_owned(), format!("problem {named:?}: "))
            };
            let evidence = evidence.unwrap_or_else(|| format!("reported {named:?}"));
            Some(Verdict::Problem {
                kind,
                evidence: format!("{note}{evidence}"),
            })
        }
        (_, Some(Value::Bool(true))) => Some(Verdict::Healthy {
            evidence: evidence.unwrap_or_else(|| "ok".into()),
        }),
        (_, Some(Value::Bool(false))) => Some(Verdict::Problem {
            kind: configured_kind.to_owned(),
            evidence: evidence.unwrap_or_else(|| "reported \"ok\": false".into()),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    use super::*;

    fn run(code: i32, stdout: &str) -> Finished {
        Finished {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    fn problem(kind: &str, evidence: &str) -> Verdict {
        Verdict::Problem {
            kind: kind.into(),
            evidence: evidence.into(),
        }
    }

    #[test]
    fn a_non_zero_exit_without_json_raises_the_configured_kind() {
        assert_eq!(
            verdict(&run(2, "queue depth 9000\n"), "queue_backlog"),
            problem("queue_backlog", "exit status 2: queue depth 9000")
        );
    }

    #[test]
    fn exit_zero_without_json_is_healthy() {
        assert!(matches!(
            verdict(&run(0, "all good"), "queue_backlog"),
            Verdict::Healthy { .. }
        ));
    }

    #[test]
    fn json_naming_a_problem_raises_that_kind_even_with_exit_zero() {
        let out = r#"{"problem": "disk_full", "evidence": "/var at 99 %"}"#;
        assert_eq!(
            verdict(&run(0, out), "queue_backlog"),
            problem("disk_full", "/var at 99 %")
        );
    }

    #[test]
    fn json_ok_true_is_healthy_even_with_a_non_zero_exit() {
        assert!(matches!(
            verdict(&run(1, "{\"ok\": true}\n"), "queue_backlog"),
            Verdict::Healthy { .. }
        ));
    }

    #[test]
    fn json_ok_false_raises_the_configured_kind_with_its_evidence() {
        let out = r#"{"ok": false, "evidence": {"depth": 9000}}"#;
        assert_eq!(
            verdict(&run(0, out), "queue_backlog"),
            problem("queue_backlog", r#"{"depth":9000}"#)
        );
    }

    #[test]
    fn a_json_kind_that_is_not_a_plain_name_falls_back_to_the_configured_kind() {
        let out = r#"{"problem": "Disk Full!"}"#;
        assert_eq!(
            verdict(&run(1, out), "queue_backlog"),
            problem(
                "queue_backlog",
                r#"problem "Disk Full!": reported "Disk Full!""#
            )
        );
    }

    #[test]
    fn json_without_problem_or_ok_leaves_the_exit_status_to_decide() {
        assert_eq!(
            verdict(&run(3, r#"{"depth": 10}"#), "queue_backlog"),
            problem("queue_backlog", r#"exit status 3: {"depth": 10}"#)
        );
    }
}
