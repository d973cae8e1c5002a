//! [`SocketPool`]: client sockets (they connect, never bind) reused across
//! requests, keyed by (socket kind, endpoint).
//!
//! Guarantees, each fixing a fault of the legacy `zmq_pool.py`:
//! - bounded: at most `max_per_key` live sockets per key and `max_total`
//!   overall, idle or in use (checkout waits, then fails with
//!   [`TransportError::PoolExhausted`]);
//! - sane defaults on every socket: LINGER 0, send and receive timeouts;
//! - a REQ socket that sent a request and did not get its reply (timeout, or
//!   the guard dropped early) is discarded, never returned: its state
//!   machine would refuse the next send;
//! - idle sockets expire after `idle_timeout`;
//! - [`SocketPool::request`] is the lazy-pirate pattern: on timeout, drop the
//!   socket, back off, retry on a fresh one;
//! - each request goes through the circuit breaker of its target (see
//!   [`super::breaker`]): a target whose requests keep failing is refused at
//!   once for a while instead of costing every caller its timeouts.
//!
//! Owns the idle sockets (behind one mutex that is never held while a socket
//! is used: each checked-out socket belongs to one thread through its
//! guard). Does not own servers or any agent protocol.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::breaker::{BreakerConfig, Breakers};
use super::{TransportError, context, millis_i32};

/// The client socket kinds the pool hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// Strict request/reply; see [`SocketPool::request`].
    Req,
    /// Asynchronous request/reply.
    Dealer,
    /// One-way sends (pipelines).
    Push,
    /// Subscriptions (subscribe through [`PooledSocket::subscribe`]).
    Sub,
}

impl SocketKind {
    fn zmq_type(self) -> zmq::SocketType {
        match self {
            SocketKind::Req => zmq::REQ,
            SocketKind::Dealer => zmq::DEALER,
            SocketKind::Push => zmq::PUSH,
            SocketKind::Sub => zmq::SUB,
        }
    }
}

/// Limits and defaults of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Live sockets per (kind, endpoint).
    pub max_per_key: usize,
    /// Live sockets in the whole pool.
    pub max_total: usize,
    /// Idle sockets older than this are closed.
    pub idle_timeout: Duration,
    /// SNDTIMEO of every socket.
    pub send_timeout: Duration,
    /// RCVTIMEO a socket starts with (every receive sets its own timeout).
    pub receive_timeout: Duration,
    /// How long a checkout waits for a free slot.
    pub checkout_timeout: Duration,
    /// First pause between lazy-pirate attempts; doubles per attempt, at most 1 s.
    pub retry_backoff: Duration,
    /// How long a receive keeps checking for its reply before it sleeps in
    /// libzmq. A sleeping thread pays a wake-up when the reply comes, which
    /// on a virtual machine with idle cores can cost more than the round
    /// trip; spinning spends up to this much client CPU per receive to avoid
    /// it. Zero (the default) blocks at once. Measure before enabling it: on
    /// a busy 2-core machine it made round trips slower, because the
    /// spinning client holds a core that the I/O threads and the server need
    /// (`cargo bench --bench fabric -- round_trips` prints both).
    pub spin: Duration,
    /// The circuit breaker around [`SocketPool::request`], per target;
    /// `None` turns it off.
    pub breaker: Option<BreakerConfig>,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            max_per_key: 16,
            max_total: 256,
            idle_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(1),
            receive_timeout: Duration::from_secs(5),
            checkout_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(20),
            spin: Duration::ZERO,
            breaker: Some(BreakerConfig::default()),
        }
    }
}

/// Pool counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Sockets opened.
    pub created: u64,
    /// Checkouts served by an idle socket.
    pub reused: u64,
    /// Sockets closed because they were broken (REQ without its reply, errors).
    pub discarded: u64,
    /// Idle sockets closed by age or to make room under `max_total`.
    pub expired: u64,
    /// Checked out now.
    pub in_use: usize,
    /// Idle now.
    pub idle: usize,
}

type Key = (SocketKind, String);

/// A socket waiting in the pool.
struct IdleSocket {
    /// Connected, with no request outstanding.
    socket: zmq::Socket,
    /// Its RCVTIMEO in milliseconds, so a receive sets it only when it changes.
    receive_timeout_ms: i32,
    /// When it was returned; it expires `idle_timeout` later.
    since: Instant,
}

/// The pool's bookkeeping, behind its one mutex.
#[derive(Default)]
struct Slots {
    /// Sockets to hand out, most recently returned last.
    idle: HashMap<Key, Vec<IdleSocket>>,
    /// Open sockets (idle or checked out) per key, against `max_per_key`.
    live_per_key: HashMap<Key, usize>,
    /// Open sockets overall, against `max_total`.
    live_total: usize,
    /// Checked out now.
    in_use: usize,
    /// Threads blocked in `checkout` waiting for a slot: `freed` is
    /// signalled only when there are any (a notify is a syscall).
    waiters: usize,
    /// No idle socket expires before this; `None` when none is idle. Keeps
    /// checkout from scanning every key each time.
    next_expiry: Option<Instant>,
}

