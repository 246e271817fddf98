//! The TCP tables (`/proc/PID/net/tcp` and `tcp6`) of each network namespace, read at most
//! once per sampling pass: every unit in the host's namespace shares one table, and reading it
//! once per unit (twice: queues and connections) made a pass cost units × sockets.

use std::{collections::HashMap, os::unix::fs::MetadataExt as _};

/// One socket's row, the fields the sensors use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRow {
    /// The state as the table numbers it (include/net/tcp_states.h): 1 established, 10 listen…
    pub state: u8,
    pub local_port: u16,
    /// Bytes waiting to be read (established), or connections waiting to be accepted (listen).
    pub rx_queue: u64,
}

pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;

/// One namespace's sockets by inode (time-wait rows, with inode 0, belong to no process and are
/// left out).
#[derive(Debug, Default)]
pub struct NetnsTable {
    rows: HashMap<u64, TcpRow>,
}

impl NetnsTable {
    /// The row of the socket `inode`, when the namespace has it.
    pub fn row(&self, inode: u64) -> Option<TcpRow> {
        self.rows.get(&inode).copied()
    }

    /// Adds the rows of one table's text (its header line first).
    pub fn add(&mut self, table: &str) {
        self.rows
            .extend(table.lines().skip(1).filter_map(parse_row));
    }
}

/// `(inode, row)` of one table line; `None` for a malformed one or an inode of 0.
fn parse_row(line: &str) -> Option<(u64, TcpRow)> {
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    let state = u8::from_str_radix(fields.nth(1)?, 16).ok()?;
    let queues = fields.next()?;
    let inode = fields.nth(4)?.parse::<u64>().ok().filter(|i| *i != 0)?;
    let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
    let rx_queue = queues
        .split_once(':')
        .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
        .unwrap_or(0);
    Some((
        inode,
        TcpRow {
            state,
            local_port,
            rx_queue,
        },
    ))
}

/// The tables read in one pass, by network namespace (its nsfs inode).
#[derive(Default)]
pub struct TcpTables {
    by_netns: HashMap<u64, NetnsTable>,
}

impl TcpTables {
    /// The TCP sockets of the network namespace `tgid` is in: read on first use, then shared by
    /// every unit in it. `None` when the process is gone.
    pub fn of(&mut self, tgid: u32) -> Option<&NetnsTable> {
        let netns = std::fs::metadata(format!("/proc/{tgid}/ns/net"))
            .ok()?
            .ino();
        Some(self.by_netns.entry(netns).or_insert_with(|| {
            let mut table = NetnsTable::default();
            for file in ["tcp", "tcp6"] {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/net/{file}")) {
                    table.add(&text);
                }
            }
            table
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_gives_its_state_port_queue_and_inode_and_time_wait_rows_are_left_out() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F0 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0000000000000000
   2: 0100007F:1F90 0100007F:D2F1 01 00000000:00000040 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1
";
        let mut ns = NetnsTable::default();
        ns.add(table);
        assert_eq!(
            ns.row(111),
            Some(TcpRow {
                state: TCP_LISTEN,
                local_port: 8080,
                rx_queue: 3
            })
        );
        assert_eq!(ns.row(222).map(|r| (r.state, r.rx_queue)), Some((1, 0x40)));
        assert_eq!(ns.rows.len(), 2, "the time-wait row has no inode");
    }

    #[test]
    fn units_in_one_namespace_share_one_read() {
        let me = std::process::id();
        let _first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut tables = TcpTables::default();
        tables.of(me).expect("our table");
        // Taken after the read: a socket another test opens meanwhile is not counted as new.
        let known = crate::sensors::sockets::socket_inodes(&[me]);
        assert!(
            known
                .iter()
                .any(|i| tables.of(me).and_then(|t| t.row(*i)).is_some()),
            "our listener is in the table"
        );
        // A socket opened after the read is not in the pass's table: it was read once.
        let _second = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let new: Vec<u64> = crate::sensors::sockets::socket_inodes(&[me])
            .difference(&known)
            .copied()
            .collect();
        assert!(!new.is_empty());
        let parent = std::os::unix::process::parent_id();
        for pid in [me, parent] {
            let table = tables.of(pid).expect("same namespace as ours");
            assert!(
                new.iter().all(|i| table.row(*i).is_none()),
                "read again for {pid}"
            );
        }
        assert_eq!(tables.by_netns.len(), 1);
        // The next pass reads it again.
        let mut next = TcpTables::default();
        let table = next.of(me).expect("our table");
        assert!(new.iter().any(|i| table.row(*i).is_some()));
        assert!(tables.of(u32::MAX).is_none(), "no such process");
    }
}
