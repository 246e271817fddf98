//! The tracker's own table of units: what it needs to find a unit from a D-Bus signal, to keep
//! the kernel filter in line and to tell the engine what changed. The engine keeps each unit's
//! record (policy, systemd state, history, view); the tracker never writes it, it sends
//! [`super::tracker::UnitChange`]s. Indices are handed out here only: a unit adopted by a
//! pattern and one a reload adds take the next index in the order the engine hears of them.

use zbus::zvariant::OwnedObjectPath;

/// One unit as the tracker knows it.
#[derive(Debug, Default)]
pub struct Tracked {
    pub name: String,
    /// The `[[unit]]` pattern that adopted it (`None`: named exactly).
    pub pattern: Option<String>,
    /// Let go by the engine: its index stays taken, signals for it are ignored.
    pub retired: bool,
    /// systemd's object for the unit, once loaded.
    pub object_path: Option<OwnedObjectPath>,
    /// Loaded and backed by a unit file (not "not-found").
    pub exists: bool,
    /// The cgroup (relative to the v2 root) in the kernel filter, and its id.
    pub watched_cgroup: Option<String>,
    pub cgroup_id: Option<u64>,
}

#[derive(Debug, Default)]
pub struct TrackedUnits {
    units: Vec<Tracked>,
}

/// Which units a signal is about.
#[derive(Debug)]
pub enum Target {
    Path(String),
    Name(String),
    /// Every unit systemd had not loaded (after a daemon-reload, or the agent's own).
    Missing,
}

impl TrackedUnits {
    /// The config's exact names, in file order: indices `0..n`, as the engine's table has them.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            units: names
                .into_iter()
                .map(|name| Tracked {
                    name,
                    ..Tracked::default()
                })
                .collect(),
        }
    }

    /// Adds a unit at the next index and returns it (never an index given before).
    pub fn add(&mut self, name: &str, pattern: Option<String>) -> u32 {
        self.units.push(Tracked {
            name: name.to_owned(),
            pattern,
            ..Tracked::default()
        });
        (self.units.len() - 1) as u32
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The unit at `index`, unless it was let go.
    pub fn get(&self, index: u32) -> Option<&Tracked> {
        self.units.get(index as usize).filter(|u| !u.retired)
    }

    pub fn get_mut(&mut self, index: u32) -> Option<&mut Tracked> {
        self.units.get_mut(index as usize).filter(|u| !u.retired)
    }

    /// The index of the monitored (not retired) unit called `name`.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        let index = self
            .units
            .iter()
            .position(|u| !u.retired && u.name == name)?;
        Some(index as u32)
    }

    /// Units adopted by `pattern` so far (its cap counts these).
    pub fn instances_of(&self, pattern: &str) -> usize {
        self.units
            .iter()
            .filter(|u| !u.retired && u.pattern.as_deref() == Some(pattern))
            .count()
    }

    /// The monitored units `target` is about.
    pub fn find(&self, target: &Target) -> Vec<u32> {
        (0u32..)
            .zip(&self.units)
            .filter(|(_, u)| !u.retired)
            .filter(|(_, u)| match target {
                Target::Path(p) => u.object_path.as_ref().is_some_and(|o| o.as_str() == p),
                Target::Name(n) => u.name == *n,
                Target::Missing => !u.exists,
            })
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_the_config_then_every_addition_and_a_retired_one_stays_taken() {
        let mut units = TrackedUnits::new(["a.service".to_owned(), "b.service".to_owned()]);
        assert_eq!(units.index_of("b.service"), Some(1));
        let adopted = units.add("work@1.service", Some("work@*.service".into()));
        assert_eq!(adopted, 2);
        assert_eq!(units.instances_of("work@*.service"), 1);
        units.get_mut(0).expect("a").retired = true;
        assert_eq!(units.index_of("a.service"), None);
        assert!(units.get(0).is_none());
        // The same name again: a new index, the old one stays retired.
        assert_eq!(units.add("a.service", None), 3);
        assert_eq!(units.index_of("a.service"), Some(3));
        assert_eq!(units.len(), 4);
    }

    #[test]
    fn a_signal_finds_its_units_by_object_path_name_or_as_missing() {
        let mut units = TrackedUnits::new(["a.service".to_owned(), "b.service".to_owned()]);
        let a = units.get_mut(0).expect("a");
        a.object_path = Some(
            OwnedObjectPath::try_from("/org/freedesktop/systemd1/unit/a_2eservice")
                .expect("a valid path"),
        );
        a.exists = true;
        let path = Target::Path("/org/freedesktop/systemd1/unit/a_2eservice".into());
        assert_eq!(units.find(&path), [0]);
        assert_eq!(units.find(&Target::Name("b.service".into())), [1]);
        assert_eq!(units.find(&Target::Missing), [1]);
        units.get_mut(1).expect("b").retired = true;
        assert!(
            units.find(&Target::Missing).is_empty(),
            "a retired unit is no target"
        );
    }
}
