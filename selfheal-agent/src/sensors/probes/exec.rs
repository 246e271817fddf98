//! Running probe and detector commands: no shell, stdin closed, output capped, and on timeout
//! the whole process group killed, so a hung check script cannot leave its children behind.

use std::{io, process::ExitStatus, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _},
    process::Command,
    time,
};

/// Output kept per stream; the rest is read and dropped so the command never blocks on a
/// full pipe.
const MAX_OUTPUT: usize = 64 * 1024;

#[derive(Debug)]
pub(super) struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ExecError {
    #[error("no command to run")]
    Empty,
    #[error("cannot run {program}: {}", io_text(source))]
    Spawn { program: String, source: io::Error },
    #[error("waiting for {program}: {}", io_text(source))]
    Wait { program: String, source: io::Error },
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Runs `command` with `SELFHEAL_UNIT` set to the unit's name.
pub(super) async fn run(
    command: &[String],
    unit_name: &str,
    timeout: Duration,
) -> Result<Finished, ExecError> {
    let Some((program, args)) = command.split_first() else {
        return Err(ExecError::Empty);
    };
    let mut child = Command::new(program)
        .args(args)
        .env("SELFHEAL_UNIT", unit_name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill what it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        let (status, stdout, stderr) =
            tokio::join!(child.wait(), read_capped(stdout), read_capped(stderr));
        (status, stdout, stderr)
    };
    match time::timeout(timeout, finished).await {
        Ok((Ok(status), stdout, stderr)) => Ok(Finished {
            status,
            stdout,
            stderr,
        }),
        Ok((Err(source), ..)) => Err(ExecError::Wait {
            program: program.clone(),
            source,
        }),
        Err(_) => {
            kill_group(pid);
            Err(ExecError::TimedOut(timeout))
        }
    }
}

fn kill_group(pid: Option<u32>) {
    let Some(pgid) = pid.and_then(|pid| i32::try_from(pid).ok()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches none of our memory. The group id is the
    // child's pid (process_group(0)); Linux does not reuse a pid while it still names a
    // process group with members, and we still hold the child, so it is unreaped unless its
    // wait completed while a descendant kept its output open.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> String {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut chunk).await {
        let room = MAX_OUTPUT - kept.len();
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

impl Finished {
    /// "exit status 3" or "killed by signal 9", then the output's last line when there is one.
    pub fn describe(&self) -> String {
        use std::os::unix::process::ExitStatusExt as _;
        let how = match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => self.status.to_string(),
        };
        match last_line(&self.stderr).or_else(|| last_line(&self.stdout)) {
            Some(line) => format!("{how}: {line}"),
            None => how,
        }
    }
}

/// The last non-blank line, cut to 200 characters.
fn last_line(text: &str) -> Option<String> {
    let line = text.lines().rev().find(|line| !line.trim().is_empty())?;
    Some(line.trim().chars().take(200).collect())
}

/// An I/O error's text without Rust's " (os error N)" suffix.
pub(super) fn io_text(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}
