//! Which actions need a slot, and the fail-static rules for when etcd is away: local
//! detection and budgets go on, dead units are restarted under tightened local limits, and
//! disruptive actions are held. Pure, with the clock passed in.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

/// What an action means for a group's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionClass {
    /// Takes a serving unit out of service (restart of a live unit, isolate, scale, freeze):
    /// needs a slot.
    Disruptive,
    /// Restarts a unit that is already down: needs no slot, only local limits.
    DeadRestart,
    /// Everything else (escalation, stopping a fallback, releasing): never gated.
    Free,
}

/// `action` is the policy's name for it ("restart", "scale", ...); `live` whether systemd
/// reports the unit active right now.
pub fn classify(action: &str, live: bool) -> ActionClass {
    match action {
        "restart" if live => ActionClass::Disruptive,
        "restart" => ActionClass::DeadRestart,
        "scale" | "freeze" | "quarantine" => ActionClass::Disruptive,
        _ => ActionClass::Free,
    }
}

/// Dead-unit restarts allowed per unit within a sliding window while etcd is away.
#[derive(Debug)]
pub struct OfflineLimiter {
    per_window: usize,
    window: Duration,
    recent: HashMap<String, VecDeque<Instant>>,
}

impl OfflineLimiter {
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window: per_window as usize,
            window,
            recent: HashMap::new(),
        }
    }

    /// Whether `unit` may be restarted now; counts the restart when it may.
    pub fn allow(&mut self, unit: &str, now: Instant) -> bool {
        let recent = self.recent.entry(unit.to_owned()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            recent.pop_front();
        }
        if recent.len() >= self.per_window {
            return false;
        }
        recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_actions_on_serving_units_need_a_slot() {
        assert_eq!(classify("restart", true), ActionClass::Disruptive);
        assert_eq!(classify("restart", false), ActionClass::DeadRestart);
        assert_eq!(classify("scale", false), ActionClass::Disruptive);
        assert_eq!(classify("quarantine", true), ActionClass::Disruptive);
        assert_eq!(classify("escalate", true), ActionClass::Free);
        assert_eq!(classify("stop_fallback", true), ActionClass::Free);
    }

    #[test]
    fn offline_restarts_are_limited_per_unit_within_the_window() {
        let t0 = Instant::now();
        let mut limiter = OfflineLimiter::new(2, Duration::from_secs(60));
        assert!(limiter.allow("a", t0));
        assert!(limiter.allow("a", t0 + Duration::from_secs(1)));
        assert!(!limiter.allow("a", t0 + Duration::from_secs(2)));
        assert!(limiter.allow("b", t0 + Duration::from_secs(2)), "per unit");
        assert!(
            limiter.allow("a", t0 + Duration::from_secs(60)),
            "the window slides"
        );
        assert!(!limiter.allow("a", t0 + Duration::from_secs(60)));
    }
}
