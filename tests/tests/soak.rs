//! The short form of the chaos soak (`cargo xtask soak` runs the long one): twenty units
//! misbehaving under a real `systemd --user` while the agent is SIGKILLed, SIGSTOPped and
//! restarted at random; the invariants are in `selfheal_tests::soak`.

use std::time::Duration;

use selfheal_tests::require_root;

/// Long enough for crash loops to spend their budgets and the agent to die a few times.
const SHORT: Duration = Duration::from_secs(90);

#[test]
fn the_fleet_and_the_agent_survive_ninety_seconds_of_chaos() -> anyhow::Result<()> {
    require_root!();
    let report = selfheal_tests::soak::run(SHORT)?;
    eprintln!("soak: {report}");
    assert!(
        report.restarts_done > 0,
        "the agent restarted nothing: {report}"
    );
    // Otherwise "no freeze left behind" checked nothing. (Actions in flight are caught by a
    // status sample only now and then: their count is reported, not required.)
    assert!(
        report.isolations > 0,
        "the suspect was never isolated: {report}"
    );
    assert!(
        report.agent_kills + report.agent_stops > 0,
        "the agent was never hit: {report}"
    );
    Ok(())
}
