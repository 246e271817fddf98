//! Work waiting in a unit's TCP sockets: connections in its listen queues and bytes in its
//! receive queues, and its connections by state. Found in its network namespace's TCP tables
//! (read once per pass for every unit in it, see [`TcpTables`]) by the socket inodes its
//! processes hold.

use std::collections::{HashMap, HashSet};

use super::tcp_tables::{NetnsTable, TCP_ESTABLISHED, TCP_LISTEN, TcpRow, TcpTables};
use crate::detect::stall::PendingWork;

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

/// The rows of a unit's own TCP sockets, read once per pass for everything that counts from
/// them.
pub struct TcpView {
    rows: Vec<TcpRow>,
}

impl TcpView {
    /// The sockets the processes `tgids` hold; no table is read when they hold none.
    pub fn read(tgids: &[u32], tables: &mut TcpTables) -> Self {
        Self::of(&socket_inodes(tgids), tgids, tables)
    }

    /// The sockets `inodes` the processes `tgids` hold (already listed).
    pub fn of(inodes: &HashSet<u64>, tgids: &[u32], tables: &mut TcpTables) -> Self {
        let table = match (inodes.is_empty(), tgids.first()) {
            (false, Some(tgid)) => tables.of(*tgid),
            _ => None,
        };
        Self::in_table(inodes, table)
    }

    fn in_table(inodes: &HashSet<u64>, table: Option<&NetnsTable>) -> Self {
        Self {
            rows: table
                .map(|t| inodes.iter().filter_map(|i| t.row(*i)).collect())
                .unwrap_or_default(),
        }
    }

    /// The unit's TCP connections by state (`listen` ones excluded). time-wait sockets belong
    /// to no process any more and are not attributed.
    pub fn by_state(&self) -> Vec<(&'static str, u64)> {
        let mut counts = [0u64; TCP_STATES.len()];
        for row in &self.rows {
            if let Some(slot) = usize::from(row.state)
                .checked_sub(1)
                .and_then(|i| counts.get_mut(i))
            {
                *slot += 1;
            }
        }
        TCP_STATES
            .iter()
            .zip(counts)
            .filter(|(name, n)| *n > 0 && **name != "listen")
            .map(|(name, n)| (*name, n))
            .collect()
    }

    /// Connections the unit's processes hold on a port one of them listens on: the sockets
    /// `accept()` returned. The kernel's cgroup_sock hooks never see those (the kernel clones
    /// them from the listener, no `socket()` call runs in the unit), so they are counted here
    /// from the unit's fds and added to its live sockets: a server that never closes its
    /// clients' connections leaks sockets too.
    pub fn accepted(&self) -> u64 {
        let listening: HashSet<u16> = self
            .rows
            .iter()
            .filter(|r| r.state == TCP_LISTEN)
            .map(|r| r.local_port)
            .collect();
        self.rows
            .iter()
            .filter(|r| r.state != TCP_LISTEN && listening.contains(&r.local_port))
            .count() as u64
    }
}

/// Socket inodes held by the processes `tgids`.
pub fn socket_inodes(tgids: &[u32]) -> HashSet<u64> {
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

/// One reading of a unit's TCP queues, socket by socket, so the next reading can tell whether
/// the unit consumed any of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueReading {
    /// Listening sockets: inode → connections waiting in the accept queue.
    listen: HashMap<u64, u64>,
    /// Established connections: inode → bytes waiting in the receive queue.
    connections: HashMap<u64, u64>,
}

impl QueueReading {
    /// The queues of `inodes` in their namespace's `table`.
    pub fn of(table: Option<&NetnsTable>, inodes: &HashSet<u64>) -> Self {
        let mut reading = Self::default();
        for (inode, row) in inodes.iter().filter_map(|i| Some((*i, table?.row(*i)?))) {
            match row.state {
                TCP_LISTEN => reading.listen.insert(inode, row.rx_queue),
                TCP_ESTABLISHED => reading.connections.insert(inode, row.rx_queue),
                _ => None,
            };
        }
        reading
    }

