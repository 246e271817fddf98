//! Budget arithmetic: how many hosts may act on a group at once, and whether this host may
//! take a slot given who holds one now. Pure; the etcd side lives in `slots.rs`.

use serde::{Deserialize, Serialize};

use super::config::Share;

/// The slot limit for a group that `members` hosts run. A percentage rounds down but never
/// below one host: a budget of 10 % on three hosts still lets one heal.
pub fn limit(budget: Share, members: usize) -> usize {
    match budget {
        Share::Count(n) => n as usize,
        Share::Percent(p) => (members * usize::from(p) / 100).max(1),
    }
}

/// What this host may do about a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A slot is free: try to take it (the compare-and-swap may still lose a race).
    Take { limit: usize },
    /// Every slot is held: wait for one to be released or to expire.
    Full { holders: Vec<String>, limit: usize },
    /// No host is registered as running the group, not even this one: the view is missing,
    /// which never means "everyone may act".
    NoView,
}

pub fn admit(budget: Share, members: &[String], holders: &[String], me: &str) -> Admission {
    if !members.iter().any(|m| m == me) {
        return Admission::NoView;
    }
    let limit = limit(budget, members.len());
    if holders.len() >= limit {
        return Admission::Full {
            holders: holders.to_vec(),
            limit,
        };
    }
    Admission::Take { limit }
}

/// The group's budget document: rewritten by every take and release, so two hosts that read
/// the same free slot cannot both win the compare-and-swap on its revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetDoc {
    pub limit: usize,
    pub members: usize,
    pub holders: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_percentage_rounds_down_but_never_below_one() {
        assert_eq!(limit(Share::Percent(25), 8), 2);
        assert_eq!(limit(Share::Percent(25), 7), 1);
        assert_eq!(limit(Share::Percent(10), 3), 1);
        assert_eq!(limit(Share::Percent(100), 5), 5);
        assert_eq!(limit(Share::Count(2), 1), 2);
    }

    #[test]
    fn a_full_budget_makes_the_next_host_wait() {
        let members = hosts(&["a", "b", "c"]);
        assert_eq!(
            admit(Share::Count(1), &members, &[], "a"),
            Admission::Take { limit: 1 }
        );
        assert_eq!(
            admit(Share::Count(1), &members, &hosts(&["b"]), "a"),
            Admission::Full {
                holders: hosts(&["b"]),
                limit: 1
            }
        );
        assert_eq!(
            admit(Share::Count(2), &members, &hosts(&["b"]), "a"),
            Admission::Take { limit: 2 }
        );
    }

    #[test]
    fn a_missing_view_is_not_permission() {
        assert_eq!(admit(Share::Count(5), &[], &[], "a"), Admission::NoView);
        assert_eq!(
            admit(Share::Percent(50), &hosts(&["b"]), &[], "a"),
            Admission::NoView
        );
    }
}
