//! Which TCP ports of this machine another process holds, found without a
//! bind test per manifest port (two sockets each: ~50 ms for 2,000 ports).
//!
//! Owns finding those ports, the answer to "does another process hold
//! this port" and to "which processes listen on it" ([`listeners`]: the
//! inodes of its LISTEN rows in `/proc/net/tcp{,6}`, then the processes whose
//! `/proc/<pid>/fd` links point at those sockets). Does not decide what is reported: the port checks in `mod.rs`
//! do. Whatever the source, a port counts as held only when a bind test
//! (`portpicker::is_free_tcp`) on it also fails: the sources only say which
//! ports need that test.
//!
//! - First choice: the kernel's socket diagnostics (netlink `sock_diag`,
//!   what `ss -ltn` uses) list the listening sockets of both address
//!   families in a few microseconds. A port outside the ephemeral range
//!   (`/proc/sys/net/ipv4/ip_local_port_range`) is held in practice only by
//!   a listener; inside that range, client connections (and their TIME_WAIT)
//!   can hold it too, so those ports always get the bind test. Missed: the
//!   TIME_WAIT of a closed listener that had no SO_REUSEADDR, which blocks
//!   the port for a minute.
//! - Without netlink: `/proc/net/tcp` and `/proc/net/tcp6`, every socket in
//!   any state. Reading them walks the kernel's whole connection table (5 ms
//!   each on a 24 GiB machine). A socket bound but neither listening nor
//!   connected is not listed there.
//! - Without either: every port gets the bind test.

use crate::process::ports::{listen_row, socket_inode};
use std::collections::HashSet;
use std::io;
use std::ops::RangeInclusive;

/// The TCP ports some socket on this machine holds, as far as the kernel tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundPorts {
    /// Ports with a listening socket (IPv4 or IPv6), and the ephemeral port
    /// range, where client sockets can hold ports too.
    Listening {
        /// Ports with a socket in LISTEN state.
        ports: HashSet<u16>,
        /// `/proc/sys/net/ipv4/ip_local_port_range`: client connections
        /// can hold these ports too, so they always get the bind test.
        ephemeral: RangeInclusive<u16>,
    },
    /// The local port of every socket in `/proc/net/tcp` and `/proc/net/tcp6`.
    Listed(HashSet<u16>),
    /// Neither could be read (not Linux, a restricted `/proc`): every port
    /// gets a bind test.
    Unknown,
}

impl BoundPorts {
    /// Asks the kernel once, from the cheapest source that answers.
    pub fn read() -> BoundPorts {
        if let Ok(ports) = listening_ports() {
            return BoundPorts::Listening {
                ports,
                ephemeral: ephemeral_ports(),
            };
        }
        BoundPorts::from_proc()
    }

    /// Reads `/proc/net/tcp` and `/proc/net/tcp6`. A missing
    /// `/proc/net/tcp6` means IPv6 is off, so no IPv6 socket can hold a port.
    pub fn from_proc() -> BoundPorts {
        let mut ports = HashSet::new();
        let read =
            |path: &str, ports: &mut HashSet<u16>, missing_is_empty: bool| match read_text(path) {
                Ok(text) => parse(&text, ports),
                Err(error) => missing_is_empty && error.kind() == io::ErrorKind::NotFound,
            };
        if read("/proc/net/tcp", &mut ports, false) && read("/proc/net/tcp6", &mut ports, true) {
            BoundPorts::Listed(ports)
        } else {
            BoundPorts::Unknown
        }
    }

    /// Whether another process holds `port`: it may be held (see the
    /// variants) and a bind test on it fails.
    pub fn is_held(&self, port: u16) -> bool {
        let candidate = match self {
            BoundPorts::Listening { ports, ephemeral } => {
                ports.contains(&port) || ephemeral.contains(&port)
            }
            BoundPorts::Listed(ports) => ports.contains(&port),
            BoundPorts::Unknown => true,
        };
        candidate && !portpicker::is_free_tcp(port)
    }
}

/// The ports the kernel gives client sockets (default 32768-60999).
fn ephemeral_ports() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_ascii_whitespace().map(str::parse::<u16>);
            Some(bounds.next()?.ok()?..=bounds.next()?.ok()?)
        })
        .unwrap_or(32768..=60999)
}

/// The local ports of the listening TCP sockets of both address families,
/// from netlink `sock_diag`.
fn listening_ports() -> io::Result<HashSet<u16>> {
    Ok(listening()?.into_iter().map(|(port, _)| port).collect())
}

