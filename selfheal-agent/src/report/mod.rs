//! What operators read and what reaches them: the per-unit history, the status socket, the
//! HTTP endpoint (metrics, health, Alertmanager webhook), alerts out, and systemd's watchdog.

pub mod alert_out;
pub mod audit;
pub mod health;
pub mod history;
pub mod http;
pub mod metrics;
pub mod status;
pub mod status_text;
pub mod watchdog;
pub mod webhook;
