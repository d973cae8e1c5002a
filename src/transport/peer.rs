//! The peer link's sockets: encrypted, mutually authenticated ZeroMQ
//! (CURVE) between the supervisors of the hosts of one system.
//!
//! Owns: one thread with a ROUTER that the peers connect to (CURVE server;
//! bound only where it is told, never a wildcard unless the caller asks),
//! the context's ZAP handler (`inproc://zeromq.zap.01`: accepts exactly the
//! client keys of the configured peers, refuses and counts every other), a
//! DEALER per peer (CURVE client, pinned to that peer's public key), and a
//! monitor of the ROUTER that counts failed handshakes. Messages are opaque
//! bytes: what they mean is `crate::link`'s business.
//!
//! Does not own: what is sent or when, reliability (sequence numbers,
//! acknowledgements and resending live in `crate::link`), or keys on disk.
//!
//! Traffic goes one way per connection: each side sends its own messages
//! through its DEALER to the other side's ROUTER, so every message
//! received arrived on a connection whose client key the ZAP handler
//! accepted, and every message sent went to a server that proved it holds
//! the secret key of the public key we pinned.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use super::wake::{self, WakeReceiver, Waker};
use super::{TransportError, context};

/// The ZAP domain of the link's ROUTER.
const ZAP_DOMAIN: &str = "supervisor-link";
/// libzmq's draft option: refuse connections when no ZAP handler answers.
const ZMQ_ZAP_ENFORCE_DOMAIN: std::os::raw::c_int = 93;
/// libzmq's ZMTP heartbeat options: ping every interval, drop the
/// connection when no traffic for the timeout (then reconnect).
const ZMQ_HEARTBEAT_IVL: std::os::raw::c_int = 75;
const ZMQ_HEARTBEAT_TIMEOUT: std::os::raw::c_int = 77;

/// Whether this libzmq was built with CURVE (needs libsodium at build time,
/// see vendor/zmq-sys/build/main.rs).
pub fn curve_available() -> bool {
    zmq::has("curve") == Some(true)
}

/// A CURVE key pair, Z85-encoded (40 characters each).
#[derive(Clone, PartialEq, Eq)]
pub struct PeerKeys {
    pub public: String,
    pub secret: String,
}

impl std::fmt::Debug for PeerKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PeerKeys")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl PeerKeys {
    /// A fresh key pair from libsodium's random source.
    pub fn generate() -> Result<PeerKeys, TransportError> {
        if !curve_available() {
            return Err(TransportError::NoCurve);
        }
        let pair = zmq::CurveKeyPair::new()
            .map_err(|error| TransportError::zmq("generating a key pair", "curve", error))?;
        let encode = |bytes: &[u8]| zmq::z85_encode(bytes).expect("32 bytes encode as Z85");
        Ok(PeerKeys {
            public: encode(&pair.public_key),
            secret: encode(&pair.secret_key),
        })
    }
}

/// Decodes a Z85 key; `None` unless it is 32 bytes.
pub fn decode_key(text: &str) -> Option<Vec<u8>> {
    zmq::z85_decode(text.trim())
        .ok()
        .filter(|bytes| bytes.len() == 32)
}

/// One peer: its name, where its link listens, the public key it must prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddress {
    pub name: String,
    /// `tcp://ADDRESS:PORT`.
    pub endpoint: String,
    /// Z85.
    pub public_key: String,
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// `tcp://ADDRESS:PORT` to bind (`tcp://127.0.0.1:0` picks a port).
    pub bind: String,
    pub keys: PeerKeys,
    pub peers: Vec<PeerAddress>,
}

/// What the link thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A message from an authenticated peer.
    Received { peer: String, payload: Vec<u8> },
    /// A connection presented a client key that is no configured peer's.
    Refused { address: String, key: String },
}

/// Counters, shared with the thread.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Handshakes refused on the ROUTER (unknown key, wrong key, no CURVE).
    pub refused: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// Sends dropped because the peer's queue was full.
    pub send_dropped: AtomicU64,
}