/// The (local port, socket inode) of every listening TCP socket of both
/// address families, from netlink `sock_diag`.
pub(crate) fn listening() -> io::Result<Vec<(u16, u64)>> {
    listening_on(0)
}

/// Like [`listening`], only the sockets on `port` (0: every port). The
/// kernel skips the others before describing them, so asking about one
/// port costs little however many sockets listen (500 agents starting
/// used to pay a full listing each, issue 18).
fn listening_on(port: u16) -> io::Result<Vec<(u16, u64)>> {
    let mut found = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        found.extend(listening_of(family as u8, port)?);
    }
    Ok(found)
}

// Netlink and sock_diag constants (linux/netlink.h, linux/sock_diag.h).
/// `nlmsghdr.nlmsg_type` of an error reply; its body starts with a negated
/// errno (0 is an acknowledgement).
const NLMSG_ERROR: u16 = 2;
/// `nlmsghdr.nlmsg_type` that ends a multipart dump.
const NLMSG_DONE: u16 = 3;
/// The request (and reply) type of a `sock_diag` query for one address family.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `nlmsg_flags`: this message is a request.
const NLM_F_REQUEST: u16 = 0x1;
/// `nlmsg_flags`: return every matching socket (`NLM_F_ROOT | NLM_F_MATCH`).
const NLM_F_DUMP: u16 = 0x300;
/// The kernel's `TCP_LISTEN` state number; the request asks for the state
/// bitmask `1 << TCP_LISTEN` only.
const TCP_LISTEN: u32 = 10;
/// The size of `struct nlmsghdr` in bytes: length (4), type (2), flags (2),
/// sequence (4), port id (4); every message's body follows it.
const HEADER_BYTES: usize = 16;

/// The local port and socket inode of the TCP sockets in LISTEN state of
/// one address family, by one `SOCK_DIAG_BY_FAMILY` dump request over
/// netlink (the kernel walks only its listening table, not the thousands
/// of TIME_WAIT rows that `/proc/net/tcp` lists after many probes), on
/// `port` only unless it is 0. Fails when netlink is not available (then
/// `/proc/net/tcp*` is read instead).
fn listening_of(family: u8, port: u16) -> io::Result<Vec<(u16, u64)>> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, sendto, setsockopt,
        socket, sockopt,
    };
    use std::os::fd::AsRawFd;

    let socket = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    // The kernel answers at once; the timeout only bounds a broken netlink.
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(1, 0),
    )?;
    // `struct nlmsghdr` then `struct inet_diag_req_v2`: family, protocol,
    // extensions, padding, the states wanted, and the socket id: its
    // source port (big-endian; 0 matches any), the rest zeroed.
    let mut request = Vec::with_capacity(HEADER_BYTES + 56);
    request.extend(((HEADER_BYTES + 56) as u32).to_ne_bytes());
    request.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend(1u32.to_ne_bytes());
    request.extend(0u32.to_ne_bytes());
    request.extend([family, libc::IPPROTO_TCP as u8, 0, 0]);
    request.extend((1u32 << TCP_LISTEN).to_ne_bytes());
    request.extend(port.to_be_bytes());
    request.extend([0u8; 46]);
    sendto(
        socket.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    thread_local! {
        /// One reply buffer per thread, kept: a listing runs every few
        /// milliseconds while agents start, and a buffer this large would
        /// otherwise be mapped and unmapped each time (see
        /// `crate::platform::tune_allocator`).
        static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
    }
    BUFFER.with_borrow_mut(|buffer| read_listing(&socket, buffer))
}

/// Reads the replies of a `sock_diag` dump from `socket` into `buffer`
/// until its end: each socket's (local port, inode).
fn read_listing(socket: &std::os::fd::OwnedFd, buffer: &mut [u8]) -> io::Result<Vec<(u16, u64)>> {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;

    let mut ports = Vec::new();
    loop {
        let received = recv(socket.as_raw_fd(), buffer, MsgFlags::empty())?;
        if received == 0 {
            return Err(io::Error::other(
                "netlink closed before the end of the dump",
            ));
        }
        let mut messages = &buffer[..received];
        while messages.len() >= HEADER_BYTES {
            let length = u32::from_ne_bytes(messages[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(messages[4..6].try_into().expect("2 bytes"));
            if length < HEADER_BYTES || length > messages.len() {
                return Err(io::Error::other("a malformed netlink message"));
            }
            let body = &messages[HEADER_BYTES..length];
            match kind {
                NLMSG_DONE => return Ok(ports),
                NLMSG_ERROR => {
                    let code = body
                        .get(0..4)
                        .map(|bytes| i32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
                        .unwrap_or(0);
                    return Err(io::Error::from_raw_os_error(-code));
                }
                // `struct inet_diag_msg`: family, state, timer, retransmits,
                // then the 48-byte socket id (source port first, big-endian),
                // expires, rqueue, wqueue, uid, and the inode at 68.
                SOCK_DIAG_BY_FAMILY if body.len() >= 72 => {
                    let inode = u32::from_ne_bytes(body[68..72].try_into().expect("4 bytes"));
                    ports.push((u16::from_be_bytes([body[4], body[5]]), u64::from(inode)));
                }
                _ => {}
            }
            // Messages are 4-byte aligned.
            messages = &messages[length.next_multiple_of(4).min(messages.len())..];
        }
    }
}

/// A process with a listening socket on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The process id.
    pub pid: u32,
    /// `/proc/<pid>/comm`, `?` when unreadable.
    pub name: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.name)
    }
}