    /// What waits for the unit now, and whether it consumed any of it since `previous`: a
    /// listen queue shrank, a connection's unread bytes shrank or it closed with bytes
    /// unread, or — while connections wait to be accepted — a new connection was accepted.
    /// Accepting alone is no progress when the accepted requests are never read (an acceptor
    /// thread alive while every worker is deadlocked), so it counts only for the backlog.
    pub fn work(&self, previous: Option<&QueueReading>) -> PendingWork {
        let accept_queue = self.listen.values().fold(0u64, |a, b| a.saturating_add(*b));
        let draining = previous.is_some_and(|before| {
            let listen_shrank = self
                .listen
                .iter()
                .any(|(inode, n)| before.listen.get(inode).is_some_and(|b| n < b));
            let read = before
                .connections
                .iter()
                .any(|(inode, b)| *b > 0 && self.connections.get(inode).is_none_or(|now| now < b));
            let accepted = before.listen.values().any(|n| *n > 0)
                && self
                    .connections
                    .keys()
                    .any(|inode| !before.connections.contains_key(inode));
            listen_shrank || read || accepted
        });
        PendingWork {
            accept_queue,
            recv_queue: self
                .connections
                .values()
                .fold(0u64, |a, b| a.saturating_add(*b)),
            draining,
        }
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

    fn reading(listen: &[(u64, u64)], connections: &[(u64, u64)]) -> QueueReading {
        QueueReading {
            listen: listen.iter().copied().collect(),
            connections: connections.iter().copied().collect(),
        }
    }

    fn table(text: &str) -> NetnsTable {
        let mut table = NetnsTable::default();
        table.add(text);
        table
    }

    #[test]
    fn only_the_units_sockets_count_listen_as_accept_queue_and_established_as_bytes() {
        let read = QueueReading::of(Some(&table(TABLE)), &[111, 222].into());
        assert_eq!(read, reading(&[(111, 3)], &[(222, 0x40)]));
        let work = read.work(None);
        assert_eq!((work.accept_queue, work.recv_queue), (3, 0x40));
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
        let text = format!("header\n{}{}{}", line(1), line(1), line(2));
        let read = QueueReading::of(Some(&table(&text)), &[1, 2].into());
        assert_eq!(read.work(None).accept_queue, u64::MAX);
    }

    #[test]
    fn a_shrinking_listen_queue_or_a_read_connection_is_draining() {
        let before = reading(&[(1, 5)], &[(2, 100)]);
        assert!(reading(&[(1, 4)], &[(2, 100)]).work(Some(&before)).draining);
        assert!(reading(&[(1, 5)], &[(2, 10)]).work(Some(&before)).draining);
        // Closed with its bytes: consumed (or given up), either way not stuck.
        assert!(reading(&[(1, 5)], &[]).work(Some(&before)).draining);
        assert!(!reading(&[(1, 5)], &[(2, 100)]).work(Some(&before)).draining);
        assert!(!before.work(None).draining);
    }

    #[test]
    fn accepting_drains_the_backlog_but_not_requests_left_unread() {
        let queued = reading(&[(1, 2)], &[(2, 100)]);
        let accepted = reading(&[(1, 2)], &[(2, 100), (3, 0)]);
        assert!(accepted.work(Some(&queued)).draining);
        // An acceptor alive while the workers are deadlocked: connections keep being accepted
        // and their requests pile up unread.
        let piling = reading(&[(1, 0)], &[(2, 100)]);
        let more = reading(&[(1, 0)], &[(2, 100), (3, 80)]);
        let work = more.work(Some(&piling));
        assert!(!work.draining, "{work:?}");
        assert_eq!(work.recv_queue, 180);
    }

    #[test]
    fn idle_keep_alive_connections_are_no_pending_work() {
        let idle = reading(&[(1, 0)], &[(2, 0), (3, 0)]);
        let work = idle.work(Some(&idle));
        assert_eq!((work.accept_queue, work.recv_queue), (0, 0));
    }

    #[test]
    fn accepted_connections_are_those_on_a_port_the_unit_listens_on() {
        // 111 listens on :1F90; 222 was accepted on it; 444 is an outgoing connection from
        // :D2F0; 555 is another unit's connection on :1F90.
        let rows = "header
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 0100007F:1F90 0100007F:D2F0 08 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:D2F0 0100007F:1F91 01 00000000:00000000 00:00000000 00000000     0        0 444 1
   3: 0100007F:1F90 0100007F:D2F1 01 00000000:00000000 00:00000000 00000000     0        0 555 1
";
        let rows = table(rows);
        let accepted = |inodes: &[u64]| {
            TcpView::in_table(&inodes.iter().copied().collect(), Some(&rows)).accepted()
        };
        assert_eq!(accepted(&[111, 222, 444]), 1);
        assert_eq!(accepted(&[222, 444]), 0, "no listener of its own");
    }

    #[test]
    fn a_real_accepted_connection_is_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (_server, _) = listener.accept().expect("accept");
        // Our client is on an ephemeral port, not the listener's: only the accepted one counts.
        let mut tables = TcpTables::default();
        assert!(TcpView::read(&[std::process::id()], &mut tables).accepted() >= 1);
    }

    #[test]
    fn a_real_listening_socket_with_a_waiting_connection_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let _client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let me = std::process::id();
        let mut tables = TcpTables::default();
        let work = QueueReading::of(tables.of(me), &socket_inodes(&[me])).work(None);
        assert!(work.accept_queue >= 1, "{work:?}");
    }
}
