//! Reading an action back: a scale step is only done when the kernel enforces it. systemd
//! accepts SetUnitProperties and writes the cgroup files afterwards (or not at all, where the
//! controller is missing), so the limits are read back from the unit's cgroup itself.

use std::path::Path;

use super::unit_ops::Limits;

/// Checks each limit that was set against the unit's v2 cgroup: `memory.max`, `memory.high`,
/// `pids.max`, `cpu.max`. A file that does not exist (the controller is not on the v2 tree, as
/// on hybrid hosts) cannot be checked and says so; a file that disagrees is a failure.
/// Ok(note) lists what was checked.
pub fn limits(dir: &Path, limits: &Limits) -> Result<String, String> {
    let mut checked = Vec::new();
    let mut unreadable = Vec::new();
    let wanted = [
        ("memory.max", limits.memory_max),
        ("memory.high", limits.memory_high),
        ("pids.max", limits.tasks_max),
    ];
    for (file, value) in wanted {
        let Some(value) = value else { continue };
        match std::fs::read_to_string(dir.join(file)) {
            Ok(text) => {
                let got = text.trim();
                if !same_number(got, value) {
                    return Err(format!(
                        "{}/{file} says {got} after setting {value}",
                        dir.display()
                    ));
                }
                checked.push(format!("{file} = {got}"));
            }
            Err(_) => unreadable.push(file),
        }
    }
    if let Some(per_sec) = limits.cpu_quota_per_sec_us {
        match std::fs::read_to_string(dir.join("cpu.max")) {
            Ok(text) => {
                let got = cpu_quota_per_sec(text.trim());
                if got != Some(per_sec) {
                    return Err(format!(
                        "{}/cpu.max says {} after setting {per_sec} µs per second",
                        dir.display(),
                        text.trim()
                    ));
                }
                checked.push(format!("cpu.max = {}", text.trim()));
            }
            Err(_) => unreadable.push("cpu.max"),
        }
    }
    let mut note = match checked.is_empty() {
        true => String::new(),
        false => format!("read back {}", checked.join(", ")),
    };
    if !unreadable.is_empty() {
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str(&format!(
            "{} not on the unit's v2 cgroup, not read back",
            unreadable.join(", ")
        ));
    }
    Ok(note)
}

/// The kernel rounds memory limits down to whole pages.
fn same_number(got: &str, wanted: u64) -> bool {
    const PAGE: u64 = 4096;
    match got.parse::<u64>() {
        Ok(n) => n == wanted || (n <= wanted && wanted - n < PAGE),
        Err(_) => false,
    }
}

/// `cpu.max` ("QUOTA PERIOD", or "max PERIOD") as CPU time per second, µs.
fn cpu_quota_per_sec(cpu_max: &str) -> Option<u64> {
    let (quota, period) = cpu_max.split_once(' ')?;
    let (quota, period) = (quota.parse::<u64>().ok()?, period.parse::<u64>().ok()?);
    (period > 0).then(|| quota * 1_000_000 / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup(files: &[(&str, &str)]) -> tempfile_dir::Dir {
        let dir = tempfile_dir::Dir::new();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    /// A throwaway directory under the system temp dir, removed on drop.
    mod tempfile_dir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static NEXT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("selfheal-verify-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).expect("mkdir");
                Self(path)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    const SET: Limits = Limits {
        cpu_quota_per_sec_us: Some(500_000),
        memory_max: Some(256 << 20),
        memory_high: None,
        tasks_max: Some(200),
    };

    #[test]
    fn limits_the_kernel_enforces_are_done() {
        let dir = cgroup(&[
            ("memory.max", "268435456\n"),
            ("pids.max", "200\n"),
            ("cpu.max", "50000 100000\n"),
        ]);
        let note = limits(dir.path(), &SET).expect("verified");
        assert!(note.contains("memory.max = 268435456"), "{note}");
        assert!(note.contains("cpu.max = 50000 100000"), "{note}");
    }

    #[test]
    fn a_limit_the_cgroup_does_not_hold_is_a_failure_with_evidence() {
        let dir = cgroup(&[
            ("memory.max", "max\n"),
            ("pids.max", "200\n"),
            ("cpu.max", "50000 100000\n"),
        ]);
        let e = limits(dir.path(), &SET).unwrap_err();
        assert!(
            e.contains("memory.max says max after setting 268435456"),
            "{e}"
        );
        let dir = cgroup(&[("cpu.max", "max 100000\n")]);
        let e = limits(dir.path(), &SET).unwrap_err();
        assert!(e.contains("cpu.max says max 100000"), "{e}");
    }

    #[test]
    fn controllers_missing_from_the_v2_tree_are_said_not_failed() {
        let dir = cgroup(&[("pids.max", "200\n")]);
        let note = limits(dir.path(), &SET).expect("nothing contradicts");
        assert!(note.contains("read back pids.max = 200"), "{note}");
        assert!(
            note.contains("memory.max, cpu.max not on the unit's v2 cgroup"),
            "{note}"
        );
    }

    #[test]
    fn memory_is_rounded_down_to_pages_by_the_kernel() {
        assert!(same_number("1048576", 1_048_576 + 100));
        assert!(!same_number("1040000", 1_048_576 + 100_000));
        assert_eq!(cpu_quota_per_sec("25000 50000"), Some(500_000));
    }
}