/// Who listens on a TCP port, as far as `/proc` tells this user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listeners {
    /// Socket inodes of the port's LISTEN rows (IPv4 and IPv6).
    pub sockets: HashSet<u64>,
    /// The processes holding one of them whose descriptors this user can
    /// read (all of them for root).
    pub holders: Vec<Holder>,
}

impl Listeners {
    /// `pid 4242 (nc)`, `pid 1 (a), pid 2 (b)`, or `another process` when
    /// the holder's descriptors cannot be read.
    pub fn describe(&self) -> String {
        if self.holders.is_empty() {
            return "another process".to_string();
        }
        self.holders
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The inodes of the listening sockets on `port`: from netlink `sock_diag`,
/// else from `/proc/net/tcp{,6}`.
pub fn listening_sockets(port: u16) -> HashSet<u64> {
    if let Ok(found) = listening_on(port) {
        return found
            .into_iter()
            // The kernel filtered already; an old one may not have.
            .filter(|(listening, _)| *listening == port)
            .map(|(_, inode)| inode)
            .collect();
    }
    let mut sockets = HashSet::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = read_text(path) {
            sockets.extend(
                text.lines()
                    .skip(1)
                    .filter_map(|line| listening_inode(line, port)),
            );
        }
    }
    sockets
}

/// Which of `pids` holds one of `sockets` (reads only their descriptors).
pub fn held_by(sockets: &HashSet<u64>, pids: impl IntoIterator<Item = u32>) -> Vec<Holder> {
    let mut holders = Vec::new();
    for pid in pids {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = entries.flatten().any(|entry| {
            std::fs::read_link(entry.path())
                .ok()
                .and_then(|target| socket_inode(&target.to_string_lossy()))
                .is_some_and(|inode| sockets.contains(&inode))
        });
        if holds {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|name| name.trim_end().to_string())
                .unwrap_or_else(|_| "?".to_string());
            holders.push(Holder { pid, name });
        }
    }
    holders
}

/// Every process listening on `port` (a scan of all of `/proc`: only for
/// a port known to be held, to name its holder).
pub fn listeners(port: u16) -> Listeners {
    let sockets = listening_sockets(port);
    if sockets.is_empty() {
        return Listeners::default();
    }
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok());
    let holders = held_by(&sockets, pids);
    Listeners { sockets, holders }
}

/// The inode of a LISTEN row on `port`.
fn listening_inode(line: &str, port: u16) -> Option<u64> {
    listen_row(line)
        .filter(|(row_port, _)| *row_port == port)
        .map(|(_, inode)| inode)
}

