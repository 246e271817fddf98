//! Network quarantine: attaches the `quarantine_ingress`/`quarantine_egress` cgroup_skb
//! programs to a unit's cgroup, so every packet of its processes is dropped (loopback may be
//! allowed at load time), and detaches them on release. The links are pinned on bpffs (see
//! [`super::pins`]) so a quarantine in force outlives the agent's restart, and taken over at
//! start-up ([`Quarantine::adopt`]).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, links::FdLink},
};
use log::warn;

use super::pins;

const PROGRAMS: [(&str, &str, CgroupSkbAttachType); 2] = [
    (
        "quarantine_ingress",
        "ingress",
        CgroupSkbAttachType::Ingress,
    ),
    ("quarantine_egress", "egress", CgroupSkbAttachType::Egress),
];

pub struct Quarantine {
    programs: Arc<Mutex<Ebpf>>,
    /// Where links are pinned and the configured unit names the pins are named after (`None`:
    /// unpinned, the quarantine ends with the agent).
    pins: Option<(PathBuf, Vec<String>)>,
    /// Units in quarantine: the links holding them there and their pins. Dropping a link whose
    /// pin is gone detaches it.
    links: HashMap<u32, Vec<(FdLink, Option<PathBuf>)>>,
    /// Quarantines taken over for units not monitored yet (instances a pattern adopts after
    /// the start), by name, until [`Quarantine::name_unit`] gives them an index.
    parked: HashMap<String, Vec<(FdLink, Option<PathBuf>)>>,
}

/// What [`Quarantine::adopt`] found on bpffs.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Units whose quarantine was taken over, still in force in the kernel.
    pub adopted: Vec<u32>,
    /// Units the saved state says are quarantined but whose pins are gone (bpffs was remounted,
    /// or the previous agent could not pin).
    pub missing: Vec<u32>,
    /// Units whose pins were removed because the saved state says their quarantine is over.
    pub dropped: Vec<String>,
}

impl Quarantine {
    pub fn new(programs: Arc<Mutex<Ebpf>>) -> Self {
        Self {
            programs,
            pins: None,
            links: HashMap::new(),
            parked: HashMap::new(),
        }
    }

    /// Pins every quarantine under `dir`, naming each pin after `names[unit]`.
    pub fn pinned_at(mut self, dir: PathBuf, names: Vec<String>) -> Self {
        self.pins = Some((dir, names));
        self
    }

    /// A unit monitored after the start (a pattern adopted it, a reload added it): its pins
    /// are named after `name`, and the quarantine parked for it at the start is its own.
    /// Returns whether it is quarantined now.
    pub fn name_unit(&mut self, unit: u32, name: &str) -> bool {
        let Some((_, names)) = &mut self.pins else {
            return false;
        };
        let slot = unit as usize;
        if names.len() <= slot {
            names.resize(slot + 1, String::new());
        }
        names[slot] = name.to_owned();
        if let Some(links) = self.parked.remove(name) {
            self.links.insert(unit, links);
        }
        self.is_isolated(unit)
    }

    pub fn is_isolated(&self, unit: u32) -> bool {
        self.links.contains_key(&unit)
    }

    /// Takes over the quarantines a previous agent pinned for the units in `quarantined` (the
    /// saved state's) and, parked until a pattern adopts them, for the units named in `later`;
    /// removes the pins of every other unit so the kernel agrees with the saved state.
    pub fn adopt(&mut self, quarantined: &[u32], later: &[String]) -> Adopted {
        let Some((dir, names)) = &self.pins else {
            return Adopted {
                missing: quarantined.to_vec(),
                ..Adopted::default()
            };
        };
        let index = |unit: &str| names.iter().position(|n| n == unit).map(|i| i as u32);
        let keep = |unit: &str| {
            index(unit).is_some_and(|i| quarantined.contains(&i)) || later.iter().any(|n| n == unit)
        };
        let (found, dropped) = pins::adopt(dir, keep);
        let mut report = Adopted {
            dropped,
            ..Adopted::default()
        };
        for (name, links) in found {
            let held: Vec<_> = links.into_iter().map(|(l, p)| (l, Some(p))).collect();
            if held.len() != PROGRAMS.len() {
                // Half a quarantine is no quarantine: end it; the unit is reported missing.
                unpin_and_detach(held);
                continue;
            }
            match index(&name) {
                Some(i) => {
                    self.links.insert(i, held);
                }
                None => {
                    self.parked.insert(name, held);
                }
            }
        }
        for &unit in quarantined {
            if self.is_isolated(unit) {
                report.adopted.push(unit);
            } else {
                report.missing.push(unit);
            }
        }
        report
    }

    /// Cuts the unit in `cgroup_dir` off the network. Idempotent.
    pub fn isolate(&mut self, unit: u32, cgroup_dir: &Path) -> Result<(), String> {
        if self.is_isolated(unit) {
            return Ok(());
        }
        let dir = std::fs::File::open(cgroup_dir).map_err(|e| {
            format!(
                "cannot open the unit's cgroup {}: {e}",
                cgroup_dir.display()
            )
        })?;
        let mut ebpf = self
            .programs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut links = Vec::new();
        for (name, direction, attach_type) in PROGRAMS {
            let mut attach = || {
                let p = program(&mut ebpf, name)?;
                let id = p
                    .attach(&dir, attach_type, CgroupAttachMode::Single)
                    .map_err(|e| format!("{name}: {e}"))?;
                let link = p.take_link(id).map_err(|e| format!("{name}: {e}"))?;
                FdLink::try_from(link).map_err(|e| format!("{name}: {e}"))
            };
            let held = attach().and_then(|link| match self.pin_path(unit, direction) {
                None => Ok((link, None)),
                Some(at) => match pins::pin(link, &at) {
                    Ok(link) => Ok((link, Some(at))),
                    // Pinning consumed the link: attach again, held by the agent alone.
                    Err(e) => {
                        warn!("{e}; the quarantine lasts only while the agent runs");
                        attach().map(|link| (link, None))
                    }
                },
            });
            match held {
                Ok(held) => links.push(held),
                Err(e) => {
                    unpin_and_detach(links);
                    return Err(format!("cannot quarantine {}: {e}", cgroup_dir.display()));
                }
            }
        }
        self.links.insert(unit, links);
        Ok(())
    }

    /// Lets the unit's traffic flow again. Idempotent.
    pub fn release(&mut self, unit: u32) {
        if let Some(links) = self.links.remove(&unit) {
            unpin_and_detach(links);
        }
    }

    /// Where `unit`'s link in `direction` is pinned (`None`: pinning is off).
    fn pin_path(&self, unit: u32, direction: &str) -> Option<PathBuf> {
        let (dir, names) = self.pins.as_ref()?;
        Some(pins::path(dir, names.get(unit as usize)?, direction))
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSkb, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("{name} is missing from the eBPF object"))?
        .try_into()
        .map_err(|e: ProgramError| format!("{name}: {e}"))
}

fn unpin_and_detach(links: Vec<(FdLink, Option<PathBuf>)>) {
    let pins: Vec<PathBuf> = links.iter().filter_map(|(_, p)| p.clone()).collect();
    pins::unpin(&pins);
    drop(links);
}