#[derive(Default)]
struct Counters {
    created: AtomicU64,
    reused: AtomicU64,
    discarded: AtomicU64,
    expired: AtomicU64,
}

/// What every clone of a [`SocketPool`] shares.
struct Shared {
    /// Limits and socket options, fixed at creation.
    config: PoolConfig,
    /// Held only to take or return a socket, never while one is used.
    slots: Mutex<Slots>,
    /// Signalled whenever a socket is returned or closed.
    freed: Condvar,
    /// Behind [`SocketPool::stats`].
    counters: Counters,
    /// The breakers of the targets this pool sends requests to.
    breakers: Breakers,
    /// Endpoint -> the agent name it was resolved from, so breakers are
    /// named after agents (`postgres`), not addresses.
    targets: Mutex<HashMap<String, String>>,
    /// Round-robin position of [`SocketPool::request_spread`].
    turn: std::sync::atomic::AtomicUsize,
    /// Called with the name of a target whose request went unanswered (see
    /// [`SocketPool::on_unanswered`]); set by the SDK's `Agent`.
    unanswered: Mutex<Option<Unanswered>>,
}

/// See [`SocketPool::on_unanswered`].
type Unanswered = Arc<dyn Fn(&str) + Send + Sync>;

/// A pool of client sockets; clones share the same pool.
///
/// ```no_run
/// use std::time::Duration;
/// use supervisor::transport::SocketPool;
///
/// let pool = SocketPool::new();
/// let reply = pool.request("tcp://127.0.0.1:7200", b"ping", Duration::from_millis(500), 2)?;
/// println!("{}", String::from_utf8_lossy(&reply));
/// println!("{:?}", pool.stats());
/// # Ok::<(), supervisor::transport::TransportError>(())
/// ```
#[derive(Clone)]
pub struct SocketPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SocketPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SocketPool")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for SocketPool {
    fn default() -> SocketPool {
        SocketPool::new()
    }
}

impl SocketPool {
    /// A pool with [`PoolConfig::default`] limits.
    ///
    /// ```
    /// let pool = supervisor::transport::SocketPool::new();
    /// assert_eq!(pool.stats().created, 0);
    /// ```
    pub fn new() -> SocketPool {
        SocketPool::with_config(PoolConfig::default())
    }

    /// A pool with explicit limits (zero limits are raised to 1).
    ///
    /// ```
    /// use supervisor::transport::{PoolConfig, SocketPool};
    /// let pool = SocketPool::with_config(PoolConfig { max_per_key: 2, ..PoolConfig::default() });
    /// # drop(pool);
    /// ```
    pub fn with_config(mut config: PoolConfig) -> SocketPool {
        config.max_per_key = config.max_per_key.max(1);
        config.max_total = config.max_total.max(1);
        let breakers = Breakers::new(config.breaker.unwrap_or_default());
        SocketPool {
            shared: Arc::new(Shared {
                config,
                slots: Mutex::new(Slots::default()),
                freed: Condvar::new(),
                counters: Counters::default(),
                breakers,
                targets: Mutex::new(HashMap::new()),
                turn: std::sync::atomic::AtomicUsize::new(0),
                unanswered: Mutex::new(None),
            }),
        }
    }

    /// The circuit breakers of this pool's targets: the ones
    /// [`SocketPool::request`] uses, and for guarding any other call the
    /// agent makes (a database, HTTP) so that it shows in the same reports.
    ///
    /// ```
    /// use supervisor::transport::{BreakerState, SocketPool};
    /// let pool = SocketPool::new();
    /// assert_eq!(pool.breakers().state("postgres"), BreakerState::Closed);
    /// ```
    pub fn breakers(&self) -> &Breakers {
        &self.shared.breakers
    }

    /// Names the target behind `endpoint` (the SDK does this for every
    /// endpoint it resolves), so its breaker is reported as `name`.
    ///
    /// ```
    /// let pool = supervisor::transport::SocketPool::new();
    /// pool.name_endpoint("tcp://127.0.0.1:7200", "echo");
    /// assert_eq!(pool.target_of("tcp://127.0.0.1:7200"), "echo");
    /// assert_eq!(pool.target_of("tcp://127.0.0.1:7300"), "tcp://127.0.0.1:7300");
    /// ```
    pub fn name_endpoint(&self, endpoint: &str, name: &str) {
        self.shared
            .targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(endpoint.to_string(), name.to_string());
    }

