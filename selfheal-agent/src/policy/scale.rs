//! Scale steps: step `s` multiplies the configured bases by `factor^s`, capped at `max_factor`
//! (×1.5, ×2.25, ×3 by default); for a numbered template instance each step also starts one
//! more instance, up to `max_instances` in all. Step 0 is the base.

use super::{
    action::{Action, ScaledLimits},
    config::ScaleConfig,
    remediation::{Remediation, ScaleBases},
};

/// The multiple of the base at `step`.
pub fn factor(config: &ScaleConfig, step: u32) -> f64 {
    let exponent = i32::try_from(step).unwrap_or(i32::MAX);
    config.factor.powi(exponent).min(config.max_factor)
}

/// Steps that still raise the resource limits.
fn resource_steps(config: &ScaleConfig) -> u32 {
    let mut steps = 0;
    while factor(config, steps) < config.max_factor {
        steps += 1;
    }
    steps
}

/// The highest step for this unit.
pub fn max_step(config: &ScaleConfig, remediation: &Remediation) -> u32 {
    resource_steps(config).max(remediation.max_instances.saturating_sub(1))
}

fn scaled(base: Option<u64>, factor: f64) -> Option<u64> {
    // Limits are far below 2^53: the round trip through f64 is exact enough.
    base.map(|b| (b as f64 * factor).round() as u64)
}

pub fn limits(bases: &ScaleBases, factor: f64) -> ScaledLimits {
    ScaledLimits {
        cpu_quota_percent: scaled(bases.cpu_quota_percent, factor),
        memory_max: scaled(bases.memory_max, factor),
        memory_high: scaled(bases.memory_high, factor),
        tasks_max: scaled(bases.tasks_max, factor),
    }
}

/// The actions that move a unit from step `from` to the neighbouring step `to`; empty when `to`
/// is out of range.
pub fn step_actions(
    config: &ScaleConfig,
    remediation: &Remediation,
    from: u32,
    to: u32,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if to > max_step(config, remediation) || from.abs_diff(to) != 1 {
        return actions;
    }
    // The step whose resources or instance change: the higher of the two.
    let changing = from.max(to);
    if changing <= resource_steps(config) {
        let factor = factor(config, to);
        actions.push(Action::Scale {
            step: to,
            factor,
            limits: limits(&remediation.bases, factor),
        });
    }
    if changing < remediation.max_instances
        && let Some(instance) = remediation.extra_instance(changing)
    {
        actions.push(if to > from {
            Action::StartInstance(instance)
        } else {
            Action::StopInstance(instance)
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::remediation::RemediationConfig;

    fn unit(name: &str, max_instances: Option<u32>, memory_max: Option<u64>) -> Remediation {
        let own = RemediationConfig {
            max_instances,
            memory_max: memory_max.map(crate::policy::sizes::Bytes),
            ..RemediationConfig::default()
        };
        Remediation::resolve(name, &RemediationConfig::default(), &own).unwrap()
    }

    #[test]
    fn factors_grow_by_half_up_to_three() {
        let config = ScaleConfig::default();
        let factors: Vec<f64> = (0..5).map(|s| factor(&config, s)).collect();
        assert_eq!(factors, [1.0, 1.5, 2.25, 3.0, 3.0]);
        assert_eq!(max_step(&config, &unit("web.service", None, None)), 3);
    }

    #[test]
    fn a_step_scales_the_configured_bases() {
        let config = ScaleConfig::default();
        let web = unit("web.service", None, Some(1000));
        let actions = step_actions(&config, &web, 1, 2);
        let [
            Action::Scale {
                step,
                factor,
                limits,
            },
        ] = actions.as_slice()
        else {
            panic!("{actions:?}");
        };
        assert_eq!((*step, *factor), (2, 2.25));
        assert_eq!(limits.memory_max, Some(2250));
        assert_eq!(limits.tasks_max, None);
    }

    #[test]
    fn template_instances_are_started_one_per_step_and_stopped_in_reverse() {
        let config = ScaleConfig::default();
        let worker = unit("worker@1.service", Some(5), None);
        assert_eq!(max_step(&config, &worker), 4);
        let up = step_actions(&config, &worker, 0, 1);
        assert!(up.contains(&Action::StartInstance("worker@2.service".into())));
        // Beyond ×3 only instances change.
        let up = step_actions(&config, &worker, 3, 4);
        assert_eq!(up, [Action::StartInstance("worker@5.service".into())]);
        let down = step_actions(&config, &worker, 4, 3);
        assert_eq!(down, [Action::StopInstance("worker@5.service".into())]);
        assert!(step_actions(&config, &worker, 4, 5).is_empty());
    }
}
