//! Unit files for test services.

/// Keys that belong in `[Unit]` even when a test passes them among the service lines.
const UNIT_SECTION_KEYS: &[&str] = &[
    "StartLimitIntervalSec",
    "StartLimitBurst",
    "StartLimitAction",
];

/// Renders a service unit that runs `exec_start`.
///
/// Defaults suit the agent's tests: `Restart=no`, because the agent, not systemd, must do the
/// restarting, and `StartLimitIntervalSec=0`, so repeated restarts by the agent never hit systemd's
/// start rate limit. `extra_service_lines` go into `[Service]` and replace a default with the same
/// key; `StartLimit*` lines are moved to `[Unit]`, where systemd expects them.
pub fn service_unit(description: &str, exec_start: &str, extra_service_lines: &[&str]) -> String {
    let key = |line: &&str| line.split('=').next().unwrap_or_default().trim().to_owned();
    let overridden = |wanted: &str| extra_service_lines.iter().any(|line| key(line) == wanted);
    let (unit_lines, service_lines): (Vec<&str>, Vec<&str>) = extra_service_lines
        .iter()
        .partition(|line| UNIT_SECTION_KEYS.contains(&key(line).as_str()));

    let mut out = format!("[Unit]\nDescription={description}\n");
    if !overridden("StartLimitIntervalSec") {
        out.push_str("StartLimitIntervalSec=0\n");
    }
    for line in unit_lines {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("\n[Service]\nExecStart={exec_start}\n"));
    if !overridden("Restart") {
        out.push_str("Restart=no\n");
    }
    for line in service_lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::service_unit;

    #[test]
    fn defaults_leave_restarting_to_the_agent() {
        let unit = service_unit("sleeper", "/bin/sleep 1000", &[]);
        assert_eq!(
            unit,
            "[Unit]\nDescription=sleeper\nStartLimitIntervalSec=0\n\n\
             [Service]\nExecStart=/bin/sleep 1000\nRestart=no\n"
        );
    }

    #[test]
    fn extra_lines_replace_defaults_and_land_in_their_section() {
        let unit = service_unit(
            "crasher",
            "/bin/false",
            &[
                "Restart=always",
                "StartLimitIntervalSec=10",
                "MemoryMax=64M",
            ],
        );
        assert_eq!(
            unit,
            "[Unit]\nDescription=crasher\nStartLimitIntervalSec=10\n\n\
             [Service]\nExecStart=/bin/false\nRestart=always\nMemoryMax=64M\n"
        );
    }
}
