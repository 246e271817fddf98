//! Exit records the kernel had no ring-buffer room for. The exit hook counts them per unit
//! (`UNIT_EXITS`); each sampling pass reads the counts, and a unit whose count grew is
//! re-read from systemd off the event path. systemd's answer comes back as an input of its
//! own, so a main process whose exit record was lost is still acted on (see
//! `supervisor/resync.rs`).

use log::warn;

use super::{
    engine::Engine,
    supervisor::{Input, Resync},
};
use crate::systemd::read_snapshot;

impl Engine {
    /// The units' lost counts as the last pass read them (unit, total since load).
    pub(super) fn on_lost_counts(&mut self, counts: Vec<(u32, u64)>) {
        for (unit, lost) in counts {
            let seen = self.lost_seen.entry(unit).or_default();
            if lost <= *seen {
                continue;
            }
            let grew = lost - *seen;
            *seen = lost;
            self.feed(Input::ExitsLost { unit, lost: grew });
            self.resync(unit);
        }
    }

    /// Asks systemd about the unit on a task of its own; the answer is fed to the supervisor
    /// by [`Engine::on_resynced`].
    fn resync(&self, unit: u32) {
        let Some((name, path)) = self
            .p
            .state
            .lock()
            .unit(unit)
            .and_then(|u| Some((u.name.clone(), u.object_path.clone()?)))
        else {
            return;
        };
        let conn = self.p.conn.clone();
        let answers = self.resync_tx.clone();
        tokio::spawn(async move {
            match read_snapshot(&conn, &name, &path).await {
                Ok(s) => {
                    let resync = Resync {
                        active_state: s.active_state,
                        result: s.result,
                        exec_main_pid: s.exec_main_pid,
                        exec_main_code: s.exec_main_code,
                        exec_main_status: s.exec_main_status,
                    };
                    let _ = answers.send((unit, resync)).await;
                }
                Err(e) => warn!("{name}: exit records were lost and systemd cannot be asked: {e}"),
            }
        });
    }

    pub(super) fn on_resynced(&mut self, unit: u32, resync: Resync) {
        self.sync_facts(unit);
        self.feed(Input::Resynced { unit, resync });
        self.note_incident(unit, std::time::Instant::now());
    }
}
