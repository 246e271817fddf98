//! /proc/net/tcp{,6}: every socket of the table counts as one of the unit's, so the queue
//! sums see every line.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use selfheal_agent::sensors::{sockets::QueueReading, tcp_tables::NetnsTable};

fuzz_target!(|data: &[u8]| {
    let Ok(table) = std::str::from_utf8(data) else {
        return;
    };
    let inodes: HashSet<u64> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
        .collect();
    let mut parsed = NetnsTable::default();
    parsed.add(table);
    let reading = QueueReading::of(Some(&parsed), &inodes);
    let _ = reading.work(Some(&reading.clone()));
});
