//! Which TCP ports of this machine some socket holds, read once per check
//! from `/proc/net/tcp` and `/proc/net/tcp6`, so that the bind test (which
//! creates and binds two sockets per port) runs only for ports listed there
//! instead of for every port of the manifest.
//!
//! Owns reading and parsing those two files and the answer to "does another
//! process hold this port". Does not decide what is reported: the port checks
//! in `mod.rs` do.
//!
//! The bind test stays the judge: a listed port counts as held only when
//! `portpicker::is_free_tcp` fails on it. The answer therefore matches a bind
//! test of every port, except for a socket that is bound but neither listening
//! nor connected, which the kernel does not list in `/proc/net/tcp`: such a
//! port now counts as free.
//!
//! Sockets in TIME_WAIT are kept in the set. `std` and portpicker bind with
//! SO_REUSEADDR, which passes over a TIME_WAIT left by a socket that also had
//! SO_REUSEADDR, but not over one left by a socket without it (a client's
//! ephemeral port, a Python server that did not set it): only the bind test
//! can tell them apart.

use std::collections::HashSet;
use std::io;

/// The TCP ports some socket on this machine holds, as far as `/proc` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundPorts {
    /// The local port of every socket in `/proc/net/tcp` and `/proc/net/tcp6`.
    Listed(HashSet<u16>),
    /// `/proc/net/tcp` could not be read (not Linux, a restricted `/proc`):
    /// every port gets a bind test.
    Unknown,
}

impl BoundPorts {
    /// Reads `/proc/net/tcp` and `/proc/net/tcp6` once. A missing
    /// `/proc/net/tcp6` means IPv6 is off, so no IPv6 socket can hold a port.
    pub fn read() -> BoundPorts {
        let mut ports = HashSet::new();
        let read = |path: &str, ports: &mut HashSet<u16>, missing_is_empty: bool| {
            match std::fs::read_to_string(path) {
                Ok(text) => parse(&text, ports),
                Err(error) => missing_is_empty && error.kind() == io::ErrorKind::NotFound,
            }
        };
        if read("/proc/net/tcp", &mut ports, false) && read("/proc/net/tcp6", &mut ports, true) {
            BoundPorts::Listed(ports)
        } else {
            BoundPorts::Unknown
        }
    }

    /// Whether another process holds `port`: it is listed (or nothing is
    /// known) and a bind test on it fails.
    pub fn is_held(&self, port: u16) -> bool {
        match self {
            BoundPorts::Listed(ports) if !ports.contains(&port) => false,
            _ => !portpicker::is_free_tcp(port),
        }
    }
}

/// Adds the local port of every socket row of a `/proc/net/tcp` or
/// `/proc/net/tcp6` text to `ports`. Rows that do not read as a socket are
/// skipped. Returns false when the text does not start with that table's
/// header, i.e. when it cannot be trusted to list the sockets.
pub fn parse(text: &str, ports: &mut HashSet<u16>) -> bool {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if header.split_ascii_whitespace().nth(1) != Some("local_address") {
        return false;
    }
    ports.extend(lines.filter_map(local_port));
    true
}

/// The local port of one row: `sl: local_address remote_address st ...`,
/// addresses `IP:PORT` in hex (8 or 32 digits of IP, 4 of port).
fn local_port(line: &str) -> Option<u16> {
    let mut fields = line.split_ascii_whitespace();
    fields.next()?.strip_suffix(':')?;
    let port = address_port(fields.next()?)?;
    address_port(fields.next()?)?;
    let state = fields.next()?;
    if state.len() != 2 || !is_hex(state) {
        return None;
    }
    Some(port)
}

