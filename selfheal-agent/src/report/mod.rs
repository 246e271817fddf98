//! What operators read: the per-unit history, the status socket and its rendering.

pub mod history;
pub mod status;
pub mod status_text;
