//! Which TCP ports a process tree listens on, read from `/proc`: the socket
//! inodes behind each process's file descriptors (`/proc/<pid>/fd`), matched
//! against the listening sockets of `/proc/net/tcp` and `/proc/net/tcp6`.
//! Used to say what an agent really listens on when it is not ready
//! (`supervisor::diagnose`) and by `status --ports`.
//!
//! Owns these reads only; blocking: call off the async runtime.

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The processes of the agent whose leader is `root`: its descendants, and
/// every process of its cgroup or marker (`super::tree`), so a daemon that
/// left the tree still counts as the agent's.
pub fn tree(root: u32) -> Vec<u32> {
    let mut pids = super::sample::process_tree(root);
    if let Some(tree) = super::tree::Tree::of_leader(root) {
        for pid in tree.members() {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The TCP ports in LISTEN state held by any of `pids`, sorted.
pub fn listening(pids: &[u32]) -> BTreeSet<u16> {
    let inodes = socket_inodes(pids);
    if inodes.is_empty() {
        return BTreeSet::new();
    }
    listeners()
        .into_iter()
        .filter(|(inode, _)| inodes.contains(inode))
        .map(|(_, port)| port)
        .collect()
}

/// Every listening TCP socket of this machine: inode -> port.
pub fn listeners() -> BTreeMap<u64, u16> {
    let mut found = BTreeMap::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            parse_listeners(&text, &mut found);
        }
    }
    found
}

/// Rows of a `/proc/net/tcp{,6}` text in state `0A` (LISTEN): inode -> port.
fn parse_listeners(text: &str, found: &mut BTreeMap<u64, u16>) {
    found.extend(
        text.lines()
            .skip(1)
            .filter_map(listen_row)
            .map(|(port, inode)| (inode, port)),
    );
}

/// `(port, inode)` of a LISTEN (`0A`) row of `/proc/net/tcp{,6}`:
/// `sl local remote st tx:rx tr:when retrnsmt uid timeout inode ...`.
pub fn listen_row(row: &str) -> Option<(u16, u64)> {
    let fields: Vec<&str> = row.split_ascii_whitespace().collect();
    if fields.len() < 10 || fields[3] != "0A" {
        return None;
    }
    let port = fields[1]
        .rsplit_once(':')
        .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())?;
    let inode = fields[9].parse::<u64>().ok().filter(|inode| *inode != 0)?;
    Some((port, inode))
}

/// `socket:[12345]` (a `/proc/<pid>/fd` link) -> 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The inodes of the sockets `pids` hold open.
fn socket_inodes(pids: &[u32]) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Some(inode) = std::fs::read_link(entry.path())
                .ok()
                .and_then(|target| socket_inode(target.to_str()?))
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_found_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        assert!(listening(&[me]).contains(&port));
        drop(listener);
        assert!(!listening(&[me]).contains(&port));
    }

    #[test]
    fn listen_rows_are_read_and_others_skipped() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1C20 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n   1: 0100007F:1C21 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4243 1\n";
        let mut found = BTreeMap::new();
        parse_listeners(text, &mut found);
        assert_eq!(found, BTreeMap::from([(4242, 0x1C20)]));
    }
}