/// The whole text of a `/proc/net` file, read in large chunks: each read
/// walks the kernel's whole TCP hash table again, and the 32-byte first
/// reads of `fs::read_to_string` cost extra passes (6 ms instead of 4 per
/// file, measured).
fn read_text(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(64 * 1024);
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    String::from_utf8(bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Adds the local port of every socket row of a `/proc/net/tcp` or
/// `/proc/net/tcp6` text to `ports`. Rows that do not read as a socket are
/// skipped. Returns false when the text does not start with that table's
/// header, i.e. when it cannot be trusted to list the sockets.
///
/// ```
/// use std::collections::HashSet;
/// use supervisor::check::bound::parse;
///
/// let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
///    0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0
/// ";
/// let mut ports = HashSet::new();
/// assert!(parse(text, &mut ports));
/// assert_eq!(ports, HashSet::from([8080]));
/// assert!(!parse("not a socket table", &mut ports));
/// ```
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

/// Only hexadecimal digits (the address columns of `/proc/net/tcp`).
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
    fn a_listener_is_found_with_its_process() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let row = TCP.lines().nth(2).unwrap();
        assert_eq!(listening_inode(row, 0x1F90), Some(31337));
        assert_eq!(listening_inode(row, 0x1F91), None);
        let found = listeners(port);
        assert_eq!(found.sockets.len(), 1, "{found:?}");
        assert_eq!(
            found
                .holders
                .iter()
                .map(|holder| holder.pid)
                .collect::<Vec<_>>(),
            [std::process::id()]
        );
        assert!(
            found
                .describe()
                .starts_with(&format!("pid {} (", std::process::id()))
        );
        assert!(held_by(&found.sockets, [1]).is_empty() || std::process::id() == 1);
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
    fn netlink_lists_real_listeners_of_both_families() {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").expect("IPv6 loopback on the test machine");
        let (v4_port, v6_port) = (
            v4.local_addr().unwrap().port(),
            v6.local_addr().unwrap().port(),
        );
        let ports = listening_ports().expect("netlink sock_diag works on Linux");
        assert!(
            ports.contains(&v4_port) && ports.contains(&v6_port),
            "{v4_port}, {v6_port} not in {ports:?}"
        );
        // The inodes netlink gives are the ones our descriptors hold.
        for port in [v4_port, v6_port] {
            let sockets = listening_sockets(port);
            assert_eq!(sockets.len(), 1, "{port}: {sockets:?}");
            assert_eq!(held_by(&sockets, [std::process::id()]).len(), 1);
        }
        let bound = BoundPorts::read();
        assert!(matches!(bound, BoundPorts::Listening { .. }), "{bound:?}");
        assert!(bound.is_held(v4_port) && bound.is_held(v6_port));
        drop((v4, v6));
        let ports = listening_ports().unwrap();
        assert!(
            !ports.contains(&v4_port) && !ports.contains(&v6_port),
            "closed listeners are gone"
        );
        assert!(!BoundPorts::read().is_held(v4_port));
    }

    #[test]
    fn asking_netlink_about_one_port_returns_only_that_ports_listeners() {
        let wanted = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = wanted.local_addr().unwrap().port();
        let found = listening_on(port).expect("netlink sock_diag works on Linux");
        // The kernel's filter, not ours: nothing else comes back.
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, port);
        assert!(listening_on(0).unwrap().len() >= 2);
        drop((wanted, other));
        assert!(listening_on(port).unwrap().is_empty());
    }

    #[test]
    fn a_port_outside_the_ephemeral_range_that_nothing_listens_on_gets_no_bind_test() {
        let (listener, port) = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            (listener, port)
        };
        // The set says nothing listens there and the range excludes it: the
        // held port is (wrongly, on purpose) reported free, which shows the
        // bind test did not run.
        let bound = BoundPorts::Listening {
            ports: HashSet::new(),
            ephemeral: 1..=1,
        };
        assert!(!bound.is_held(port));
        let in_range = BoundPorts::Listening {
            ports: HashSet::new(),
            ephemeral: port..=port,
        };
        assert!(in_range.is_held(port), "ephemeral ports get the bind test");
        drop(listener);
    }

    #[test]
    fn real_listeners_of_both_families_are_listed_in_proc_and_held() {
        for address in ["127.0.0.1:0", "[::1]:0"] {
            let listener = TcpListener::bind(address).expect("loopback of both families");
            let port = listener.local_addr().unwrap().port();
            let bound = BoundPorts::from_proc();
            let BoundPorts::Listed(ports) = &bound else {
                panic!("/proc/net/tcp is readable on Linux");
            };
            assert!(ports.contains(&port), "{address}: {port} not in {ports:?}");
            assert!(bound.is_held(port));
            assert!(BoundPorts::Unknown.is_held(port));
            drop(listener);
        }
    }

    #[test]
    fn a_free_port_is_not_held() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(!BoundPorts::read().is_held(port));
        assert!(!BoundPorts::from_proc().is_held(port));
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

    /// Why TIME_WAIT rows are kept, and why ephemeral ports always get the
    /// bind test: a client socket (no SO_REUSEADDR) that closed first leaves
    /// its (ephemeral) port in TIME_WAIT, and binding that port with
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
        assert!(!portpicker::is_free_tcp(port), "TIME_WAIT blocks the bind");
        assert!(ephemeral_ports().contains(&port));
        assert!(BoundPorts::read().is_held(port));
        assert!(BoundPorts::from_proc().is_held(port));
    }
}
