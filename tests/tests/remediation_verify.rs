//! Issue 14 item 7 end to end: an action is verified from what it should have changed, not
//! only from systemd's job result. A fallback whose start job ends "done" but which is not
//! running afterwards (a oneshot that exits at once) is a failed action, with the evidence.

use selfheal_tests::agent::{
    history_and_log, sandbox_file, wait_for_record, wait_loaded, workload,
};
use selfheal_tests::require_root;
use selfheal_tests::{Sandbox, agent::Agent, service_unit};

const PRIMARY: &str = "primary.service";
const FALLBACK: &str = "primary-fallback.service";

#[test]
fn a_fallback_that_is_not_running_after_its_start_job_is_a_failed_action() -> anyhow::Result<()> {
    require_root!();
    let sandbox = Sandbox::start("fbverify")?;
    let runs = sandbox_file(&sandbox, "primary.runs");
    let exec = workload(&format!("fail-first {runs} 2 300"));
    sandbox.install_unit(PRIMARY, &service_unit("primary", &exec, &[]))?;
    // Its start job ends "done" and leaves the unit inactive: it takes over nothing.
    sandbox.install_unit(
        FALLBACK,
        &service_unit("fallback", "/bin/true", &["Type=oneshot"]),
    )?;
    let config = format!(
        "[policy.backoff]\ninitial = \"200ms\"\nmax_attempts = 1\n\n[[unit]]\nname = \"{PRIMARY}\"\n\n\
         [unit.remediation]\nfallback = \"{FALLBACK}\"\n"
    );
    let agent = Agent::start(&sandbox, &config, &[])?;
    wait_loaded(&agent, PRIMARY)?;
    sandbox.systemctl(&["start", PRIMARY])?;

    let action = wait_for_record(&agent, PRIMARY, "action", "the fallback action", |a| {
        a["action"] == format!("start_fallback {FALLBACK}")
    })?;
    assert_ne!(
        action["outcome"],
        "done",
        "{}",
        history_and_log(&agent, PRIMARY)
    );
    let evidence = action.to_string();
    assert!(
        evidence.contains("not active") && evidence.contains("inactive"),
        "{action:#}"
    );
    assert_eq!(sandbox.property(FALLBACK, "ActiveState")?, "inactive");
    Ok(())
}
