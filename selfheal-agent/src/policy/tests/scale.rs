//! Scaling a starved unit up and back down.

use super::*;

fn scale_of(decision: &Decision) -> Option<(u32, f64, ScaledLimits)> {
    decision.actions.iter().find_map(|a| match a {
        Action::Scale {
            step,
            factor,
            limits,
        } => Some((*step, *factor, *limits)),
        _ => None,
    })
}

/// Starved, scaled, and relieved by it.
fn starve_and_relieve(h: &mut Harness) -> Decision {
    let decision = h.problem(0, starved());
    h.done(&decision);
    h.advance(secs(5));
    h.cleared(0, starved());
    h.advance(secs(60));
    h.tick();
    decision
}

#[test]
fn a_starved_unit_scales_by_half_up_to_three_times_its_base_then_holds() {
    let mut h = Harness::one(with_remediation(
        "web.service",
        "cpu_quota = \"100%\"\nmemory_max = \"1G\"\ntasks_max = 100",
    ));
    for (step, factor) in [(1, 1.5), (2, 2.25), (3, 3.0)] {
        let decision = starve_and_relieve(&mut h);
        let (got_step, got_factor, limits) = scale_of(&decision).expect("scale");
        assert_eq!((got_step, got_factor), (step, factor));
        assert_eq!(limits.cpu_quota_percent, Some((100.0 * factor) as u64));
        assert_eq!(
            limits.memory_max,
            Some(((1u64 << 30) as f64 * factor) as u64)
        );
        assert_eq!(limits.tasks_max, Some((100.0 * factor).round() as u64));
        assert_eq!(h.status(0).scale_step, step);
    }
    let held = h.problem(0, starved());
    assert!(held.actions.is_empty(), "{held:?}");
    assert!(
        held.reason.contains("already at the largest step"),
        "{}",
        held.reason
    );
    assert_eq!(h.status(0).escalated, None);
}

#[test]
fn scale_steps_back_down_after_a_healthy_period() {
    let mut h = Harness::one(spec("web.service"));
    starve_and_relieve(&mut h);
    starve_and_relieve(&mut h);
    assert_eq!(h.status(0).scale_step, 2);

    let down = h.next_action(0, secs(600)).expect("step down");
    assert_eq!(scale_of(&down).map(|s| (s.0, s.1)), Some((1, 1.5)));
    h.done(&down);
    let base = h.next_action(0, secs(601)).expect("back to the base");
    assert_eq!(scale_of(&base).map(|s| (s.0, s.1)), Some((0, 1.0)));
    h.done(&base);
    assert_eq!(h.status(0).scale_step, 0);
    assert!(h.next_action(0, secs(3600)).is_none());
}

#[test]
fn a_new_problem_postpones_the_step_down() {
    let mut h = Harness::one(spec("web.service"));
    starve_and_relieve(&mut h);
    h.advance(secs(500));
    h.problem(0, ProblemKind::PerformanceDegradation);
    h.cleared(0, ProblemKind::PerformanceDegradation);
    let scale_downs = h
        .run(secs(300))
        .iter()
        .filter(|d| scale_of(d).is_some())
        .count();
    assert_eq!(scale_downs, 0);
}

#[test]
fn scaling_that_does_not_relieve_the_unit_fails_and_escalates_after_three() {
    let mut h = Harness::one(spec("web.service"));
    let first = h.problem(0, starved());
    h.done(&first);
    let mut steps = vec![scale_of(&first).unwrap().0];
    while let Some(next) = h.next_action(0, secs(400)) {
        if let Some((step, ..)) = scale_of(&next) {
            steps.push(step);
            h.done(&next);
            continue;
        }
        assert!(
            matches!(next.actions.as_slice(), [Action::Escalate { .. }]),
            "{next:?}"
        );
        break;
    }
    assert_eq!(steps, [1, 2, 3]);
    assert!(h.status(0).escalated.is_some());
}

#[test]
fn a_template_instance_starts_more_instances_up_to_its_maximum() {
    let mut h = Harness::one(with_remediation("worker@1.service", "max_instances = 2"));
    let decision = starve_and_relieve(&mut h);
    assert!(has(
        &decision,
        &Action::StartInstance("worker@2.service".into())
    ));
    starve_and_relieve(&mut h);
    starve_and_relieve(&mut h);
    let more = h.problem(0, starved());
    assert!(more.actions.is_empty());
    h.cleared(0, starved());
    let mut stopped = Vec::new();
    while let Some(down) = h.next_action(0, secs(601)) {
        stopped.extend(
            down.actions
                .iter()
                .filter(|a| matches!(a, Action::StopInstance(_)))
                .cloned(),
        );
        h.done(&down);
    }
    assert_eq!(stopped, [Action::StopInstance("worker@2.service".into())]);
    assert_eq!(h.status(0).scale_step, 0);
}

/// The engine fills in the limits the config leaves to systemd (here `TasksMax=`) before it
/// runs the action, and reports the outcome of the action it ran.
fn with_systemd_tasks_max(decision: &Decision) -> Decision {
    let mut ran = decision.clone();
    for action in &mut ran.actions {
        if let Action::Scale { limits, .. } = action {
            limits.tasks_max = Some(4915);
        }
    }
    ran
}

#[test]
fn a_scale_outcome_with_limits_filled_in_by_the_engine_completes_the_action() {
    let mut config = PolicyConfig {
        cooldown: secs(1),
        ..PolicyConfig::default()
    };
    config.scale.step_down_after = secs(4);
    let unit = with_remediation(
        "hungry.service",
        "cpu_quota = \"20%\"\nmemory_max = \"64M\"\n[custom]\npressure = [\"scale\"]",
    );
    let mut h = Harness::new(config, vec![unit]);
    let pressure = ProblemKind::Custom("pressure".into());
    let up = h.problem(0, pressure.clone());
    assert_eq!(scale_of(&up).map(|s| s.0), Some(1), "{up:?}");
    let ran = with_systemd_tasks_max(&up);
    h.done(&ran);
    h.advance(secs(1));
    h.cleared(0, pressure);
    assert_eq!(h.status(0).scale_step, 1);

    let down = h.next_action(0, secs(30)).expect("step down");
    assert_eq!(
        scale_of(&down).map(|s| (s.0, s.1)),
        Some((0, 1.0)),
        "{down:?}"
    );
    assert!(
        down.reason.contains("scaling down to step 0"),
        "{}",
        down.reason
    );
    h.done(&with_systemd_tasks_max(&down));
    assert_eq!(h.status(0).scale_step, 0);
    assert!(h.next_action(0, secs(60)).is_none());
}
