//! Network quarantine: attaches the `quarantine_ingress`/`quarantine_egress` cgroup_skb
//! programs to a unit's cgroup, so every packet of its processes is dropped (loopback may be
//! allowed at load time), and detaches them on release.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, cgroup_skb::CgroupSkbLinkId,
    },
};

const PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("quarantine_ingress", CgroupSkbAttachType::Ingress),
    ("quarantine_egress", CgroupSkbAttachType::Egress),
];

pub struct Quarantine {
    programs: Arc<Mutex<Ebpf>>,
    /// Units in quarantine and the links holding them there.
    links: HashMap<u32, Vec<(&'static str, CgroupSkbLinkId)>>,
}

impl Quarantine {
    pub fn new(programs: Arc<Mutex<Ebpf>>) -> Self {
        Self {
            programs,
            links: HashMap::new(),
        }
    }

    pub fn is_isolated(&self, unit: u32) -> bool {
        self.links.contains_key(&unit)
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
        for (name, attach_type) in PROGRAMS {
            let attached = program(&mut ebpf, name).and_then(|p| {
                p.attach(&dir, attach_type, CgroupAttachMode::Single)
                    .map_err(|e| format!("{name}: {e}"))
            });
            match attached {
                Ok(link) => links.push((name, link)),
                Err(e) => {
                    detach(&mut ebpf, links);
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
            let mut ebpf = self
                .programs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            detach(&mut ebpf, links);
        }
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSkb, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("{name} is missing from the eBPF object"))?
        .try_into()
        .map_err(|e: ProgramError| format!("{name}: {e}"))
}

fn detach(ebpf: &mut Ebpf, links: Vec<(&'static str, CgroupSkbLinkId)>) {
    for (name, link) in links {
        if let Ok(p) = program(ebpf, name) {
            let _ = p.detach(link);
        }
    }
}
