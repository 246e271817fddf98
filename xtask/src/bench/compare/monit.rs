//! monit (Debian's package) at its shortest cycle, watching the same faults through the only
//! tests it has for them: existence, CPU usage and file descriptors.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, bail};
use selfheal_tests::Sandbox;

/// A running `monit -I`; killed when dropped.
pub struct Monit {
    child: Child,
}

impl Drop for Monit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The control file: `set daemon 1` (monit's shortest cycle), one `check process` per unit,
/// matched by a pattern of its command line, acting through `systemctl --user` on the
/// sandbox's manager. `units`: (unit, pattern, fault).
pub fn config(
    sandbox: &Sandbox,
    dir: &Path,
    units: &[(String, String, &str)],
    stall_cycles: u64,
) -> String {
    let env: Vec<String> = sandbox
        .env()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let ctl = format!("/usr/bin/env {} /usr/bin/systemctl --user", env.join(" "));
    let d = dir.display();
    let mut conf = format!(
        "set daemon 1\nset logfile {d}/monit.log\nset idfile {d}/monit.id\n\
         set statefile {d}/monit.state\nset pidfile {d}/monit.pid\n\n"
    );
    for (unit, pattern, fault) in units {
        let name = unit.trim_end_matches(".service");
        let _ = writeln!(
            conf,
            "check process {name} matching \"{pattern}\"\n  \
             start program = \"{ctl} start {unit}\"\n  \
             stop program = \"{ctl} stop {unit}\"\n  \
             restart program = \"{ctl} restart {unit}\""
        );
        match *fault {
            // Normalised to all CPUs by monit: one spinning core of two reads 50 %.
            "spinning" => {
                let _ = writeln!(
                    conf,
                    "  if cpu > 40% for {stall_cycles} cycles then restart"
                );
            }
            "fd_leak" => {
                let _ = writeln!(conf, "  if filedescriptors > 90% then restart");
            }
            _ => {}
        }
        conf.push('\n');
    }
    conf
}

/// Checks the control file with `monit -t` and starts monit in the foreground.
pub fn start(dir: &Path, conf: &str) -> anyhow::Result<Monit> {
    let path = dir.join("monitrc");
    std::fs::write(&path, conf)?;
    // monit refuses a control file that others can read.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let check = Command::new("monit")
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .context("running monit (package monit)")?;
    if !check.status.success() {
        bail!(
            "monit rejects its control file: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let child = Command::new("monit")
        .arg("-I")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting monit")?;
    Ok(Monit { child })
}
