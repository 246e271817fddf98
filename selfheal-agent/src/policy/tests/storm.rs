//! The host-wide storm breaker.

use super::*;

fn five_units() -> Harness {
    let config = PolicyConfig {
        storm: StormConfig {
            max_units: 2,
            calm_period: secs(120),
        },
        ..PolicyConfig::default()
    };
    let units = ["a", "b", "c", "d", "e"].map(|n| spec(&format!("{n}.service")));
    Harness::new(config, units.to_vec())
}

/// Restarts whatever is due and reports it done; returns the units restarted.
fn serve(h: &mut Harness, span: Duration) -> Vec<u32> {
    let mut restarted = Vec::new();
    let end = h.now + span;
    while h.now < end {
        h.advance(secs(1));
        for decision in h.tick() {
            if has(&decision, &Action::Restart) {
                restarted.push(decision.unit);
                h.done(&decision);
            }
        }
    }
    restarted
}

#[test]
fn many_units_failing_at_once_trip_the_storm_breaker() {
    let mut h = five_units();
    let decisions: Vec<Decision> = (0..5).map(|unit| h.crash(unit)).collect();
    for held in &decisions[2..] {
        assert!(held.reason.contains("storm breaker"), "{}", held.reason);
    }
    let storm = h.policy.storm_status(h.now);
    assert!(storm.tripped);
    assert_eq!(storm.held, ["c.service", "d.service", "e.service"]);
    assert!(h.status(3).held_by_storm);

    let restarted = serve(&mut h, secs(119));
    assert_eq!(
        restarted,
        [0, 1],
        "only the first two are restarted before calm"
    );
}

#[test]
fn the_storm_breaker_releases_held_units_after_calm_a_few_at_a_time() {
    let mut h = five_units();
    for unit in 0..5 {
        h.crash(unit);
    }
    serve(&mut h, secs(119));
    let released = serve(&mut h, secs(10));
    assert_eq!(released, [2, 3], "calm: as many as the limit allows");
    assert!(
        h.policy.storm_status(h.now).tripped,
        "the third trips it again"
    );
    let last = serve(&mut h, secs(300));
    assert_eq!(last, [4]);
    assert!(!h.policy.storm_status(h.now).tripped);
    assert!(h.policy.storm_status(h.now).held.is_empty());
}

#[test]
fn a_held_problem_that_clears_is_dropped() {
    let mut h = five_units();
    for unit in 0..3 {
        h.problem(unit, ProblemKind::ConsecutiveFailures);
    }
    assert!(h.status(2).held_by_storm);
    h.cleared(2, ProblemKind::ConsecutiveFailures);
    assert!(!h.status(2).held_by_storm);
    assert!(!serve(&mut h, secs(600)).contains(&2));
}

#[test]
fn incidents_already_running_go_on_during_a_storm() {
    let mut h = five_units();
    h.crash(0);
    h.crash(1);
    h.crash(2);
    let restart = h.next_action(0, secs(2)).unwrap();
    h.done(&restart);
    h.advance(secs(2));
    // Unit 0's recovery fails: its incident continues although the breaker is tripped.
    let decision = h.crash(0);
    assert!(
        decision.reason.contains("restart attempt 2 of 3"),
        "{}",
        decision.reason
    );
}
