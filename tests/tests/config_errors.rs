//! A config mistake is reported with file:line:col and the key, and exit code 2.

use std::process::Command;

use selfheal_tests::agent::agent_bin;

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("selfheal-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

const BAD: &str = "[[unit]]\nname = \"web.service\"\nrestart = \"sometimes\"\n";
const EXPECTED: &str = ":3:11: unit.restart: expected one of \"always\", \"on-failure\", \"never\", found \"sometimes\"";

#[test]
fn check_config_reports_file_line_col_and_key_and_exits_2() {
    let path = write_config("bad.toml", BAD);
    let out = Command::new(agent_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim(), format!("{}{EXPECTED}", path.display()));
}

#[test]
fn run_refuses_an_invalid_config_with_the_same_message_and_exit_2() {
    let path = write_config("bad-run.toml", BAD);
    let out = Command::new(agent_bin())
        .args(["run", "--user", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}{EXPECTED}", path.display())),
        "{stderr}"
    );
}

#[test]
fn a_valid_config_passes_check_config() {
    let path = write_config("good.toml", "[[unit]]\nname = \"web.service\"\n");
    let out = Command::new(agent_bin())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 unit(s))"));
}

#[test]
fn status_without_a_running_agent_says_so() {
    let out = Command::new(agent_bin())
        .args(["status", "--socket", "/nonexistent/selfheal.sock"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no selfheal agent is running"), "{stderr}");
}
