//! The host-wide storm breaker. When many units fail at once the cause is usually shared (a bad
//! deploy, a kernel or storage problem) and restarting everything makes it worse: beyond
//! `max_units` units under remediation, new incidents are held until the host is calm again.
//! Incidents already running go on; their budgets bound them.

use std::time::Instant;

use super::config::StormConfig;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Storm {
    pub tripped: Option<Tripped>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tripped {
    pub since: Instant,
    /// The last time a unit not held before was held back: calm is measured from it.
    pub last_refusal: Instant,
}

impl Storm {
    /// May a new incident start, with `active` units under remediation? `already_held`: the unit
    /// was held before, so its repeating problem does not delay the calm.
    pub fn admit(
        &mut self,
        active: usize,
        already_held: bool,
        now: Instant,
        config: &StormConfig,
    ) -> Result<(), String> {
        let max = usize::try_from(config.max_units).unwrap_or(usize::MAX);
        match &mut self.tripped {
            Some(tripped) => {
                if !already_held {
                    tripped.last_refusal = now;
                }
                Err(format!(
                    "storm breaker tripped: {active} units under remediation (limit {max}); new incidents wait for calm"
                ))
            }
            None if active >= max => {
                self.tripped = Some(Tripped {
                    since: now,
                    last_refusal: now,
                });
                Err(format!(
                    "storm breaker tripped: {active} units are already under remediation (limit {max}); holding this one"
                ))
            }
            None => Ok(()),
        }
    }

    /// Releases the breaker once calm: no new unit held back for `calm_period` and room below
    /// the limit. Returns true when it released.
    pub fn poll(&mut self, active: usize, now: Instant, config: &StormConfig) -> bool {
        let Some(tripped) = &self.tripped else {
            return false;
        };
        let max = usize::try_from(config.max_units).unwrap_or(usize::MAX);
        if active < max && now >= tripped.last_refusal + config.calm_period {
            self.tripped = None;
            return true;
        }
        false
    }

    /// When it would release if nothing else happens.
    pub fn calm_at(&self, config: &StormConfig) -> Option<Instant> {
        self.tripped
            .as_ref()
            .map(|t| t.last_refusal + config.calm_period)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> StormConfig {
        StormConfig {
            max_units: 2,
            calm_period: Duration::from_secs(120),
        }
    }

    #[test]
    fn admits_below_the_limit_and_trips_at_it() {
        let now = Instant::now();
        let mut storm = Storm::default();
        assert!(storm.admit(1, false, now, &config()).is_ok());
        assert!(storm.admit(2, false, now, &config()).is_err());
        assert!(storm.tripped.is_some());
        // Tripped: even with room, new incidents wait.
        assert!(storm.admit(0, false, now, &config()).is_err());
    }

    #[test]
    fn releases_after_the_calm_period_with_room() {
        let t0 = Instant::now();
        let mut storm = Storm::default();
        let _ = storm.admit(2, false, t0, &config());
        assert!(!storm.poll(0, t0 + Duration::from_secs(119), &config()));
        assert!(!storm.poll(2, t0 + Duration::from_secs(120), &config()));
        assert!(storm.poll(1, t0 + Duration::from_secs(120), &config()));
        assert!(
            storm
                .admit(1, false, t0 + Duration::from_secs(121), &config())
                .is_ok()
        );
    }

    #[test]
    fn a_new_unit_held_back_postpones_the_calm_a_repeating_one_does_not() {
        let t0 = Instant::now();
        let mut storm = Storm::default();
        let _ = storm.admit(2, false, t0, &config());
        let _ = storm.admit(2, true, t0 + Duration::from_secs(100), &config());
        assert_eq!(
            storm.calm_at(&config()),
            Some(t0 + Duration::from_secs(120))
        );
        let _ = storm.admit(2, false, t0 + Duration::from_secs(100), &config());
        assert_eq!(
            storm.calm_at(&config()),
            Some(t0 + Duration::from_secs(220))
        );
    }
}
