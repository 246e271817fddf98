//! The failures of a `cargo test` run, collected from its output as it streams by, so the
//! end of a long run (what CI shows) names every failed test and why, not only "exit 101".

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Lines kept after a failed test's `panicked at` line: the assertion and its message.
const LINES_AFTER_PANIC: usize = 12;

/// One failed test: its name and the lines that say why.
#[derive(Debug, Default, PartialEq)]
pub struct Failure {
    pub test: String,
    pub why: Vec<String>,
}

/// Reads libtest's output line by line and keeps what each failed test printed around its
/// panic.
#[derive(Debug, Default)]
pub struct Digest {
    failures: Vec<Failure>,
    /// Lines still to keep after a `panicked at` line of the current failure.
    keep: usize,
    in_failure: bool,
}

impl Digest {
    pub fn line(&mut self, line: &str) {
        if let Some(test) = line
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            self.failures.push(Failure {
                test: test.to_string(),
                why: Vec::new(),
            });
            self.in_failure = true;
            self.keep = 0;
            return;
        }
        if line == "failures:" || line.starts_with("test result:") {
            self.in_failure = false;
            self.keep = 0;
            return;
        }
        if !self.in_failure {
            return;
        }
        let Some(failure) = self.failures.last_mut() else {
            return;
        };
        if line.contains("panicked at") {
            self.keep = LINES_AFTER_PANIC;
            failure.why.push(line.to_string());
        } else if self.keep > 0 {
            // A backtrace says where, which the panic line already did.
            if line.starts_with("stack backtrace:") || line.starts_with("note: ") {
                self.keep = 0;
                return;
            }
            if line.trim().is_empty() {
                return;
            }
            self.keep -= 1;
            failure.why.push(line.to_string());
        }
    }

    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }
}

/// Runs `command` (a `cargo test`), streaming its output; when it fails, the error names the
/// command and every failed test with its panic message.
pub fn run_collecting(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let mut digest = Digest::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).split(b'\n') {
        let line = line.with_context(|| format!("reading the output of {shown}"))?;
        let line = String::from_utf8_lossy(&line);
        let _ = writeln!(out, "{line}");
        digest.line(&line);
    }
    drop(out);
    let status = child
        .wait()
        .with_context(|| format!("waiting for {shown}"))?;
    if status.success() {
        return Ok(());
    }
    let failures = digest.failures();
    if failures.is_empty() {
        bail!("{shown} failed ({status})");
    }
    let mut text = format!("{} test(s) FAILED:", failures.len());
    for failure in failures {
        text.push_str(&format!("\n  - {}", failure.test));
        for line in &failure.why {
            text.push_str(&format!("\n      {line}"));
        }
    }
    bail!("{text}\n({shown} failed: {status})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_each_failed_test_with_its_panic_message() {
        let output = "\
running 2 tests
test a::passes ... ok
test a::fails ... FAILED

failures:

---- a::fails stdout ----
agent log line
thread 'a::fails' panicked at tests/a.rs:3:5:
assertion `left == right` failed: the view
  left: 1
 right: 2
stack backtrace:
   0: frame
---- a::other stdout ----
thread 'a::other' panicked at tests/a.rs:9:1:
boom

failures:
    a::fails
    a::other

test result: FAILED. 1 passed; 2 failed
";
        let mut digest = Digest::default();
        for line in output.lines() {
            digest.line(line);
        }
        assert_eq!(
            digest.failures(),
            &[
                Failure {
                    test: "a::fails".into(),
                    why: vec![
                        "thread 'a::fails' panicked at tests/a.rs:3:5:".into(),
                        "assertion `left == right` failed: the view".into(),
                        "  left: 1".into(),
                        " right: 2".into(),
                    ],
                },
                Failure {
                    test: "a::other".into(),
                    why: vec![
                        "thread 'a::other' panicked at tests/a.rs:9:1:".into(),
                        "boom".into(),
                    ],
                },
            ]
        );
    }
}
