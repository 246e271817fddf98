//! The policy's memory across agent restarts: [`PolicyState`], plain serde data keyed by unit
//! name (indices change with the config). An `Instant` means nothing to the next process, so
//! each is stored as milliseconds relative to the save (negative: before it) next to the
//! wall-clock time of the save; restoring shifts them so the time the agent was down counts as
//! time passed. Actions still in flight at the save are stored as done: systemd finishes a job
//! the agent started, and verification will tell.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod record;

use record::UnitRecord;

use super::{
    Policy,
    action::ActionOutcome,
    ladder::Env,
    outcome::apply_outcome,
    storm::{Storm, Tripped},
};

const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error(
        "policy state version {found} is not understood (this agent reads version {VERSION}); starting afresh"
    )]
    UnsupportedVersion { found: u32 },
}

/// Everything the policy remembers, ready for serde.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyState {
    version: u32,
    /// Wall-clock time of the save; every `*_ms` below is relative to it.
    saved_at_unix_ms: u64,
    units: BTreeMap<String, UnitRecord>,
    storm: Option<StormRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StormRecord {
    since_ms: i64,
    last_refusal_ms: i64,
}

/// Instants to and from milliseconds relative to the save.
struct Clock {
    now: Instant,
    /// How long ago the save happened (0 while saving).
    elapsed: Duration,
}

impl Clock {
    fn ms(&self, at: Instant) -> i64 {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match at.checked_duration_since(self.now) {
            Some(ahead) => millis(ahead),
            None => -millis(self.now - at),
        }
    }

    fn at(&self, ms: i64) -> Instant {
        let shift = Duration::from_millis(ms.unsigned_abs());
        let saved = self.now.checked_sub(self.elapsed).unwrap_or(self.now);
        let at = if ms >= 0 {
            saved.checked_add(shift)
        } else {
            saved.checked_sub(shift)
        };
        // Only out of range before boot or centuries ahead: the save's time is the best guess.
        at.unwrap_or(saved)
    }
}

impl Policy {
    /// Everything worth remembering, as of `now` (`wall` is the same moment on the wall clock).
    pub fn save(&self, now: Instant, wall: SystemTime) -> PolicyState {
        let clock = Clock {
            now,
            elapsed: Duration::ZERO,
        };
        let mut jitter = self.jitter.clone();
        let pending = self
            .pending
            .iter()
            .map(|(name, state)| (name.clone(), UnitRecord::from_state(state, &clock)));
        let units = self
            .units
            .iter()
            .filter(|u| !u.retired)
            .map(|u| {
                let mut state = u.state.clone();
                let mut env = Env {
                    config: &self.config,
                    jitter: &mut jitter,
                };
                for action in &u.state.in_flight {
                    apply_outcome(
                        &u.spec,
                        &mut state,
                        &mut env,
                        action,
                        &ActionOutcome::Done,
                        now,
                    );
                }
                (u.spec.name.clone(), UnitRecord::from_state(&state, &clock))
            })
            .chain(pending)
            .collect();
        let saved_at = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        PolicyState {
            version: VERSION,
            saved_at_unix_ms: u64::try_from(saved_at.as_millis()).unwrap_or(u64::MAX),
            units,
            storm: self.storm.tripped.as_ref().map(|t| StormRecord {
                since_ms: clock.ms(t.since),
                last_refusal_ms: clock.ms(t.last_refusal),
            }),
        }
    }

    /// Takes back what [`Policy::save`] stored, for the units still configured; the state of a
    /// unit a pattern may still adopt (`adoptable`) waits for [`Policy::add_unit`]. Returns the
    /// names it had state for that are neither.
    pub fn restore(
        &mut self,
        state: PolicyState,
        now: Instant,
        wall: SystemTime,
        adoptable: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, StateError> {
        if state.version != VERSION {
            return Err(StateError::UnsupportedVersion {
                found: state.version,
            });
        }
        let saved_at = UNIX_EPOCH + Duration::from_millis(state.saved_at_unix_ms);
        // A wall clock set back makes the downtime look negative: count none.
        let clock = Clock {
            now,
            elapsed: wall.duration_since(saved_at).unwrap_or_default(),
        };
        let mut unknown = Vec::new();
        for (name, record) in state.units {
            match self
                .units
                .iter_mut()
                .find(|u| !u.retired && u.spec.name == name)
            {
                Some(unit) => unit.state = record.into_state(&clock),
                None if adoptable(&name) => {
                    self.pending.insert(name, record.into_state(&clock));
                }
                None => unknown.push(name),
            }
        }
        self.wake_all();
        self.storm = Storm {
            tripped: state.storm.map(|s| Tripped {
                since: clock.at(s.since_ms),
                last_refusal: clock.at(s.last_refusal_ms),
            }),
        };
        Ok(unknown)
    }
}
