//! `selfheal-agent events [--follow] [--json]`: the audit log's latest records, then each one
//! the agent appends, as it appends it.
//!
//! It follows the audit log file rather than asking the status socket: the log is the complete
//! record (evidence, reason, outcome, duration), it outlives agent restarts (a follower keeps
//! going across them), and the socket answers one request per connection. inotify on the log's
//! directory wakes us on every write, creation and rotation: no polling, no sleeps.

use std::{
    ffi::CString,
    fs::File,
    io::{ErrorKind, Read as _, Seek as _, SeekFrom, Write},
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::hints;

pub fn events(path: &Path, backlog: usize, follow: bool, json: bool) -> anyhow::Result<()> {
    let mut tail = Tail::new(path);
    let mut out = std::io::stdout().lock();
    match tail.open() {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound && follow => eprintln!(
            "{} does not exist yet: waiting for the agent's first record",
            path.display()
        ),
        Err(e) => bail!("{}", open_error(path, &e)),
    }
    let text = tail
        .read_new()
        .with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(backlog);
    if !print(&mut out, &lines[skip..], json)? || !follow {
        return Ok(());
    }
    let watch = DirWatch::new(path)?;
    loop {
        watch.wait()?;
        let text = tail
            .read_new()
            .with_context(|| format!("reading {}", path.display()))?;
        let lines: Vec<&str> = text.lines().collect();
        if !print(&mut out, &lines, json)? {
            return Ok(());
        }
    }
}

fn open_error(path: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => format!(
            "no audit log at {}: the agent has recorded no decision yet, or it logs elsewhere \
             (pass --config with the agent's config, or --log); --follow waits for it",
            path.display()
        ),
        ErrorKind::PermissionDenied => hints::unreadable(path, "the audit log"),
        _ => format!("cannot open the audit log {}: {e}", path.display()),
    }
}

/// Prints complete lines; false once stdout is closed (`events -f | head` ends quietly).
fn print(out: &mut impl Write, lines: &[&str], json: bool) -> anyhow::Result<bool> {
    let mut text = String::new();
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        if json {
            text.push_str(line);
        } else {
            text.push_str(&render(line));
        }
        text.push('\n');
    }
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// One audit record as a line: "2026-11-25 21:03:04.120Z web.service: crash (killed by
/// SIGKILL) → restart: first failure", or the raw line when it is not a record we know.
pub fn render(line: &str) -> String {
    let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    let s = |key: &str| record[key].as_str().unwrap_or("?").to_owned();
    let at = record["at_ms"].as_u64().map(utc).unwrap_or_default();
    match record["event"].as_str() {
        Some("decision") => format!(
            "{at} {}: {} ({}) → {}: {}{}",
            s("unit"),
            s("problem"),
            s("evidence"),
            s("actions"),
            s("reason"),
            if record["dry_run"] == true {
                " [dry run]"
            } else {
                ""
            }
        ),
        Some("action") => format!(
            "{at} {}: {} {} after {} ms: {}",
            s("unit"),
            s("action"),
            s("outcome"),
            record["duration_ms"].as_u64().unwrap_or(0),
            s("detail")
        ),
        _ => line.to_owned(),
    }
}

/// "2026-11-25 21:03:04.120Z" from milliseconds since the epoch (civil date from days, Howard
/// Hinnant's algorithm: no time crate for one line).
pub fn utc(at_ms: u64) -> String {
    let (days, ms) = ((at_ms / 86_400_000) as i64, at_ms % 86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let secs = ms / 1000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms % 1000
    )
}

/// The log file read from where we left off; a rotated (new inode) or truncated file is read
/// from its start, a half-written last line is kept until its newline arrives.
struct Tail {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    pos: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            file: None,
            inode: 0,
            pos: 0,
            partial: Vec::new(),
        }
    }

    fn open(&mut self) -> std::io::Result<()> {
        let file = File::open(&self.path)?;
        self.inode = file.metadata()?.ino();
        self.file = Some(file);
        self.pos = 0;
        self.partial.clear();
        Ok(())
    }

    /// The complete lines written since the last call.
    fn read_new(&mut self) -> std::io::Result<String> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if self.file.is_none() || meta.ino() != self.inode => self.open()?,
            Ok(meta) if meta.len() < self.pos => {
                self.pos = 0;
                self.partial.clear();
            }
            Ok(_) => {}
            // Rotated away and not recreated yet: wait for the next event.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => return Err(e),
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(String::new());
        };
        file.seek(SeekFrom::Start(self.pos))?;
        let mut bytes = std::mem::take(&mut self.partial);
        let read = file.read_to_end(&mut bytes)?;
        self.pos += read as u64;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.partial = bytes.split_off(complete);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// An inotify watch on the log's directory: writes, creations and renames of any file in it.
struct DirWatch {
    fd: std::os::fd::OwnedFd,
}

impl DirWatch {
    fn new(log: &Path) -> anyhow::Result<DirWatch> {
        let dir = log
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // SAFETY: inotify_init1 has no preconditions; the fd is owned below.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_init1");
        }
        // SAFETY: raw is a fresh descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let c_dir = CString::new(dir.as_os_str().as_bytes()).context("a NUL in the log's path")?;
        let mask = libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_DELETE;
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        let added = unsafe {
            libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), c_dir.as_ptr(), mask)
        };
        if added < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::PermissionDenied {
                bail!("{}", hints::unreadable(log, "the audit log"));
            }
            return Err(e).with_context(|| format!("watching {} with inotify", dir.display()));
        }
        Ok(DirWatch { fd })
    }

    /// Blocks until something in the directory changed (the events themselves are not needed:
    /// the tail re-checks its file).
    fn wait(&self) -> anyhow::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer we own, of the length we pass.
            let n = unsafe {
                libc::read(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n > 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e).context("reading inotify events");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_render_as_one_readable_line_each() {
        let decision = r#"{"event":"decision","unit":"web.service","problem":"crash","evidence":"killed by SIGKILL","actions":"restart","reason":"first failure","dry_run":false,"at_ms":0}"#;
        assert_eq!(
            render(decision),
            "1970-01-01 00:00:00.000Z web.service: crash (killed by SIGKILL) → restart: first failure"
        );
        let action = r#"{"event":"action","unit":"web.service","action":"restart","outcome":"done","detail":"active","duration_ms":27,"at_ms":1764000000000}"#;
        assert_eq!(
            render(action),
            "2025-11-24 16:00:00.000Z web.service: restart done after 27 ms: active"
        );
        assert_eq!(render("not json"), "not json");
    }

    #[test]
    fn the_tail_reads_appended_lines_once_and_restarts_on_rotation() {
        let dir = std::env::temp_dir().join(format!("selfheal-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("actions.jsonl");
        std::fs::write(&path, "one\ntw").expect("write");
        let mut tail = Tail::new(&path);
        tail.open().expect("open");
        assert_eq!(tail.read_new().expect("read"), "one\n");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("append");
        file.write_all(b"o\nthree\n").expect("append");
        assert_eq!(tail.read_new().expect("read"), "two\nthree\n");
        assert_eq!(tail.read_new().expect("read"), "");
        // Rotation: a new file under the same name is read from its start.
        std::fs::rename(&path, dir.join("actions.jsonl.1")).expect("rotate");
        std::fs::write(&path, "four\n").expect("write");
        assert_eq!(tail.read_new().expect("read"), "four\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