    /// Calls `hook` with the agent's name when the first attempt of a
    /// [`SocketPool::request`] to an endpoint named by
    /// [`SocketPool::name_endpoint`] gets no reply, before the retries. The
    /// SDK's `Agent` sets it to resolve that agent again, which starts it if
    /// the supervisor stopped it as idle (`idle_stop`); the retries then
    /// reach it once it listens (a fixed port) or fail (a port of its own
    /// choosing: resolve again).
    ///
    /// ```
    /// let pool = supervisor::transport::SocketPool::new();
    /// pool.on_unanswered(|name| eprintln!("no answer from {name}"));
    /// ```
    pub fn on_unanswered(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self
            .shared
            .unanswered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(hook));
    }

    /// Tells the [`SocketPool::on_unanswered`] hook, if any and if
    /// `endpoint` is named.
    fn unanswered(&self, endpoint: &str) {
        let hook = self
            .shared
            .unanswered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let name = self
            .shared
            .targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(endpoint)
            .cloned();
        if let (Some(hook), Some(name)) = (hook, name) {
            hook(&name);
        }
    }

    /// The breaker target of `endpoint`: the name given by
    /// [`SocketPool::name_endpoint`], else the endpoint itself.
    pub fn target_of(&self, endpoint: &str) -> String {
        self.shared
            .targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(endpoint)
            .cloned()
            .unwrap_or_else(|| endpoint.to_string())
    }

    /// Counters and current occupancy.
    pub fn stats(&self) -> PoolStats {
        let counters = &self.shared.counters;
        let (in_use, idle) = {
            let slots = self.lock();
            (slots.in_use, slots.idle.values().map(Vec::len).sum())
        };
        PoolStats {
            created: counters.created.load(Ordering::Relaxed),
            reused: counters.reused.load(Ordering::Relaxed),
            discarded: counters.discarded.load(Ordering::Relaxed),
            expired: counters.expired.load(Ordering::Relaxed),
            in_use,
            idle,
        }
    }

    /// Closes idle sockets older than the idle timeout (also done on every
    /// checkout). Returns how many were closed.
    pub fn expire_idle(&self) -> usize {
        let expired = {
            let mut slots = self.lock();
            self.take_expired(&mut slots, Instant::now())
        };
        let count = expired.len();
        drop(expired);
        if count > 0 && self.lock().waiters > 0 {
            self.shared.freed.notify_all();
        }
        count
    }

    /// A socket of `kind` connected to `endpoint`: an idle one if any, else a
    /// new one, waiting up to the checkout timeout for a free slot. The guard
    /// returns it on drop (or discards it when broken).
    ///
    /// Connecting is asynchronous in ZeroMQ: a checkout succeeds whether or
    /// not anything listens at `endpoint`; the first send or receive is
    /// where an absent peer shows (as a timeout).
    ///
    /// # Errors
    ///
    /// [`TransportError::PoolExhausted`] when no slot frees up within
    /// [`PoolConfig::checkout_timeout`]; [`TransportError::Zmq`] when the
    /// socket cannot be created or `endpoint` is not a valid address.
    pub fn checkout(
        &self,
        kind: SocketKind,
        endpoint: &str,
    ) -> Result<PooledSocket, TransportError> {
        let key: Key = (kind, endpoint.to_string());
        let deadline = Instant::now() + self.shared.config.checkout_timeout;
        let mut slots = self.lock();
        loop {
            let expired = self.take_expired(&mut slots, Instant::now());
            drop(expired);
            if let Some(idle) = slots.idle.get_mut(&key).and_then(Vec::pop) {
                slots.in_use += 1;
                self.shared.counters.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(self.guard(kind, endpoint, idle.socket, idle.receive_timeout_ms));
            }
            let live_here = slots.live_per_key.get(&key).copied().unwrap_or(0);
            if live_here < self.shared.config.max_per_key {
                if slots.live_total >= self.shared.config.max_total {
                    // Make room by closing the oldest idle socket of another key.
                    if let Some(victim) = oldest_idle(&slots) {
                        if let Some(socket) = slots.idle.get_mut(&victim).and_then(Vec::pop) {
                            forget(&mut slots, &victim);
                            drop(socket);
                            self.shared.counters.expired.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                } else {
                    *slots.live_per_key.entry(key.clone()).or_default() += 1;
                    slots.live_total += 1;
                    slots.in_use += 1;
                    drop(slots);
                    return match self.open(kind, endpoint) {
                        Ok(socket) => {
                            self.shared.counters.created.fetch_add(1, Ordering::Relaxed);
                            let receive_timeout_ms = millis_i32(self.shared.config.receive_timeout);
                            Ok(self.guard(kind, endpoint, socket, receive_timeout_ms))
                        }
                        Err(error) => {
                            let mut slots = self.lock();
                            forget(&mut slots, &key);
                            slots.in_use -= 1;
                            let wake = slots.waiters > 0;
                            drop(slots);
                            if wake {
                                self.shared.freed.notify_one();
                            }
                            Err(error)
                        }
                    };
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(TransportError::PoolExhausted {
                    endpoint: endpoint.to_string(),
                    in_use: slots.in_use,
                });
            }
            slots.waiters += 1;
            slots = self
                .shared
                .freed
                .wait_timeout(slots, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            slots.waiters -= 1;
        }
    }

    /// [`SocketPool::request`] to one of `endpoints`, taken in turn (round
    /// robin across calls): spreads requests over the ready instances of an
    /// agent with `replicas` (see `Agent::resolve_all`). Answers which
    /// endpoint was used with the reply.
    ///
    /// # Errors
    ///
    /// [`TransportError::NoEndpoint`] when `endpoints` is empty; else as
    /// [`SocketPool::request`] for the endpoint chosen.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let pool = supervisor::sdk::SocketPool::new();
    /// let workers = ["tcp://127.0.0.1:9100".to_string(), "tcp://127.0.0.1:9101".to_string()];
    /// let (used, reply) = pool.request_spread(&workers, b"job", Duration::from_millis(200), 1)?;
    /// # Ok::<(), supervisor::transport::TransportError>(())
    /// ```
    pub fn request_spread(
        &self,
        endpoints: &[String],
        message: &[u8],
        timeout: Duration,
        retries: u32,
    ) -> Result<(String, Vec<u8>), TransportError> {
        if endpoints.is_empty() {
            return Err(TransportError::NoEndpoint);
        }
        let turn = self
            .shared
            .turn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let endpoint = &endpoints[turn % endpoints.len()];
        self.request(endpoint, message, timeout, retries)
            .map(|reply| (endpoint.clone(), reply))
    }

    /// Lazy-pirate request/reply: send `message` on a pooled REQ socket and
    /// wait `timeout` for the reply; on timeout discard that socket, pause
    /// (doubling from `retry_backoff`, at most 1 s) and try again on a new
    /// one, `retries` more times. A socket that answered goes back to the pool.
    ///
    /// Blocks the calling thread for up to `(retries + 1) × timeout` plus
    /// the pauses. The request may be delivered more than once (each retry
    /// sends it again), so it should be safe to repeat.
    ///
    /// The whole request passes the target's circuit breaker (unless
    /// `PoolConfig::breaker` is `None`): while it is open the request fails
    /// at once with [`TransportError::CircuitOpen`]; a request that got no
    /// reply after every attempt counts as one failure, a reply as a success.
    ///
    /// # Errors
    ///
    /// [`TransportError::Timeout`] after the last attempt;
    /// [`TransportError::CircuitOpen`] at once while the breaker is open; any
    /// checkout error at once (see [`SocketPool::checkout`]).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let pool = supervisor::sdk::SocketPool::new();
    /// match pool.request("tcp://127.0.0.1:7200", b"ping", Duration::from_millis(200), 3) {
    ///     Ok(reply) => println!("{}", String::from_utf8_lossy(&reply)),
    ///     Err(error) => eprintln!("no answer: {error}"),
    /// }
    /// ```
    pub fn request(
        &self,
        endpoint: &str,
        message: &[u8],
        timeout: Duration,
        retries: u32,
    ) -> Result<Vec<u8>, TransportError> {
        let guarded = self.shared.config.breaker.is_some();
        let target = self.target_of(endpoint);
        if guarded {
            self.shared.breakers.permit(&target)?;
        }
        let outcome = self.attempts(endpoint, message, timeout, retries);
        if guarded {
            match &outcome {
                Ok(_) => self.shared.breakers.record_success(&target),
                Err(TransportError::PoolExhausted { .. }) => self.shared.breakers.release(&target),
                Err(_) => self.shared.breakers.record_failure(&target),
            }
        }
        outcome
    }

    fn attempts(
        &self,
        endpoint: &str,
        message: &[u8],
        timeout: Duration,
        retries: u32,
    ) -> Result<Vec<u8>, TransportError> {
        let mut backoff = self.shared.config.retry_backoff;
        for attempt in 0..=retries {
            let mut socket = self.checkout(SocketKind::Req, endpoint)?;
            let outcome = socket
                .send(message)
                .and_then(|()| socket.receive_within(timeout));
            match outcome {
                Ok(reply) => return Ok(reply),
                Err(error) => {
                    // The guard discards the socket: it is waiting for a reply.
                    drop(socket);
                    tracing::debug!(%endpoint, attempt, %error, "request failed, retrying on a new socket");
                    if attempt == 0 {
                        self.unanswered(endpoint);
                    }
                    if attempt < retries {
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
        Err(TransportError::Timeout {
            endpoint: endpoint.to_string(),
            attempts: retries + 1,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// [`SocketPool::request`] for async code: the request runs on Tokio's
    /// blocking thread pool (`spawn_blocking`), so the runtime's workers never
    /// wait on libzmq. Each checked-out socket still belongs to one thread at
    /// a time; nothing is shared behind a lock. Must run inside a Tokio
    /// runtime.
    ///
    /// A request in flight occupies one blocking thread until it is answered
    /// or its last attempt times out. Dropping the future does not cancel
    /// it: the request finishes in the background, and its socket goes back
    /// to the pool (or is discarded) as usual.
    ///
    /// ```no_run
    /// # #[cfg(feature = "async")]
    /// # async fn example() -> Result<(), supervisor::transport::TransportError> {
    /// use std::time::Duration;
    /// use supervisor::sdk::SocketPool;
    ///
    /// let pool = SocketPool::new();
    /// let reply = pool
    ///     .request_async("tcp://127.0.0.1:7200", b"ping", Duration::from_millis(500), 2)
    ///     .await?;
    /// println!("{}", String::from_utf8_lossy(&reply));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "async")]
    pub async fn request_async(
        &self,
        endpoint: &str,
        message: &[u8],
        timeout: Duration,
        retries: u32,
    ) -> Result<Vec<u8>, TransportError> {
        let pool = self.clone();
        let endpoint = endpoint.to_string();
        let message = message.to_vec();
        let request = tokio::task::spawn_blocking(move || {
            pool.request(&endpoint, &message, timeout, retries)
        });
        match request.await {
            Ok(outcome) => outcome,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Only when the runtime is shutting down.
            Err(_) => Err(TransportError::Stopped {
                what: "blocking request",
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while holding the lock leaves counts that are still valid.
        self.shared
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_expired(&self, slots: &mut Slots, now: Instant) -> Vec<zmq::Socket> {
        if slots.next_expiry.is_none_or(|next| now < next) {
            return Vec::new();
        }
        let limit = self.shared.config.idle_timeout;
        let mut expired = Vec::new();
        let mut emptied = Vec::new();
        let mut oldest_kept: Option<Instant> = None;
        for (key, idle) in slots.idle.iter_mut() {
            let before = idle.len();
            let mut index = 0;
            while index < idle.len() {
                if now.saturating_duration_since(idle[index].since) >= limit {
                    expired.push(idle.swap_remove(index).socket);
                } else {
                    let since = idle[index].since;
                    oldest_kept = Some(oldest_kept.map_or(since, |oldest| oldest.min(since)));
                    index += 1;
                }
            }
            for _ in idle.len()..before {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            forget(slots, &key);
        }
        slots.next_expiry = oldest_kept.map(|since| since + limit);
        self.shared
            .counters
            .expired
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        expired
    }

    fn open(&self, kind: SocketKind, endpoint: &str) -> Result<zmq::Socket, TransportError> {
        let config = &self.shared.config;
        let socket = context()
            .socket(kind.zmq_type())
            .map_err(|error| TransportError::zmq("create socket", endpoint, error))?;
        socket
            .set_linger(0)
            .and_then(|()| socket.set_sndtimeo(millis_i32(config.send_timeout)))
            .and_then(|()| socket.set_rcvtimeo(millis_i32(config.receive_timeout)))
            .map_err(|error| TransportError::zmq("set socket options", endpoint, error))?;
        socket
            .connect(endpoint)
            .map_err(|error| TransportError::zmq("connect", endpoint, error))?;
        Ok(socket)
    }

    fn guard(
        &self,
        kind: SocketKind,
        endpoint: &str,
        socket: zmq::Socket,
        receive_timeout_ms: i32,
    ) -> PooledSocket {
        PooledSocket {
            socket: Some(socket),
            receive_timeout_ms,
            kind,
            endpoint: endpoint.to_string(),
            awaiting_reply: false,
            broken: false,
            pool: self.clone(),
        }
    }

    fn give_back(&self, kind: SocketKind, endpoint: String, socket: IdleSocket, keep: bool) {
        let key: Key = (kind, endpoint);
        let mut slots = self.lock();
        slots.in_use -= 1;
        let wake = slots.waiters > 0;
        if keep {
            let expiry = socket.since + self.shared.config.idle_timeout;
            slots.next_expiry = Some(slots.next_expiry.map_or(expiry, |next| next.min(expiry)));
            slots.idle.entry(key).or_default().push(socket);
            drop(slots);
        } else {
            forget(&mut slots, &key);
            drop(slots);
            drop(socket);
            self.shared
                .counters
                .discarded
                .fetch_add(1, Ordering::Relaxed);
        }
        if wake {
            self.shared.freed.notify_one();
        }
    }
}

/// One fewer live socket under `key`.
fn forget(slots: &mut Slots, key: &Key) {
    if let Some(count) = slots.live_per_key.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            slots.live_per_key.remove(key);
        }
    }
    slots.live_total = slots.live_total.saturating_sub(1);
}

fn oldest_idle(slots: &Slots) -> Option<Key> {
    slots
        .idle
        .iter()
        .filter_map(|(key, idle)| {
            idle.iter()
                .map(|entry| entry.since)
                .min()
                .map(|since| (since, key))
        })
        .min_by_key(|(since, _)| *since)
        .map(|(_, key)| key.clone())
}

/// A checked-out socket. Dropping it returns it to the pool, unless it is
/// broken: a REQ still waiting for its reply, a failed send/receive, or
/// [`PooledSocket::discard`] called.
///
/// ```no_run
/// use std::time::Duration;
/// use supervisor::transport::{SocketKind, SocketPool};
///
/// let pool = SocketPool::new();
/// let mut socket = pool.checkout(SocketKind::Req, "ipc:///tmp/service.sock")?;
/// socket.send(b"hello")?;
/// let reply = socket.receive_within(Duration::from_secs(1))?;
/// # drop(reply);
/// # Ok::<(), supervisor::transport::TransportError>(())
/// ```
pub struct PooledSocket {
    /// `Some` until the drop hands it back.
    socket: Option<zmq::Socket>,
    /// The socket's RCVTIMEO in milliseconds as last set.
    receive_timeout_ms: i32,
    kind: SocketKind,
    endpoint: String,
    /// A REQ sent and has not received yet.
    awaiting_reply: bool,
    broken: bool,
    /// The pool it returns to.
    pool: SocketPool,
}

impl std::fmt::Debug for PooledSocket {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PooledSocket")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("awaiting_reply", &self.awaiting_reply)
            .field("broken", &self.broken)
            .finish()
    }
}

impl PooledSocket {
    /// The ZeroMQ pattern this socket was created with.
    pub fn kind(&self) -> SocketKind {
        self.kind
    }

    /// The address it is connected to, as given to the pool (the pool's
    /// key: sockets are reused only for the same kind and endpoint).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn socket(&self) -> &zmq::Socket {
        self.socket
            .as_ref()
            .expect("the socket is only taken out by Drop")
    }

    /// Sends one frame (waits at most the send timeout).
    pub fn send(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        self.send_multipart(&[frame])
    }

    /// Sends a multi-frame message.
    pub fn send_multipart(&mut self, frames: &[&[u8]]) -> Result<(), TransportError> {
        match self.socket().send_multipart(frames, 0) {
            Ok(()) => {
                if self.kind == SocketKind::Req {
                    self.awaiting_reply = true;
                }
                Ok(())
            }
            Err(error) => {
                self.broken = true;
                Err(TransportError::zmq("send", &self.endpoint, error))
            }
        }
    }

    /// Receives one message and returns its last frame (the body, after
    /// any envelope), waiting at most `timeout`; [`Self::receive_multipart`]
    /// returns every frame. A timeout on a REQ leaves it broken: it is
    /// discarded on drop, never handed out again.
    pub fn receive_within(&mut self, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        let mut frames = self.receive_multipart(timeout)?;
        Ok(frames.pop().unwrap_or_default())
    }

    /// Receives every frame of one message, waiting at most `timeout`.
    pub fn receive_multipart(&mut self, timeout: Duration) -> Result<Vec<Vec<u8>>, TransportError> {
        // A blocking recv under RCVTIMEO rather than `zmq::poll` + a
        // non-blocking recv: one libzmq wait instead of two, fewer syscalls.
        let started = Instant::now();
        let spin = self.pool.shared.config.spin.min(timeout);
        let received = loop {
            let elapsed = started.elapsed();
            if elapsed < spin {
                match self.socket().recv_multipart(zmq::DONTWAIT) {
                    Err(zmq::Error::EAGAIN) => {
                        std::hint::spin_loop();
                        continue;
                    }
                    other => break other,
                }
            }
            let remaining = timeout.saturating_sub(elapsed);
            // Rounded up, so a sub-millisecond remainder still waits.
            let remaining_ms =
                i32::try_from(remaining.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
            if remaining_ms != self.receive_timeout_ms {
                if let Err(error) = self.socket().set_rcvtimeo(remaining_ms) {
                    self.broken = true;
                    return Err(TransportError::zmq("set RCVTIMEO", &self.endpoint, error));
                }
                self.receive_timeout_ms = remaining_ms;
            }
            match self.socket().recv_multipart(0) {
                // A signal (e.g. the SDK's SIGTERM handler): wait out the rest.
                Err(zmq::Error::EINTR) if started.elapsed() < timeout => continue,
                other => break other,
            }
        };
        match received {
            Ok(frames) => {
                self.awaiting_reply = false;
                Ok(frames)
            }
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                if self.kind == SocketKind::Req {
                    self.broken = true;
                }
                Err(TransportError::Timeout {
                    endpoint: self.endpoint.clone(),
                    attempts: 1,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
            Err(error) => {
                self.broken = true;
                Err(TransportError::zmq("receive", &self.endpoint, error))
            }
        }
    }

    /// Subscribes a SUB socket to a topic prefix (`b""` for everything).
    pub fn subscribe(&mut self, prefix: &[u8]) -> Result<(), TransportError> {
        self.socket()
            .set_subscribe(prefix)
            .map_err(|error| TransportError::zmq("subscribe", &self.endpoint, error))
    }

    /// Closes the socket instead of returning it.
    pub fn discard(mut self) {
        self.broken = true;
    }
}

impl Drop for PooledSocket {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take() {
            // SUB subscriptions are per-user state: never hand them to the next user.
            let keep = !self.broken && !self.awaiting_reply && self.kind != SocketKind::Sub;
            let idle = IdleSocket {
                socket,
                receive_timeout_ms: self.receive_timeout_ms,
                since: Instant::now(),
            };
            self.pool
                .give_back(self.kind, std::mem::take(&mut self.endpoint), idle, keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep_server() -> (zmq::Socket, String) {
        let socket = context().socket(zmq::REP).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = bound_endpoint_for_test(&socket);
        (socket, endpoint)
    }

    fn bound_endpoint_for_test(socket: &zmq::Socket) -> String {
        socket.get_last_endpoint().unwrap().unwrap()
    }

    #[test]
    fn an_unanswered_request_to_a_named_agent_calls_the_hook_and_retries_reach_it() {
        // A port nothing listens on (bound once to learn a free one).
        let (server, endpoint) = rep_server();
        drop(server);
        let pool = SocketPool::new();
        pool.name_endpoint(&endpoint, "lazy");
        let (calls, woken) = std::sync::mpsc::channel::<String>();
        let serving = endpoint.clone();
        pool.on_unanswered(move |name| {
            let _ = calls.send(name.to_string());
            // "Woken": the agent starts serving on its port.
            let endpoint = serving.clone();
            std::thread::spawn(move || {
                let socket = context().socket(zmq::REP).unwrap();
                socket.set_linger(0).unwrap();
                // libzmq frees the port of the closed socket in the background.
                let mut tries = 0;
                while socket.bind(&endpoint).is_err() && tries < 250 {
                    std::thread::sleep(Duration::from_millis(20));
                    tries += 1;
                }
                let request = socket.recv_bytes(0).unwrap();
                socket
                    .send([b"awake:".as_slice(), &request].concat(), 0)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(200));
            });
        });
        let reply = pool
            .request(&endpoint, b"ping", Duration::from_millis(300), 5)
            .expect("a retry reaches the woken server");
        assert_eq!(reply, b"awake:ping");
        assert_eq!(
            woken.try_iter().collect::<Vec<_>>(),
            ["lazy"],
            "called once"
        );
        // An unnamed endpoint calls nothing.
        let (server, unnamed) = rep_server();
        drop(server);
        assert!(
            pool.request(&unnamed, b"ping", Duration::from_millis(20), 1)
                .is_err()
        );
        assert_eq!(woken.try_iter().count(), 0);
    }

    #[test]
    fn sockets_are_reused_and_bounded_per_key() {
        let (_server, endpoint) = rep_server();
        let pool = SocketPool::with_config(PoolConfig {
            max_per_key: 2,
            checkout_timeout: Duration::from_millis(100),
            ..PoolConfig::default()
        });
        let first = pool.checkout(SocketKind::Dealer, &endpoint).unwrap();
        let second = pool.checkout(SocketKind::Dealer, &endpoint).unwrap();
        assert_eq!(pool.stats().in_use, 2);
        let third = pool.checkout(SocketKind::Dealer, &endpoint);
        assert!(matches!(third, Err(TransportError::PoolExhausted { .. })));
        drop(first);
        let again = pool.checkout(SocketKind::Dealer, &endpoint).unwrap();
        let stats = pool.stats();
        assert_eq!((stats.created, stats.reused, stats.in_use), (2, 1, 2));
        drop((second, again));
        assert_eq!(pool.stats().idle, 2);
    }

    #[test]
    fn total_limit_evicts_idle_sockets_of_other_keys() {
        let pool = SocketPool::with_config(PoolConfig {
            max_total: 1,
            checkout_timeout: Duration::from_millis(100),
            ..PoolConfig::default()
        });
        drop(
            pool.checkout(SocketKind::Push, "tcp://127.0.0.1:1")
                .unwrap(),
        );
        assert_eq!(pool.stats().idle, 1);
        let other = pool
            .checkout(SocketKind::Push, "tcp://127.0.0.1:2")
            .unwrap();
        assert_eq!(pool.stats().expired, 1);
        // Both slots taken by an in-use socket: a third key must wait, then fail.
        assert!(
            pool.checkout(SocketKind::Push, "tcp://127.0.0.1:3")
                .is_err()
        );
        drop(other);
    }

    #[test]
    fn a_req_without_its_reply_is_discarded() {
        let pool = SocketPool::new();
        let mut socket = pool.checkout(SocketKind::Req, "tcp://127.0.0.1:9").unwrap();
        socket.send(b"hello").unwrap();
        assert!(socket.receive_within(Duration::from_millis(20)).is_err());
        drop(socket);
        let stats = pool.stats();
        assert_eq!((stats.discarded, stats.idle, stats.in_use), (1, 0, 0));
    }

    #[test]
    fn idle_sockets_expire() {
        let pool = SocketPool::with_config(PoolConfig {
            idle_timeout: Duration::ZERO,
            ..PoolConfig::default()
        });
        drop(
            pool.checkout(SocketKind::Push, "tcp://127.0.0.1:1")
                .unwrap(),
        );
        assert_eq!(pool.expire_idle(), 1);
        assert_eq!(pool.stats().idle, 0);
    }

    #[test]
    fn a_waiting_checkout_gets_the_socket_given_back() {
        let pool = SocketPool::with_config(PoolConfig {
            max_per_key: 1,
            checkout_timeout: Duration::from_secs(10),
            ..PoolConfig::default()
        });
        let held = pool
            .checkout(SocketKind::Push, "tcp://127.0.0.1:1")
            .unwrap();
        let returner = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        let started = Instant::now();
        let socket = pool
            .checkout(SocketKind::Push, "tcp://127.0.0.1:1")
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
        returner.join().unwrap();
        drop(socket);
        let stats = pool.stats();
        assert_eq!((stats.created, stats.reused, stats.idle), (1, 1, 1));
    }

    #[test]
    fn idle_sockets_live_until_their_timeout() {
        let pool = SocketPool::with_config(PoolConfig {
            idle_timeout: Duration::from_millis(100),
            ..PoolConfig::default()
        });
        drop(
            pool.checkout(SocketKind::Push, "tcp://127.0.0.1:1")
                .unwrap(),
        );
        drop(
            pool.checkout(SocketKind::Push, "tcp://127.0.0.1:2")
                .unwrap(),
        );
        assert_eq!(pool.expire_idle(), 0);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(pool.expire_idle(), 2);
        assert_eq!(pool.stats().idle, 0);
    }

    #[test]
    fn each_receive_uses_its_own_timeout() {
        let (server, endpoint) = rep_server();
        let echo = std::thread::spawn(move || {
            for _ in 0..4 {
                let request = server.recv_bytes(0).unwrap();
                server.send(request, 0).unwrap();
            }
        });
        for spin in [Duration::ZERO, Duration::from_micros(200)] {
            let pool = SocketPool::with_config(PoolConfig {
                spin,
                ..PoolConfig::default()
            });
            for timeout in [Duration::from_secs(5), Duration::from_millis(4_999)] {
                let reply = pool.request(&endpoint, b"ping", timeout, 0).unwrap();
                assert_eq!(reply, b"ping");
            }
            // A DEALER that times out is still usable, so it goes back.
            let mut dealer = pool
                .checkout(SocketKind::Dealer, "tcp://127.0.0.1:9")
                .unwrap();
            let started = Instant::now();
            assert!(matches!(
                dealer.receive_within(Duration::from_millis(30)),
                Err(TransportError::Timeout { .. })
            ));
            assert!(started.elapsed() >= Duration::from_millis(30));
            drop(dealer);
            let stats = pool.stats();
            assert_eq!((stats.discarded, stats.idle), (0, 2), "{stats:?}");
        }
        echo.join().unwrap();
    }

    #[test]
    fn request_round_trip_and_reuse() {
        let (server, endpoint) = rep_server();
        let echo = std::thread::spawn(move || {
            for _ in 0..3 {
                let request = server.recv_bytes(0).unwrap();
                server.send(request, 0).unwrap();
            }
        });
        let pool = SocketPool::new();
        for index in 0..3 {
            let message = format!("m{index}");
            let reply = pool
                .request(&endpoint, message.as_bytes(), Duration::from_secs(5), 0)
                .unwrap();
            assert_eq!(reply, message.as_bytes());
        }
        echo.join().unwrap();
        let stats = pool.stats();
        assert_eq!((stats.created, stats.reused, stats.discarded), (1, 2, 0));
    }
}
