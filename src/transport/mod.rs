//! Transport: every ZeroMQ socket of the crate, and the wire messages that
//! travel over them.
//!
//! Owns:
//!
//! - [`messages`]: the versioned agent protocol (frames and JSON shapes of
//!   HELLO, READY, HEARTBEAT, ERROR, RESOLVE and their replies), and the
//!   normalisation of the four legacy `ERROR:` shapes. Pure, no I/O.
//! - [`endpoint`]: the supervisor-side agent endpoint, a thread owning the
//!   ROUTER that agents connect to. It authenticates every message (agent
//!   name + per-agent token) and delivers typed [`EndpointEvent`]s.
//! - [`error_bus`]: a thread owning the error bus PUB socket and the legacy
//!   `ERROR:` SUB socket; appends every [`ErrorRecord`] to `errors.jsonl`,
//!   counts it, and re-publishes it with topic `<severity>.<agent>`.
//! - [`pool`]: [`SocketPool`], pooled client sockets with lazy-pirate
//!   requests, used by agents (re-exported by `sdk`).
//! - [`breaker`]: [`CircuitBreaker`] and the shared [`Breakers`] table that
//!   guard the pool's requests (and any other call an agent makes); their
//!   reports ride on heartbeats.
//! - [`heartbeat`]: [`HeartbeatTracker`], the pure deadline arithmetic of
//!   "has this agent stopped beating / stopped making progress".
//! - [`agent_link`]: the agent side: a thread owning the DEALER connected to
//!   the endpoint, sending HELLO and automatic heartbeats (wrapped by `sdk`).
//! - [`follow`]: [`ErrorFollower`], a SUB socket reading the error bus
//!   (`supervisor errors --follow`).
//! - [`peer`]: the peer link's sockets between two hosts' supervisors
//!   (CURVE-encrypted, both sides authenticated, a ZAP handler that refuses
//!   and counts unknown keys); opaque payloads, meaning in `crate::link`.
//! - `wake`: the self-pipe that lets other threads wake a `zmq::poll` loop.
//!
//! Does not own agent state, restarts or policy (`supervisor` decides what a
//! missed heartbeat or a fatal error means), and never exposes the `zmq`
//! crate: other modules see only the types defined here.

pub mod agent_link;
pub mod agent_table;
pub mod breaker;
pub mod endpoint;
pub mod error_bus;
pub mod follow;
pub mod heartbeat;
pub mod messages;
pub mod peer;
pub mod pool;
pub mod redact;
mod wake;

pub use agent_link::{AgentLink, AgentLinkHandle, LinkSettings, LinkStats};
pub use agent_table::{AgentTable, TableEntry, TokenCheck};
pub use breaker::{
    BreakerConfig, BreakerError, BreakerReport, BreakerState, Breakers, CircuitBreaker,
};
pub use endpoint::{
    AgentEndpoint, EndpointConfig, EndpointEvent, EndpointHandle, EndpointStats, Resolution,
    ResolveReply,
};
pub use error_bus::{ErrorBus, ErrorBusConfig, ErrorBusHandle, ErrorBusStats, ErrorSink};
pub use follow::ErrorFollower;
pub use heartbeat::{HeartbeatTracker, HeartbeatVerdict};
pub use messages::{AgentState, ErrorRecord, HeartbeatPayload, Instance, Severity};
pub use pool::{PoolConfig, PoolStats, PooledSocket, SocketKind, SocketPool};

/// What went wrong in the transport, with the endpoint or agent it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A libzmq call failed.
    #[error("{action} on {endpoint}: {source}")]
    Zmq {
        /// What was attempted: `bind`, `connect`, `send`, ...
        action: &'static str,
        /// The ZeroMQ address the socket was bound or connected to.
        endpoint: String,
        /// libzmq's own message; [`ZmqError::would_block`] tells a timeout
        /// or full queue apart from a broken socket.
        #[source]
        source: ZmqError,
    },
    /// No reply (or no send) within the timeout, after every attempt.
    #[error("{endpoint}: no reply after {attempts} attempt(s) of {timeout_ms} ms")]
    Timeout {
        /// The address that did not answer.
        endpoint: String,
        /// How many requests were sent (each on a fresh socket) before
        /// giving up.
        attempts: u32,
        /// The wait per attempt, in milliseconds.
        timeout_ms: u64,
    },
    /// The circuit breaker of `target` is open: the call was not made.
    #[error("circuit breaker to {target} is open (next try in {retry_in_ms} ms)")]
    CircuitOpen { target: String, retry_in_ms: u64 },
    /// Every socket the pool may hold is in use.
    #[error("socket pool exhausted for {endpoint} ({in_use} in use)")]
    PoolExhausted {
        /// The address whose sockets are all checked out.
        endpoint: String,
        /// Sockets checked out for it now (the pool's per-endpoint limit).
        in_use: usize,
    },
    /// A request to be spread over no endpoint at all (no instance ready).
    #[error("no endpoint to send the request to (no instance is ready)")]
    NoEndpoint,
    /// This libzmq was built without CURVE (libsodium was not found when
    /// `vendor/zmq-sys` was built).
    #[error(
        "this build has no CURVE encryption: install libsodium-dev (Debian) and rebuild (see docs/security.md)"
    )]
    NoCurve,
    /// A message could not be encoded or decoded.
    #[error("malformed message from {origin}: {reason}")]
    Malformed {
        /// Who sent it: an agent name, an endpoint or a file.
        origin: String,
        /// What was wrong (the JSON error, a missing frame, ...).
        reason: String,
    },
    /// The supervisor refused a message of this agent.
    #[error("supervisor rejected a message of agent `{agent}`: {reason}")]
    Rejected {
        /// The agent the message was sent as.
        agent: String,
        /// The supervisor's reason: `unknown agent`, `bad token`,
        /// `malformed message: ...`, or `busy` (which READY retries).
        reason: String,
    },
    /// A file of the run directory (e.g. `errors.jsonl`).
    #[error("{path}: {source}")]
    File {
        /// The file that could not be opened or written.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The thread that owns the socket has ended.
    #[error("the {what} thread has stopped")]
    Stopped {
        /// Which thread, e.g. `agent link`.
        what: &'static str,
    },
    /// Other I/O (threads, pipes).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. `spawn the agent link thread`.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// A libzmq error, without exposing the `zmq` crate's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZmqError {
    message: String,
    /// True for EAGAIN: a timeout or a full queue, not a broken socket.
    would_block: bool,
}