enum Command {
    Send { peer: String, payload: Vec<u8> },
    Stop,
}

/// Cloneable handle to the link thread. Dropping every handle does not
/// stop it: call [`PeerHandle::stop`].
#[derive(Clone)]
pub struct PeerHandle {
    /// Read by the thread after each wake; closing it ends nothing (Stop does).
    commands: std::sync::mpsc::Sender<Command>,
    waker: Waker,
    pub stats: Arc<PeerStats>,
    /// The endpoint really bound (port read back).
    pub bound: String,
}

impl PeerHandle {
    /// Queues `payload` for `peer` (dropped and counted if its queue is full).
    pub fn send(&self, peer: &str, payload: Vec<u8>) {
        if self
            .commands
            .send(Command::Send {
                peer: peer.to_string(),
                payload,
            })
            .is_ok()
        {
            self.waker.wake();
        }
    }

    /// Ends the thread (sockets closed, linger 0).
    pub fn stop(&self) {
        if self.commands.send(Command::Stop).is_ok() {
            self.waker.wake();
        }
    }
}

/// Starts the link thread: binds, installs the ZAP handler, connects to
/// every peer. Events go to `events` (the receiver owns what they mean;
/// when it is dropped, events are discarded).
pub fn start(
    config: PeerConfig,
    events: tokio::sync::mpsc::UnboundedSender<PeerEvent>,
) -> Result<(PeerHandle, JoinHandle<()>), TransportError> {
    if !curve_available() {
        return Err(TransportError::NoCurve);
    }
    let bad_key = |what: &str| TransportError::Malformed {
        origin: what.to_string(),
        reason: "not a Z85 CURVE key (40 characters)".into(),
    };
    let secret =
        decode_key(&config.keys.secret).ok_or_else(|| bad_key("this host's secret key"))?;
    let public =
        decode_key(&config.keys.public).ok_or_else(|| bad_key("this host's public key"))?;
    let ctx = context();
    let mut allowed: HashMap<Vec<u8>, String> = HashMap::new();
    for peer in &config.peers {
        let key = decode_key(&peer.public_key)
            .ok_or_else(|| bad_key(&format!("public key of host `{}`", peer.name)))?;
        allowed.insert(key, peer.name.clone());
    }
    let zmq_error = |action: &'static str, endpoint: &str| {
        let endpoint = endpoint.to_string();
        move |error| TransportError::zmq(action, &endpoint, error)
    };
    // The ZAP handler first: a connection accepted before it exists would
    // not be authenticated.
    let zap = ctx.socket(zmq::REP).map_err(zmq_error("socket", "zap"))?;
    zap.set_linger(0).map_err(zmq_error("linger", "zap"))?;
    zap.bind("inproc://zeromq.zap.01").map_err(zmq_error(
        "bind (one peer link per process)",
        "inproc://zeromq.zap.01",
    ))?;
    let mut router = ctx
        .socket(zmq::ROUTER)
        .map_err(zmq_error("socket", &config.bind))?;
    router
        .set_linger(0)
        .map_err(zmq_error("linger", &config.bind))?;
    router
        .set_curve_server(true)
        .map_err(zmq_error("curve server", &config.bind))?;
    router
        .set_curve_secretkey(&secret)
        .map_err(zmq_error("curve secret key", &config.bind))?;
    router
        .set_zap_domain(ZAP_DOMAIN)
        .map_err(zmq_error("zap domain", &config.bind))?;
    set_int(&mut router, ZMQ_ZAP_ENFORCE_DOMAIN, 1);
    let monitor_endpoint = format!("inproc://peer-link-monitor-{}", std::process::id());
    router
        .monitor(
            &monitor_endpoint,
            (zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw()
                | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw()
                | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw()) as i32,
        )
        .map_err(zmq_error("monitor", &config.bind))?;
    let monitor = ctx
        .socket(zmq::PAIR)
        .map_err(zmq_error("socket", &monitor_endpoint))?;
    monitor
        .connect(&monitor_endpoint)
        .map_err(zmq_error("connect", &monitor_endpoint))?;
    let bind = config.bind.replace(":0", ":*");
    router.bind(&bind).map_err(zmq_error("bind", &bind))?;
    let bound = super::bound_endpoint(&router, &bind);
    let mut dealers = HashMap::new();
    for peer in &config.peers {
        let mut dealer = ctx
            .socket(zmq::DEALER)
            .map_err(zmq_error("socket", &peer.endpoint))?;
        let server = decode_key(&peer.public_key).expect("checked above");
        dealer
            .set_linger(0)
            .map_err(zmq_error("linger", &peer.endpoint))?;
        dealer
            .set_curve_serverkey(&server)
            .map_err(zmq_error("curve server key", &peer.endpoint))?;
        dealer
            .set_curve_publickey(&public)
            .map_err(zmq_error("curve public key", &peer.endpoint))?;
        dealer
            .set_curve_secretkey(&secret)
            .map_err(zmq_error("curve secret key", &peer.endpoint))?;
        // Queue only on a live connection; the link resends what was not
        // acknowledged, so a message for a peer that is away is not kept twice.
        dealer
            .set_immediate(true)
            .map_err(zmq_error("immediate", &peer.endpoint))?;
        dealer
            .set_sndhwm(10_000)
            .map_err(zmq_error("hwm", &peer.endpoint))?;
        dealer
            .set_reconnect_ivl(200)
            .map_err(zmq_error("reconnect", &peer.endpoint))?;
        dealer
            .set_reconnect_ivl_max(2000)
            .map_err(zmq_error("reconnect", &peer.endpoint))?;
        set_int(&mut dealer, ZMQ_HEARTBEAT_IVL, 1000);
        set_int(&mut dealer, ZMQ_HEARTBEAT_TIMEOUT, 3000);
        dealer
            .connect(&peer.endpoint)
            .map_err(zmq_error("connect", &peer.endpoint))?;
        dealers.insert(peer.name.clone(), dealer);
    }
    let (commands, command_receiver) = std::sync::mpsc::channel();
    let (waker, wake_receiver) = wake::pair().map_err(|source| TransportError::File {
        path: "peer link wake pipe".into(),
        source,
    })?;
    let stats = Arc::new(PeerStats::default());
    let thread = Thread {
        zap,
        router,
        monitor,
        dealers,
        allowed,
        commands: command_receiver,
        wake_receiver,
        events,
        stats: stats.clone(),
    };
    let join = std::thread::Builder::new()
        .name("peer-link".into())
        .spawn(move || thread.run())
        .map_err(|source| TransportError::File {
            path: "peer link thread".into(),
            source,
        })?;
    Ok((
        PeerHandle {
            commands,
            waker,
            stats,
            bound,
        },
        join,
    ))
}

