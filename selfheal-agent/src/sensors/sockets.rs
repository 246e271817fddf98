//! Work waiting in a unit's TCP sockets: connections in its listen queues and bytes in its
//! receive queues. Read from /proc/PID/net/tcp{,6} (the unit's own network namespace) for the
//! socket inodes its processes hold.

use std::collections::HashSet;

use crate::detect::stall::PendingWork;

const TCP_LISTEN: &str = "0A";
const TCP_ESTABLISHED: &str = "01";

/// TCP states as /proc/net/tcp numbers them (include/net/tcp_states.h).
const TCP_STATES: [&str; 12] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
    "new_syn_recv",
];

/// The unit's TCP connections by state (sockets its processes hold; `listen` ones excluded).
/// time-wait sockets belong to no process any more and are not attributed.
pub fn connections_by_state(tgids: &[u32]) -> Vec<(&'static str, u64)> {
    let inodes = socket_inodes(tgids);
    let mut counts = [0u64; TCP_STATES.len()];
    if let (false, Some(tgid)) = (inodes.is_empty(), tgids.first()) {
        for file in ["tcp", "tcp6"] {
            let Ok(table) = std::fs::read_to_string(format!("/proc/{tgid}/net/{file}")) else {
                continue;
            };
            for line in table.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(state), Some(inode)) = (fields.get(3), fields.get(9)) else {
                    continue;
                };
                if inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i))
                    && let Ok(n) = usize::from_str_radix(state, 16)
                    && let Some(slot) = n.checked_sub(1).and_then(|i| counts.get_mut(i))
                {
                    *slot += 1;
                }
            }
        }
    }
    TCP_STATES
        .iter()
        .zip(counts)
        .filter(|(name, n)| *n > 0 && **name != "listen")
        .map(|(name, n)| (*name, n))
        .collect()
}

/// Socket inodes held by the processes `tgids`.
fn socket_inodes(tgids: &[u32]) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for tgid in tgids {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{tgid}/fd")) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(target) = std::fs::read_link(entry.path())
                && let Some(inode) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse().ok())
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// (accept queue total, receive queue bytes) of the given socket inodes in one /proc/net/tcp file.
pub fn queues(table: &str, inodes: &HashSet<u64>) -> (u64, u64) {
    let (mut accept, mut recv) = (0, 0);
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(state), Some(queues), Some(inode)) =
            (fields.get(3), fields.get(4), fields.get(9))
        else {
            continue;
        };
        if !inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i)) {
            continue;
        }
        let rx = queues
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
            .unwrap_or(0);
        match *state {
            // Saturating: a table with absurd queue sizes must not wrap (or panic in debug).
            TCP_LISTEN => accept = u64::saturating_add(accept, rx),
            TCP_ESTABLISHED => recv = u64::saturating_add(recv, rx),
            _ => {}
        }
    }
    (accept, recv)
}

/// What waits for the unit's processes now. `previous` is the last reading, to tell whether
/// the queues are draining.
pub fn pending_work(tgids: &[u32], previous: Option<PendingWork>) -> PendingWork {
    let inodes = socket_inodes(tgids);
    let (mut accept, mut recv) = (0, 0);
    if let (false, Some(tgid)) = (inodes.is_empty(), tgids.first()) {
        for file in ["tcp", "tcp6"] {
            if let Ok(table) = std::fs::read_to_string(format!("/proc/{tgid}/net/{file}")) {
                let (a, r) = queues(&table, &inodes);
                accept += a;
                recv += r;
            }
        }
    }
    let draining = previous.is_some_and(|p| accept + recv < p.accept_queue + p.recv_queue);
    PendingWork {
        accept_queue: accept,
        recv_queue: recv,
        draining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000040 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000009 00:00000000 00000000     0        0 333 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_the_units_sockets_count_listen_as_accept_queue_and_established_as_bytes() {
        let inodes: HashSet<u64> = [111, 222].into();
        assert_eq!(queues(TABLE, &inodes), (3, 0x40));
    }

    /// Regression (found writing its fuzz target): queue sizes summed past u64::MAX overflowed.
    #[test]
    fn huge_queues_saturate_instead_of_overflowing() {
        let line = |inode: u32| {
            format!(
                "   0: 0100007F:1F90 00000000:0000 0A 00000000:FFFFFFFFFFFFFFFF 00:00000000 \
                 00000000     0        0 {inode} 1\n"
            )
        };
        let table = format!("header\n{}{}", line(1), line(2));
        assert_eq!(queues(&table, &[1, 2].into()), (u64::MAX, 0));
    }

    #[test]
    fn shrinking_queues_are_draining() {
        let before = PendingWork {
            accept_queue: 5,
            recv_queue: 0,
            draining: false,
        };
        let now = pending_work(&[], Some(before));
        assert!(now.draining);
        assert!(!pending_work(&[], None).draining);
    }

    #[test]
    fn a_real_listening_socket_with_a_waiting_connection_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let work = pending_work(&[std::process::id()], None);
        assert_eq!(work.accept_queue, 1, "{work:?}");
    }
}