/// The port of a hex `IP:PORT` address.
fn address_port(address: &str) -> Option<u16> {
    let (ip, port) = address.split_once(':')?;
    if !matches!(ip.len(), 8 | 32) || !is_hex(ip) || port.len() != 4 || !is_hex(port) {
        return None;
    }
    u16::from_str_radix(port, 16).ok()
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20719 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 31337 1 0000000000000000 100 0 0 10 0
   2: 0100007F:D156 0100007F:1F90 06 00000000:00000000 03:00001583 00000000     0        0 0 3 0000000000000000
   3: 0A00020F:C350 5DB8D822:01BB 01 00000000:00000000 02:0000048C 00000000  1000        0 41000 2 0000000000000000 20 4 30 10 -1
   4: 0100007F:ZZZZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0
   5: 0100007F:1A0B
garbage line without fields
   6: 0100007F:2710 00000000:0000 0A00 00000000:00000000 00:00000000 00000000     0        0 2 1 0
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 22222 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:1F91 01 00000000:00000000 00:00000000 00000000  1000        0 33333 1 0000000000000000 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:C351 0000000000000000FFFF00000100007F:1F91 06 00000000:00000000 03:00000F2A 00000000     0        0 0 3 0000000000000000
   3: 000000000000000000000000010000:AAAA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0
";

    #[test]
    fn rows_of_both_files_give_their_local_ports_and_malformed_rows_are_skipped() {
        let mut ports = HashSet::new();
        assert!(parse(TCP, &mut ports));
        assert!(parse(TCP6, &mut ports));
        let mut sorted: Vec<u16> = ports.into_iter().collect();
        sorted.sort_unstable();
        // 22 and 8080 listening, 53590 in TIME_WAIT (kept: see the module
        // doc), 50000 connected (remote ports such as 443 are not local);
        // IPv6: 8081 listening, 40000 connected, 50001 in TIME_WAIT. A bad
        // port, a cut row, a 4-digit state and a 30-digit IPv6 address are
        // skipped.
        assert_eq!(sorted, vec![22, 8080, 8081, 40000, 50000, 50001, 53590]);
    }

    #[test]
    fn a_text_without_the_header_is_not_trusted() {
        let mut ports = HashSet::new();
        let rows = TCP.split_once('\n').unwrap().1;
        assert!(!parse(rows, &mut ports));
        assert!(!parse("", &mut ports));
        assert!(ports.is_empty());
        // A header alone is a machine with no sockets.
        assert!(parse(TCP.lines().next().unwrap(), &mut ports));
        assert!(ports.is_empty());
    }

    #[test]
    fn a_real_listener_is_listed_and_held() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bound = BoundPorts::read();
        let BoundPorts::Listed(ports) = &bound else {
            panic!("/proc/net/tcp is readable on Linux");
        };
        assert!(ports.contains(&port), "{port} not in {ports:?}");
        assert!(bound.is_held(port));
        assert!(BoundPorts::Unknown.is_held(port));
        drop(listener);
    }

    #[test]
    fn an_ipv6_listener_is_listed_and_held() {
        let listener = TcpListener::bind("[::1]:0").expect("IPv6 loopback on the test machine");
        let port = listener.local_addr().unwrap().port();
        let bound = BoundPorts::read();
        let BoundPorts::Listed(ports) = &bound else {
            panic!("/proc/net/tcp is readable on Linux");
        };
        assert!(ports.contains(&port), "{port} not in {ports:?}");
        assert!(bound.is_held(port));
        drop(listener);
    }

    #[test]
    fn a_free_port_is_not_held() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(!BoundPorts::read().is_held(port));
        assert!(!BoundPorts::Unknown.is_held(port));
    }

    #[test]
    fn a_listed_port_that_binds_is_not_held() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(!BoundPorts::Listed(HashSet::from([port])).is_held(port));
    }

    /// Why TIME_WAIT rows are kept: a client socket (no SO_REUSEADDR) that
    /// closed first leaves its port in TIME_WAIT, and binding that port with
    /// SO_REUSEADDR still fails.
    #[test]
    fn a_port_in_time_wait_without_reuseaddr_is_listed_and_held() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let port = client.local_addr().unwrap().port();
        drop(client);
        drop(accepted);
        drop(listener);
        let state = |port: u16| {
            let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
            text.lines()
                .skip(1)
                .map(|line| line.split_ascii_whitespace().collect::<Vec<_>>())
                .filter(|fields| fields.len() > 3 && address_port(fields[1]) == Some(port))
                .map(|fields| fields[3].to_owned())
                .collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while state(port) != ["06"] {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for port {port} to reach TIME_WAIT: {:?}",
                state(port)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let bound = BoundPorts::read();
        assert!(!portpicker::is_free_tcp(port), "TIME_WAIT blocks the bind");
        assert!(bound.is_held(port));
    }
}