/// Sets an integer socket option that the `zmq` crate does not wrap
/// (draft or newer ones); ignored when this libzmq does not know it.
fn set_int(socket: &mut zmq::Socket, option: std::os::raw::c_int, value: std::os::raw::c_int) {
    // SAFETY: the socket pointer is live for the borrow; libzmq reads
    // exactly `size_of::<c_int>()` bytes from the pointer we pass.
    unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            option,
            (&value as *const std::os::raw::c_int).cast(),
            std::mem::size_of::<std::os::raw::c_int>(),
        );
    }
}

struct Thread {
    zap: zmq::Socket,
    router: zmq::Socket,
    monitor: zmq::Socket,
    dealers: HashMap<String, zmq::Socket>,
    /// Client public key -> peer name: the only keys the ZAP handler accepts.
    allowed: HashMap<Vec<u8>, String>,
    commands: std::sync::mpsc::Receiver<Command>,
    wake_receiver: WakeReceiver,
    /// Held by `crate::link`; a closed receiver only discards events.
    events: tokio::sync::mpsc::UnboundedSender<PeerEvent>,
    stats: Arc<PeerStats>,
}

impl Thread {
    fn run(mut self) {
        loop {
            let (zap, router, monitor, wake) = {
                let mut items = [
                    self.zap.as_poll_item(zmq::POLLIN),
                    self.router.as_poll_item(zmq::POLLIN),
                    self.monitor.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(self.wake_receiver.fd(), zmq::POLLIN),
                ];
                if let Err(error) = zmq::poll(&mut items, -1) {
                    if error == zmq::Error::EINTR {
                        continue;
                    }
                    tracing::error!(%error, "peer link poll failed; the link stops");
                    return;
                }
                (
                    items[0].is_readable(),
                    items[1].is_readable(),
                    items[2].is_readable(),
                    items[3].is_readable(),
                )
            };
            if zap {
                self.answer_zap();
            }
            if router {
                self.receive();
            }
            if monitor {
                self.count_failures();
            }
            if wake && !self.drain_commands() {
                return;
            }
        }
    }

