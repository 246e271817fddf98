//! Supervised tasks. Each part of the agent that must run for as long as the agent does (the
//! exit reader, the unit tracker, the engine, the probe runner) is spawned here; one that ends
//! before shutdown is recorded as *blind*: `/health` and `status` name it (critical), and the
//! watchdog stops pinging when a part the agent cannot work without is gone, so systemd
//! restarts the agent. Shutdown drains every task through the same `JoinSet`.

use std::future::Future;

use log::error;
use tokio::{sync::watch, task::JoinSet};

/// A part of the agent that stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlindPart {
    pub name: &'static str,
    /// What the agent no longer sees or does.
    pub detail: &'static str,
    /// The agent cannot do its job without it: the watchdog stops.
    pub vital: bool,
}

#[derive(Clone)]
pub struct Parts {
    blind: watch::Sender<Vec<BlindPart>>,
    shutdown: watch::Receiver<bool>,
}

impl Parts {
    pub fn new(shutdown: watch::Receiver<bool>) -> Self {
        Self {
            blind: watch::Sender::new(Vec::new()),
            shutdown,
        }
    }

    /// Spawns `task` into `tasks`; its end before shutdown makes `part` blind.
    pub fn spawn(
        &self,
        tasks: &mut JoinSet<()>,
        part: BlindPart,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let (blind, shutdown) = (self.blind.clone(), self.shutdown.clone());
        tasks.spawn(async move {
            task.await;
            if !*shutdown.borrow() {
                error!("{} stopped: {}", part.name, part.detail);
                blind.send_modify(|parts| parts.push(part));
            }
        });
    }

    /// The parts that stopped, oldest first.
    pub fn blind(&self) -> Vec<BlindPart> {
        self.blind.borrow().clone()
    }

    /// Whether every vital part still runs.
    pub fn vital_parts_run(&self) -> bool {
        self.blind.borrow().iter().all(|p| !p.vital)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &'static str, vital: bool) -> BlindPart {
        BlindPart {
            name,
            detail: "gone",
            vital,
        }
    }

    #[tokio::test]
    async fn a_task_that_ends_before_shutdown_is_blind_and_one_ending_at_shutdown_is_not() {
        let (shutdown_tx, shutdown) = watch::channel(false);
        let parts = Parts::new(shutdown);
        let mut tasks = JoinSet::new();
        parts.spawn(&mut tasks, part("probe runner", false), async {});
        tasks.join_next().await;
        assert_eq!(parts.blind(), [part("probe runner", false)]);
        assert!(parts.vital_parts_run(), "the probe runner is not vital");

        parts.spawn(&mut tasks, part("exit reader", true), async {});
        tasks.join_next().await;
        assert!(!parts.vital_parts_run());

        let _ = shutdown_tx.send(true);
        parts.spawn(&mut tasks, part("tracker", true), async {});
        tasks.join_next().await;
        assert_eq!(
            parts.blind().len(),
            2,
            "stopping at shutdown is not blindness"
        );
    }
}
