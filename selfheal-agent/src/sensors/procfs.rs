//! Small readers for /proc and cgroupfs facts about tasks.

use std::path::Path;

/// Thread ids in `dir` (a v2 cgroup) and every cgroup below it.
pub fn threads_in_tree(dir: &Path) -> Vec<u32> {
    ids_in_tree(dir, "cgroup.threads")
}

/// Process ids in `dir` (a v2 cgroup) and every cgroup below it.
pub fn procs_in_tree(dir: &Path) -> Vec<u32> {
    ids_in_tree(dir, "cgroup.procs")
}

fn ids_in_tree(dir: &Path, file: &str) -> Vec<u32> {
    let mut tids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            tids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    tids
}

/// Fields of /proc/TID/stat we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskStatLine {
    pub comm: String,
    /// R, S, D, T, t, Z, X, I…
    pub state: char,
    /// The thread group (process) id, from /proc/TID/status.
    pub tgid: u32,
}

pub fn task_stat(tid: u32) -> Option<TaskStatLine> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    parse_task_stat(&text, &status)
}

/// The parser behind [`task_stat`]: the texts of /proc/TID/stat and /proc/TID/status.
pub fn parse_task_stat(text: &str, status: &str) -> Option<TaskStatLine> {
    // comm may contain spaces and parentheses: it spans from the first '(' to the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let state = text.get(close + 1..)?.trim_start().chars().next()?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())?;
    Some(TaskStatLine { comm, state, tgid })
}

/// Whether the process exists and has not exited (a zombie or a dead task is not running).
pub fn is_running(pid: u32) -> bool {
    task_stat(pid).is_some_and(|t| !matches!(t.state, 'Z' | 'X' | 'x'))
}

pub fn comm(tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// The kernel function the task sleeps in, where the kernel lets us read it.
pub fn wchan(tid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/wchan")).ok()?;
    (!text.is_empty() && text != "0").then_some(text)
}

/// The task's kernel stack (root only; not on every kernel).
pub fn kernel_stack(tid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/stack")).ok()?;
    let frames: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .take(8)
        .collect();
    (!frames.is_empty()).then(|| frames.join(" < "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_running_and_a_reaped_one_is_not() {
        assert!(is_running(std::process::id()));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!is_running(pid));
    }

    #[test]
    fn our_own_thread_reads_as_running_with_its_tgid() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let stat = task_stat(tid).expect("/proc/TID/stat");
        assert_eq!(stat.tgid, std::process::id());
        assert_eq!(stat.state, 'R');
        assert!(!stat.comm.is_empty());
    }
}