    /// One ZAP request: 200 for a configured peer's key (user id = its
    /// name), 400 for any other.
    fn answer_zap(&mut self) {
        let Ok(frames) = self.zap.recv_multipart(zmq::DONTWAIT) else {
            return;
        };
        // version, request id, domain, address, routing id, mechanism, credentials...
        let field = |index: usize| frames.get(index).map(Vec::as_slice).unwrap_or_default();
        let mechanism = field(5);
        let key = field(6);
        let peer = (mechanism == b"CURVE")
            .then(|| self.allowed.get(key))
            .flatten()
            .cloned();
        let (status, text, user) = match &peer {
            Some(name) => ("200", "OK", name.as_str()),
            None => ("400", "unknown key", ""),
        };
        if peer.is_none() {
            let key = zmq::z85_encode(key).unwrap_or_else(|_| "(not a CURVE key)".into());
            let address = String::from_utf8_lossy(field(3)).into_owned();
            tracing::warn!(%address, %key, "peer link: refused a connection with an unknown key");
            let _ = self.events.send(PeerEvent::Refused { address, key });
        }
        let reply: Vec<&[u8]> = vec![
            b"1.0",
            field(1),
            status.as_bytes(),
            text.as_bytes(),
            user.as_bytes(),
            b"",
        ];
        if let Err(error) = self.zap.send_multipart(reply, 0) {
            tracing::warn!(%error, "peer link: cannot answer a ZAP request");
        }
    }

    fn receive(&mut self) {
        loop {
            // [routing id, payload], on an authenticated connection.
            let mut identity = zmq::Message::new();
            if self.router.recv(&mut identity, zmq::DONTWAIT).is_err() {
                return;
            }
            let mut payload = zmq::Message::new();
            if self.router.recv(&mut payload, zmq::DONTWAIT).is_err() {
                return;
            }
            while self.router.get_rcvmore().unwrap_or(false) {
                let _ = self.router.recv_bytes(zmq::DONTWAIT);
            }
            let Some(peer) = payload.gets("User-Id").map(str::to_string) else {
                continue;
            };
            if peer.is_empty() {
                continue;
            }
            self.stats.received.fetch_add(1, Ordering::Relaxed);
            let _ = self.events.send(PeerEvent::Received {
                peer,
                payload: payload.to_vec(),
            });
        }
    }

    fn count_failures(&mut self) {
        while let Ok(frames) = self.monitor.recv_multipart(zmq::DONTWAIT) {
            if frames.first().is_some_and(|frame| frame.len() >= 2) {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// False when told to stop.
    fn drain_commands(&mut self) -> bool {
        self.wake_receiver.clear();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Stop => return false,
                Command::Send { peer, payload } => {
                    let Some(dealer) = self.dealers.get(&peer) else {
                        continue;
                    };
                    match dealer.send(payload, zmq::DONTWAIT) {
                        Ok(()) => self.stats.sent.fetch_add(1, Ordering::Relaxed),
                        Err(_) => self.stats.send_dropped.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        }
        true
    }
}
