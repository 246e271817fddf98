//! Sensors turn raw data (kernel ring buffers and maps, systemd's view) into observations.

pub mod ebpf;
