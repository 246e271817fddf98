//! selfheal's agent as a library: the daemon's parts, which `main.rs` wires to the command line.
//!
//! Data flows one way: [`sensors`] → observations → [`detect`] → problems → [`policy`] →
//! actions → [`act`], with outcomes back to the policy; [`units`] keeps the monitored units and
//! the kernel filter current; [`report`] is what operators read.

pub mod act;
pub mod cgroupfs;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod fleet;
pub mod policy;
pub mod report;
pub mod sensors;
pub mod systemd;
pub mod units;
