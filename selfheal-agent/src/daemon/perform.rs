//! Carries out the supervisor's [`Effects`]: history into the unit table (and the log), the
//! audit log, metrics, actions to the actuator, and the note that the state must be saved.

use std::time::SystemTime;

use log::{info, warn};

use super::{
    engine::Engine,
    supervisor::{AuditNote, Effects, MetricNote},
};
use crate::report::{audit::AuditRecord, history::Event};

impl Engine {
    pub(super) fn perform(&mut self, fx: Effects) {
        self.dirty |= fx.save;
        // Every change the policy makes to a unit comes with a history entry or an action.
        for unit in fx
            .history
            .iter()
            .map(|(u, _)| u)
            .chain(fx.run.iter().map(|w| &w.unit))
        {
            self.unsettle(*unit);
        }
        for note in &fx.audit {
            self.p.audit.record(&audit_record(note));
        }
        for note in fx.metrics {
            self.metric(note);
        }
        if !fx.history.is_empty() {
            let mut state = self.p.state.lock();
            for (unit, event) in fx.history {
                let Some(u) = state.unit_mut(unit) else {
                    continue;
                };
                log_event(&u.name, &event);
                u.record(SystemTime::now(), event);
            }
        }
        for work in fx.run {
            self.start(work);
        }
    }

    fn metric(&self, note: MetricNote) {
        let m = &self.p.metrics;
        match note {
            MetricNote::ProblemDetected { unit, kind } => m.problem_detected(&unit, &kind),
            MetricNote::ActionFinished {
                unit,
                action,
                result,
            } => m.action_finished(&unit, action, result),
            MetricNote::ProbeFinished {
                unit,
                probe,
                ok,
                latency,
            } => m.probe_finished(&unit, &probe, ok, latency),
        }
    }
}

fn audit_record(note: &AuditNote) -> AuditRecord<'_> {
    match note {
        AuditNote::Decision {
            unit,
            problem,
            evidence,
            actions,
            reason,
            dry_run,
        } => AuditRecord::Decision {
            unit,
            problem,
            evidence,
            actions,
            reason,
            dry_run: *dry_run,
        },
        AuditNote::Action {
            unit,
            action,
            outcome,
            detail,
            duration_ms,
            issued_ns,
            slot,
        } => AuditRecord::Action {
            unit,
            action,
            outcome,
            detail,
            duration_ms: *duration_ms,
            issued_monotonic_ns: *issued_ns,
            slot: slot.as_ref(),
        },
    }
}

/// Every history entry is also a log line; a failed action is a warning.
fn log_event(unit: &str, event: &Event) {
    match event {
        Event::Decision {
            problem,
            action,
            reason,
            ..
        } => info!("{unit}: {problem}: {action} ({reason})"),
        Event::Action { outcome, .. } if outcome == "failed" => {
            warn!("{unit}: {}", event.summary());
        }
        Event::Unit { message } => info!("{unit}: {message}"),
        _ => info!("{unit}: {}", event.summary()),
    }
}
