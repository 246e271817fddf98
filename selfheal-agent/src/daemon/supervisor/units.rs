//! The supervisor's unit table: a unit's index (the kernel's unit number, the policy's index)
//! by name, its name by index, and what the tracker last said about it. Units come and go at
//! run time through [`UnitTable::add`] (config reload, and later instances found by a name
//! pattern); indices are never reused while the agent runs, so a late event for a unit that
//! was let go cannot reach another unit.

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
    /// The unit's index: its old one when already present, else the next free one.
    pub fn add(&mut self, name: &str) -> u32 {
        if let Some(index) = self.by_name.get(name) {
            return *index;
        }
        let index = self.slots.len() as u32;
        self.slots.push(Some(Entry {
            name: name.to_owned(),
            facts: UnitFacts::default(),
            last_main_exit: 0,
        }));
        self.by_name.insert(name.to_owned(), index);
        index
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
