//! The fleet storm breaker's state machine. When more than a share of a group's hosts report
//! it failing within a window, the breaker opens and no host acts on the group; after the
//! cool-down one canary host may try (half-open); its success closes the breaker, its failure
//! opens it again. Pure, with the clock passed in (Unix seconds, as stored in etcd).

use serde::{Deserialize, Serialize};

use super::config::Share;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Closed,
    Open,
    HalfOpen,
}

/// The group's breaker document in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerDoc {
    pub phase: Phase,
    /// When the current phase began.
    pub since: u64,
    /// The host trying while half-open.
    pub canary: Option<String>,
    /// Failures first reported before this instant were answered by the last close.
    pub closed_at: u64,
}

/// One host's report that the group fails there, with when its failure began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub host: String,
    pub since: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub threshold: Share,
    pub window: u64,
    pub cooldown: u64,
}

/// What the breaker says about one action on the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Closed (or this host is the canary): go on to take a slot.
    Proceed,
    /// Too many hosts fail: write this open document, then hold.
    Trip(BreakerDoc),
    /// Open or half-open with another canary: hold.
    Held(String),
    /// The cool-down is over: try to become the canary by writing this document.
    TryCanary(BreakerDoc),
}

pub fn judge(
    doc: Option<&BreakerDoc>,
    reports: &[Report],
    members: usize,
    limits: Limits,
    me: &str,
    now: u64,
) -> Verdict {
    let closed_at = doc.map_or(0, |d| d.closed_at);
    let canary = |since| BreakerDoc {
        phase: Phase::HalfOpen,
        since,
        canary: Some(me.to_owned()),
        closed_at,
    };
    match doc.map(|d| (d.phase, d.since, d.canary.as_deref())) {
        None | Some((Phase::Closed, ..)) => {
            let from = now.saturating_sub(limits.window).max(closed_at);
            let failing = reports.iter().filter(|r| r.since >= from).count();
            if tripped(limits.threshold, failing, members) {
                Verdict::Trip(BreakerDoc {
                    phase: Phase::Open,
                    since: now,
                    canary: None,
                    closed_at,
                })
            } else {
                Verdict::Proceed
            }
        }
        Some((Phase::Open, since, _)) if now >= since + limits.cooldown => {
            Verdict::TryCanary(canary(now))
        }
        Some((Phase::Open, since, _)) => Verdict::Held(format!(
            "the fleet breaker is open (cool-down ends in {}s)",
            (since + limits.cooldown).saturating_sub(now)
        )),
        Some((Phase::HalfOpen, _, Some(host))) if host == me => Verdict::Proceed,
        // A canary that neither succeeded nor failed within a cool-down is presumed gone.
        Some((Phase::HalfOpen, since, _)) if now >= since + limits.cooldown => {
            Verdict::TryCanary(canary(now))
        }
        Some((Phase::HalfOpen, _, host)) => Verdict::Held(format!(
            "the fleet breaker is half-open: canary {} is trying",
            host.unwrap_or("?")
        )),
    }
}

/// More than the threshold: a count of hosts, or a share of the hosts that run the group.
pub fn tripped(threshold: Share, failing: usize, members: usize) -> bool {
    match threshold {
        Share::Count(n) => failing > n as usize,
        Share::Percent(p) => failing * 100 > usize::from(p) * members.max(failing),
    }
}

/// The document after the canary's trial: closed on success, open again on failure.
pub fn after_canary(doc: &BreakerDoc, ok: bool, now: u64) -> BreakerDoc {
    BreakerDoc {
        phase: if ok { Phase::Closed } else { Phase::Open },
        since: now,
        canary: None,
        closed_at: if ok { now } else { doc.closed_at },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        threshold: Share::Percent(50),
        window: 60,
        cooldown: 30,
    };

    fn reports(n: usize, since: u64) -> Vec<Report> {
        (0..n)
            .map(|i| Report {
                host: format!("h{i}"),
                since,
            })
            .collect()
    }

    #[test]
    fn more_than_the_share_failing_opens_the_breaker() {
        assert_eq!(
            judge(None, &reports(2, 100), 4, LIMITS, "a", 110),
            Verdict::Proceed
        );
        let Verdict::Trip(doc) = judge(None, &reports(3, 100), 4, LIMITS, "a", 110) else {
            panic!("three of four failing must trip");
        };
        assert_eq!((doc.phase, doc.since), (Phase::Open, 110));
        // Reports older than the window do not count.
        assert_eq!(
            judge(None, &reports(3, 10), 4, LIMITS, "a", 110),
            Verdict::Proceed
        );
    }

    #[test]
    fn open_holds_until_the_cooldown_then_one_canary_tries() {
        let open = BreakerDoc {
            phase: Phase::Open,
            since: 100,
            canary: None,
            closed_at: 0,
        };
        assert!(matches!(
            judge(Some(&open), &[], 4, LIMITS, "a", 129),
            Verdict::Held(_)
        ));
        let Verdict::TryCanary(half) = judge(Some(&open), &[], 4, LIMITS, "a", 130) else {
            panic!("the cool-down is over");
        };
        assert_eq!(half.canary.as_deref(), Some("a"));
        assert_eq!(
            judge(Some(&half), &[], 4, LIMITS, "a", 131),
            Verdict::Proceed
        );
        assert!(matches!(
            judge(Some(&half), &[], 4, LIMITS, "b", 131),
            Verdict::Held(_)
        ));
        // A canary silent for a whole cool-down is replaced.
        assert!(matches!(
            judge(Some(&half), &[], 4, LIMITS, "b", 160),
            Verdict::TryCanary(_)
        ));
    }

    #[test]
    fn the_canary_closes_or_reopens_and_old_failures_stay_answered() {
        let half = BreakerDoc {
            phase: Phase::HalfOpen,
            since: 130,
            canary: Some("a".into()),
            closed_at: 0,
        };
        let reopened = after_canary(&half, false, 140);
        assert_eq!((reopened.phase, reopened.since), (Phase::Open, 140));
        let closed = after_canary(&half, true, 140);
        assert_eq!(closed.phase, Phase::Closed);
        // The failures that opened it were reported before the close: they do not reopen it.
        assert_eq!(
            judge(Some(&closed), &reports(4, 100), 4, LIMITS, "b", 141),
            Verdict::Proceed
        );
        assert!(matches!(
            judge(Some(&closed), &reports(4, 141), 4, LIMITS, "b", 142),
            Verdict::Trip(_)
        ));
    }

    #[test]
    fn a_count_threshold_is_exceeded_not_reached() {
        assert!(!tripped(Share::Count(2), 2, 10));
        assert!(tripped(Share::Count(2), 3, 10));
        // Reports from hosts that are not (yet) registered still count.
        assert!(tripped(Share::Percent(50), 2, 0));
    }
}