impl ZmqError {
    /// True when the call would have blocked (timeout or high-water mark).
    pub fn would_block(&self) -> bool {
        self.would_block
    }
}

impl std::fmt::Display for ZmqError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for ZmqError {}

impl From<zmq::Error> for ZmqError {
    fn from(error: zmq::Error) -> ZmqError {
        ZmqError {
            message: error.message().to_string(),
            would_block: error == zmq::Error::EAGAIN,
        }
    }
}

impl TransportError {
    pub(crate) fn circuit_open(target: &str, retry_in: std::time::Duration) -> TransportError {
        TransportError::CircuitOpen {
            target: target.to_string(),
            retry_in_ms: u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A libzmq failure of `action` on `endpoint`, keeping the `zmq` type
    /// out of the public error.
    pub(crate) fn zmq(action: &'static str, endpoint: &str, error: zmq::Error) -> TransportError {
        TransportError::Zmq {
            action,
            endpoint: endpoint.to_string(),
            source: error.into(),
        }
    }
}

/// One libzmq context for the process: a context owns I/O threads, so the
/// endpoint, the error bus, pools and the SDK share it.
pub(crate) fn context() -> zmq::Context {
    static CONTEXT: std::sync::OnceLock<zmq::Context> = std::sync::OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new).clone()
}

/// libzmq's draft options (`zmq_draft.h`), built in by `vendor/zmq-sys`.
const ZMQ_IN_BATCH_SIZE: std::os::raw::c_int = 101;
/// See [`ZMQ_IN_BATCH_SIZE`].
const ZMQ_OUT_BATCH_SIZE: std::os::raw::c_int = 102;

/// Gives each connection of `socket` a 512-byte read and a 256-byte write
/// buffer (libzmq's default is 8 KiB each, plus a table of 40 bytes per 33
/// bytes of read buffer beside it: 18 KiB a connection; 1.3 KiB here).
/// Right for a socket with hundreds of peers sending small messages: a
/// heartbeat (about 200 bytes) is one read, and a bigger message is still
/// read whole, in more reads. Set before bind or connect. Returns false,
/// leaving the defaults, when libzmq was built without its draft API.
pub(crate) fn small_batches(socket: &mut zmq::Socket) -> bool {
    let set = |socket: &mut zmq::Socket, option, bytes: std::os::raw::c_int| {
        // SAFETY: the socket pointer is live for the borrow; libzmq reads
        // exactly `size_of::<c_int>()` bytes from the pointer we pass.
        let result = unsafe {
            zmq_sys::zmq_setsockopt(
                socket.as_mut_ptr(),
                option,
                (&bytes as *const std::os::raw::c_int).cast(),
                std::mem::size_of::<std::os::raw::c_int>(),
            )
        };
        result == 0
    };
    set(socket, ZMQ_IN_BATCH_SIZE, 512) && set(socket, ZMQ_OUT_BATCH_SIZE, 256)
}

/// Milliseconds for a libzmq option, saturating (libzmq takes an `i32`).
pub(crate) fn millis_i32(duration: std::time::Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// The endpoint a socket really bound (`tcp://127.0.0.1:*` -> the port).
pub(crate) fn bound_endpoint(socket: &zmq::Socket, requested: &str) -> String {
    match socket.get_last_endpoint() {
        Ok(Ok(endpoint)) => endpoint,
        _ => requested.to_string(),
    }
}

/// Constant-time equality of two secrets: the time taken depends only on the
/// lengths, never on where the first difference is.
pub(crate) fn secrets_equal(expected: &[u8], given: &[u8]) -> bool {
    if expected.len() != given.len() {
        return false;
    }
    let difference = expected
        .iter()
        .zip(given)
        .fold(0u8, |accumulated, (left, right)| {
            accumulated | (left ^ right)
        });
    std::hint::black_box(difference) == 0
}

/// A fresh random agent token: 32 hex characters (128 bits) from
/// `/dev/urandom`; if that cannot be read, from per-process random hash keys
/// mixed with the time. The endpoint compares tokens in constant time.
pub fn generate_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .is_ok();
    if !from_os {
        // Fallback: per-process random hash keys mixed with the time.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_nanos())
                    .unwrap_or_default(),
            );
            chunk.copy_from_slice(&hasher.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `vendor/zmq-sys/build/zmq_config.hpp` replaces libzmq 4.3.4's own
    /// compile-time settings; another libzmq needs that file redone from
    /// its `src/config.hpp`.
    #[test]
    fn libzmq_is_the_configured_version() {
        assert_eq!(zmq::version(), (4, 3, 4));
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
        assert!(!secrets_equal(b"", b"a"));
    }

    #[test]
    fn generated_tokens_are_hex_and_differ() {
        let first = generate_token();
        let second = generate_token();
        assert_eq!(first.len(), 32);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }
}
