//! The supervisor's unit table: a unit's index (the kernel's unit number, the policy's index)
//! by name, its name by index, and what the tracker last said about it. Units come and go at
//! run time through [`UnitTable::insert`] and [`UnitTable::remove`] (config reload, instances
//! a pattern adopts); the engine never reuses an index while the agent runs, so a late event
//! for a unit that was let go finds no unit instead of another one.

use std::collections::HashMap;

use crate::{detect::exit::ExitRules, policy::UnitContext};

/// What the tracker knows about a unit that the supervisor's decisions need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitFacts {
    /// systemd's MainPID (0 when none).
    pub main_pid: u32,
    pub context: UnitContext,
    /// The unit's own meaning of success (`SuccessExitStatus=`, `RestartPreventExitStatus=`).
    pub exit_rules: ExitRules,
}

#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub name: String,
    pub facts: UnitFacts,
    /// Pid of the last main process whose exit was handed in (0: none), so that an exit
    /// read back from systemd after lost records is not acted on twice.
    pub last_main_exit: u32,
}

#[derive(Debug, Default)]
pub(super) struct UnitTable {
    slots: Vec<Option<Entry>>,
    by_name: HashMap<String, u32>,
}

impl UnitTable {
    /// The unit `name` at `index`, an index the unit table (`units::add`) handed out.
    pub fn insert(&mut self, index: u32, name: &str) {
        let slot = index as usize;
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        self.slots[slot] = Some(Entry {
            name: name.to_owned(),
            facts: UnitFacts::default(),
            last_main_exit: 0,
        });
        self.by_name.insert(name.to_owned(), index);
    }

    /// The unit at `index` is let go; its slot stays empty.
    pub fn remove(&mut self, index: u32) {
        let Some(entry) = self.slots.get_mut(index as usize).and_then(Option::take) else {
            return;
        };
        if self.by_name.get(&entry.name) == Some(&index) {
            self.by_name.remove(&entry.name);
        }
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub fn get(&self, unit: u32) -> Option<&Entry> {
        self.slots.get(unit as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, unit: u32) -> Option<&mut Entry> {
        self.slots.get_mut(unit as usize)?.as_mut()
    }

    pub fn name(&self, unit: u32) -> Option<&str> {
        self.get(unit).map(|e| e.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_unit_leaves_its_slot_empty_and_its_name_free() {
        let mut table = UnitTable::default();
        table.insert(0, "a.service");
        table.insert(1, "b.service");
        table.remove(0);
        assert!(table.get(0).is_none());
        assert_eq!(table.index_of("a.service"), None);
        // Added again, it lives at the index the unit table gives it now.
        table.insert(2, "a.service");
        assert_eq!(table.index_of("a.service"), Some(2));
        assert!(table.get(0).is_none(), "the old index stays retired");
        assert_eq!(table.name(1), Some("b.service"));
    }
}
