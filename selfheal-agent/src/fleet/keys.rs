//! Where everything lives in etcd, under `/selfheal/<fleet>/`:
//!
//! - `hosts/<host>`: this host's registration, bound to its lease (alive while it is);
//! - `groups/<group>/members/<host>`: the hosts that run the group (also lease-bound);
//! - `groups/<group>/budget`: the budget document every take and release rewrites;
//! - `groups/<group>/slots/<host>`: a held slot, bound to its own short lease;
//! - `groups/<group>/failing/<host>`: this host reports the group failing (breaker input);
//! - `groups/<group>/breaker`: the fleet breaker's document;
//! - `groups/<group>/recent/<host>`: the host's last action on the group;
//! - `pause` and `groups/<group>/pause`: operators stop automated action.

#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    pub fn new(fleet: &str) -> Self {
        Self {
            root: format!("/selfheal/{fleet}/"),
        }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn hosts(&self) -> String {
        format!("{}hosts/", self.root)
    }

    pub fn groups(&self) -> String {
        format!("{}groups/", self.root)
    }

    pub fn pause(&self) -> String {
        format!("{}pause", self.root)
    }

    /// `groups/<group>/<what>` (a prefix when `what` ends in "/").
    pub fn group(&self, group: &str, what: &str) -> String {
        format!("{}groups/{group}/{what}", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn keys_live_under_the_fleet() {
        let keys = Keys::new("prod");
        assert_eq!(
            keys.group("web", "slots/h1"),
            "/selfheal/prod/groups/web/slots/h1"
        );
        assert_eq!(keys.pause(), "/selfheal/prod/pause");
        assert!(keys.hosts().starts_with(keys.root()));
    }
}
