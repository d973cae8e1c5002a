//! The supervisor-side agent endpoint: one thread owns the ROUTER socket
//! agents connect to (`ipc://<run-dir>/agents.sock` by default, or a `tcp://`
//! address for agents on other hosts), authenticates every message by agent
//! name + per-agent token, and turns the good ones into [`EndpointEvent`]s on
//! an `mpsc` channel. ERROR messages also go straight to the error bus.
//!
//! The thread never blocks on the event consumer: events go out with
//! `try_send`; a full channel drops a heartbeat (the next one supersedes it)
//! and refuses HELLO/READY/RESOLVE with a `busy` rejection the SDK retries.
//! Every drop and rejection is counted in [`EndpointStats`].
//!
//! Owns the ROUTER socket, the token table and the counters. Does not own
//! agent state or any decision about it (the supervisor loop), nor the error
//! bus (it only holds an [`ErrorSink`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;

use super::agent_table::{AgentTable, TokenCheck};
use super::error_bus::ErrorSink;
use super::messages::{
    AgentMessage, AgentState, ErrorRecord, HeartbeatPayload, MAX_MESSAGE_BYTES, MessageKind, Reply,
    ReplyKind,
};
use super::wake::{self, WakeReceiver, Waker};
use super::{TransportError, bound_endpoint, context, small_batches};

/// At most this many messages are read per poll wake-up before commands
/// (registrations, resolve answers) get another turn.
const BATCH: usize = 1024;

/// After a round of only heartbeats the thread waits this long before
/// reading again, so one wake-up takes many heartbeats. It is also the most
/// a READY or RESOLVE arriving just then waits.
const HEARTBEAT_GATHER: std::time::Duration = std::time::Duration::from_millis(3);

/// Where and how the endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `ipc://<path>` or `tcp://<address>:<port>` (`tcp://127.0.0.1:*` picks a port).
    pub bind: String,
    /// Larger JSON frames are rejected and counted as oversized.
    pub max_message_bytes: usize,
}

impl EndpointConfig {
    /// The default: `ipc://<run_dir>/agents.sock`. Unix socket paths are
    /// limited to about 107 bytes, so keep run directories short.
    ///
    /// ```
    /// use supervisor::transport::EndpointConfig;
    /// let config = EndpointConfig::in_run_dir(std::path::Path::new("/run/sv"));
    /// assert_eq!(config.bind, "ipc:///run/sv/agents.sock");
    /// ```
    pub fn in_run_dir(run_dir: &Path) -> EndpointConfig {
        EndpointConfig::at(&format!("ipc://{}", run_dir.join("agents.sock").display()))
    }

    /// Listen on an explicit endpoint, e.g. `tcp://0.0.0.0:7300`.
    pub fn at(bind: &str) -> EndpointConfig {
        EndpointConfig {
            bind: bind.to_string(),
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

/// Something an agent did, as seen by the endpoint (authenticated).
///
/// For the supervisor loop: `ReportedReady` is `readiness: sdk` passing,
/// `HeartbeatReceived` feeds a [`super::HeartbeatTracker`], `ErrorReported`
/// feeds the `on_error` policy (the record is already in `errors.jsonl`).
#[derive(Debug)]
pub enum EndpointEvent {
    /// The agent said HELLO (it connected, or reconnected after a restart).
    Connected {
        /// The authenticated agent name.
        agent: String,
        /// The process id the agent reported (it may be a child of the
        /// spawned process, e.g. under a wrapper script).
        pid: Option<u32>,
    },
    /// The agent said READY.
    ReportedReady {
        /// The authenticated agent name.
        agent: String,
    },
    /// The agent's READY named where it serves (sent just before its
    /// `ReportedReady`); RESOLVE should answer this endpoint from now on.
    Advertised {
        /// The authenticated agent name.
        agent: String,
        /// The address it gave, as given (e.g. `tcp://127.0.0.1:41234`).
        endpoint: String,
    },
    /// A heartbeat, with its payload if it carried one.
    HeartbeatReceived {
        /// The authenticated agent name.
        agent: String,
        /// The agent's sequence number (grows by one per heartbeat).
        seq: u64,
        /// The progress payload, if the heartbeat carried one.
        payload: Option<HeartbeatPayload>,
        /// When the endpoint thread read it (not when it is handled), so
        /// a busy loop does not make the agent look late.
        received_at: Instant,
    },
    /// A structured error, already handed to the error bus.
    ErrorReported {
        /// The record as journaled (timestamp filled in, context redacted).
        record: ErrorRecord,
    },
    /// The agent asks where `name` is; answer through `reply` (dropping it
    /// answers "not found").
    ResolveRequested {
        /// The authenticated agent asking.
        agent: String,
        /// The agent it asks about (not checked to exist).
        name: String,
        /// Answers the asking agent; consumed by [`ResolveReply::answer`].
        reply: ResolveReply,
    },
    /// A message was refused. `agent` is the claimed name, if one could be read.
    Rejected {
        /// The name the message claimed; `None` when the frame could not
        /// be read that far.
        agent: Option<String>,
        /// Why it was refused.
        reason: RejectReason,
    },
}

/// Why a message was refused (each has its own counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The name is not registered: never started, or its process exited.
    UnknownAgent,
    /// The token is not the agent's current one.
    BadToken,
    /// Not a valid message (see [`AgentMessage::decode`]).
    Malformed,
    /// Over [`MAX_MESSAGE_BYTES`].
    Oversized,
}

impl RejectReason {
    /// The reason as the `rejected` reply spells it.
    fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownAgent => "unknown agent",
            RejectReason::BadToken => "bad token",
            RejectReason::Malformed => "malformed message",
            RejectReason::Oversized => "message too large",
        }
    }
}

/// The answer to a RESOLVE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Where to connect; `None` when the agent has no endpoint.
    pub endpoint: Option<String>,
    /// The agent's state on the wire ([`AgentState::Unknown`] for no such
    /// agent).
    pub state: AgentState,
}

impl Resolution {
    /// "No such agent".
    pub fn not_found() -> Resolution {
        Resolution {
            endpoint: None,
            state: AgentState::Unknown,
        }
    }
}

/// Answers one RESOLVE request. Travels inside
/// [`EndpointEvent::ResolveRequested`]; answering (or dropping) it queues the
/// reply on the endpoint thread, so the agent is never left waiting.
pub struct ResolveReply {
    /// The ROUTER identity of the asking agent's connection.
    identity: Vec<u8>,
    /// Its message had the empty delimiter (a REQ peer), so the reply must.
    delimited: bool,
    /// The request's `seq`, echoed.
    seq: u64,
    /// The agent asked about, echoed.
    name: String,
    /// Received by the endpoint thread; if it has stopped, the answer is lost
    /// (the agent's request times out).
    commands: std_mpsc::Sender<Command>,
    /// Wakes the endpoint thread's poll once the reply is queued.
    waker: Waker,
    /// Set by `send`; otherwise `Drop` answers "not found".
    answered: bool,
}

impl std::fmt::Debug for ResolveReply {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ResolveReply")
            .field("name", &self.name)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl ResolveReply {
    /// Sends the answer to the agent that asked.
    pub fn answer(mut self, resolution: Resolution) {
        self.send(resolution);
    }

    /// Queues the reply on the endpoint thread (the socket's owner) and
    /// marks it answered, so `Drop` does not answer a second time.
    fn send(&mut self, resolution: Resolution) {
        self.answered = true;
        let found = resolution.endpoint.is_some() || resolution.state != AgentState::Unknown;
        let reply = Reply {
            name: Some(self.name.clone()),
            found: Some(found),
            endpoint: resolution.endpoint,
            state: Some(resolution.state),
            ..Reply::new(ReplyKind::Resolved, self.seq)
        };
        let _ = self.commands.send(Command::Send {
            identity: std::mem::take(&mut self.identity),
            delimited: self.delimited,
            reply,
        });
        self.waker.wake();
    }
}

impl Drop for ResolveReply {
    fn drop(&mut self) {
        if !self.answered {
            self.send(Resolution::not_found());
        }
    }
}

/// Instructions for the endpoint thread.
enum Command {
    Send {
        identity: Vec<u8>,
        delimited: bool,
        reply: Reply,
    },
    Stop,
}

/// Counters, readable at any time through [`EndpointHandle::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Messages read from the socket, good or bad.
    pub received: u64,
    /// Authenticated HEARTBEAT messages.
    pub heartbeats: u64,
    /// Authenticated READY messages.
    pub readies: u64,
    /// Authenticated ERROR messages.
    pub errors: u64,
    /// Authenticated RESOLVE messages.
    pub resolves: u64,
    /// Messages under a name that is not registered (never started, or
    /// its process has exited).
    pub rejected_unknown_agent: u64,
    /// Messages whose token is not the agent's current one (e.g. from an
    /// older process of a restarted agent).
    pub rejected_bad_token: u64,
    /// Frames [`AgentMessage::decode`]
    /// refused.
    pub rejected_malformed: u64,
    /// Frames over [`MAX_MESSAGE_BYTES`].
    pub rejected_oversized: u64,
    /// Events not delivered because the channel was full or closed.
    pub events_dropped: u64,
    /// HELLO/READY/RESOLVE refused as `busy` because the channel was full.
    pub refused_busy: u64,
    /// Replies that could not be sent (peer gone or its queue full).
    pub replies_failed: u64,
}

/// The live counters behind [`EndpointStats`]: written by the endpoint
/// thread only, read by any [`EndpointHandle`] (relaxed: each is exact, a
/// snapshot is not taken at one instant).
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    heartbeats: AtomicU64,
    readies: AtomicU64,
    errors: AtomicU64,
    resolves: AtomicU64,
    rejected_unknown_agent: AtomicU64,
    rejected_bad_token: AtomicU64,
    rejected_malformed: AtomicU64,
    rejected_oversized: AtomicU64,
    events_dropped: AtomicU64,
    refused_busy: AtomicU64,
    replies_failed: AtomicU64,
}

/// Adds one to a counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// The current values as plain numbers.
    fn snapshot(&self) -> EndpointStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EndpointStats {
            received: read(&self.received),
            heartbeats: read(&self.heartbeats),
            readies: read(&self.readies),
            errors: read(&self.errors),
            resolves: read(&self.resolves),
            rejected_unknown_agent: read(&self.rejected_unknown_agent),
            rejected_bad_token: read(&self.rejected_bad_token),
            rejected_malformed: read(&self.rejected_malformed),
            rejected_oversized: read(&self.rejected_oversized),
            events_dropped: read(&self.events_dropped),
            refused_busy: read(&self.refused_busy),
            replies_failed: read(&self.replies_failed),
        }
    }
}

/// A cloneable way to reach the endpoint thread.
#[derive(Debug, Clone)]
pub struct EndpointHandle {
    /// Received by the endpoint thread; sends fail once it has stopped.
    commands: std_mpsc::Sender<Command>,
    /// Wakes the thread's poll after every command.
    waker: Waker,
    /// Written by the endpoint thread only.
    counters: Arc<Counters>,
    endpoint: String,
    /// Who may speak: read by the endpoint thread for every message.
    table: AgentTable,
}

impl EndpointHandle {
    /// The endpoint agents connect to (the real port for `tcp://…:*`); pass
    /// it to agents as `SUPERVISOR_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Accepts messages from `agent` carrying `token` (replacing any earlier
    /// token). Takes effect for every message read after this call returns.
    /// The supervisor registers its runs through [`EndpointHandle::table`].
    pub fn register(&self, agent: &str, token: &str) {
        self.table.allow(agent, token);
    }

    /// Refuses `agent` from now on.
    pub fn unregister(&self, agent: &str) {
        self.table.revoke(agent, None);
    }

    /// The table of agents the endpoint checks every message against.
    pub fn table(&self) -> &AgentTable {
        &self.table
    }

    /// The counters so far.
    pub fn stats(&self) -> EndpointStats {
        self.counters.snapshot()
    }

    /// Stops the thread (it closes the socket); join its `JoinHandle` to wait.
    pub fn stop(&self) {
        self.command(Command::Stop);
    }

    fn command(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            self.waker.wake();
        }
    }
}

/// The endpoint thread's state.
pub struct AgentEndpoint {
    /// The socket agents connect to; owned by this thread alone.
    router: zmq::Socket,
    /// The address really bound (the port filled in for `tcp://...:*`).
    endpoint: String,
    /// Frames larger than this are refused as oversized.
    max_message_bytes: usize,
    /// Who may speak (shared with the handles and the supervisor).
    table: AgentTable,
    /// The supervisor (or a test) holds the receiver; when it is dropped,
    /// events are counted as dropped and the thread carries on.
    events: mpsc::Sender<EndpointEvent>,
    /// The error bus thread holds the receiver; `None` in setups without a bus.
    errors: Option<ErrorSink>,
    /// Senders live in [`EndpointHandle`]s and [`ResolveReply`]s; when all are
    /// gone the thread stops.
    commands: std_mpsc::Receiver<Command>,
    /// Kept to hand to [`ResolveReply`]s.
    command_sender: std_mpsc::Sender<Command>,
    /// Cloned into [`ResolveReply`]s, which wake the thread to send.
    waker: Waker,
    /// Polled beside the ROUTER; readable when a command was queued.
    wake_receiver: WakeReceiver,
    /// Shared with every [`EndpointHandle`], which reads them.
    counters: Arc<Counters>,
    /// Set when a Stop was applied in the middle of a batch.
    stopping: bool,
    /// Heartbeat events of the current round, not yet sent.
    heartbeats: Vec<EndpointEvent>,
}

impl AgentEndpoint {
    /// Binds the ROUTER and starts the endpoint thread. Bind errors are
    /// returned here, not from the thread.
    pub fn spawn(
        config: &EndpointConfig,
        events: mpsc::Sender<EndpointEvent>,
        errors: Option<ErrorSink>,
    ) -> Result<(EndpointHandle, JoinHandle<()>), TransportError> {
        let mut router = context()
            .socket(zmq::ROUTER)
            .map_err(|error| TransportError::zmq("create ROUTER", &config.bind, error))?;
        // One connection per agent, small messages: small buffers.
        if !small_batches(&mut router) {
            tracing::debug!("libzmq without draft options: default I/O buffers");
        }
        let setup = |action, result: zmq::Result<()>| {
            result.map_err(|error| TransportError::zmq(action, &config.bind, error))
        };
        setup("set LINGER", router.set_linger(0))?;
        setup("set ROUTER_MANDATORY", router.set_router_mandatory(true))?;
        // Beyond the soft limit we still read (to count and reject); beyond
        // this hard limit libzmq drops the connection to protect memory.
        let hard_limit =
            i64::try_from(config.max_message_bytes.saturating_mul(16)).unwrap_or(i64::MAX);
        setup("set MAXMSGSIZE", router.set_maxmsgsize(hard_limit))?;
        setup("set RCVHWM", router.set_rcvhwm(100_000))?;
        setup("bind", router.bind(&config.bind))?;
        let endpoint = bound_endpoint(&router, &config.bind);
        let (waker, wake_receiver) = wake::pair().map_err(|source| TransportError::Io {
            what: "endpoint wake pipe",
            source,
        })?;
        let (command_sender, commands) = std_mpsc::channel();
        let counters = Arc::new(Counters::default());
        let table = AgentTable::default();
        let handle = EndpointHandle {
            commands: command_sender.clone(),
            waker: waker.clone(),
            counters: counters.clone(),
            endpoint: endpoint.clone(),
            table: table.clone(),
        };
        let endpoint_thread = AgentEndpoint {
            router,
            endpoint,
            max_message_bytes: config.max_message_bytes,
            table,
            events,
            errors,
            commands,
            command_sender,
            waker,
            wake_receiver,
            counters,
            stopping: false,
            heartbeats: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("agent-endpoint".into())
            .spawn(move || endpoint_thread.run())
            .map_err(|source| TransportError::Io {
                what: "spawn the agent endpoint thread",
                source,
            })?;
        Ok((handle, thread))
    }

    /// The endpoint thread's body: one `zmq::poll` over the ROUTER and the
    /// wake pipe, without a timeout (nothing here is timed); commands
    /// (queued replies, stop) are drained before every message. Who may
    /// speak is read from the [`AgentTable`] for each message, so a
    /// registration applies to every message read after it. Messages are
    /// read in batches of
    /// `BATCH`, and the heartbeats of a batch are delivered together.
    /// Returns on `Stop`, when every handle is gone, or when poll fails.
    fn run(mut self) {
        tracing::debug!(endpoint = %self.endpoint, "agent endpoint listening");
        loop {
            if self.stopping || !self.drain_commands() {
                break;
            }
            let (router_readable, wake_readable) = {
                let mut items = [
                    self.router.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(self.wake_receiver.fd(), zmq::POLLIN),
                ];
                if let Err(error) = zmq::poll(&mut items, -1) {
                    if error == zmq::Error::EINTR {
                        continue;
                    }
                    tracing::error!(endpoint = %self.endpoint, %error, "agent endpoint poll failed");
                    break;
                }
                (items[0].is_readable(), items[1].is_readable())
            };
            if wake_readable {
                // Clear before draining, so a command queued meanwhile wakes us again.
                self.wake_receiver.clear();
                if !self.drain_commands() {
                    break;
                }
            }
            if router_readable {
                let received = self.counters.received.load(Ordering::Relaxed);
                let heartbeats = self.counters.heartbeats.load(Ordering::Relaxed);
                for _ in 0..BATCH {
                    // Queued replies go out, and a stop applies, between messages.
                    self.stopping |= !self.drain_commands();
                    if self.stopping {
                        break;
                    }
                    match self.router.recv_multipart(zmq::DONTWAIT) {
                        Ok(frames) => self.handle(frames),
                        Err(zmq::Error::EAGAIN) => break,
                        Err(error) => {
                            tracing::warn!(endpoint = %self.endpoint, %error, "agent endpoint receive failed");
                            break;
                        }
                    }
                }
                self.flush_heartbeats();
                // Heartbeats come in bursts (the SDKs beat on the same
                // wall-clock tick): after a round of nothing but heartbeats,
                // let the rest of the burst gather before the next wake-up.
                let received = self.counters.received.load(Ordering::Relaxed) - received;
                let heartbeats = self.counters.heartbeats.load(Ordering::Relaxed) - heartbeats;
                if received > 0 && received == heartbeats {
                    std::thread::sleep(HEARTBEAT_GATHER);
                }
            }
        }
        tracing::debug!(endpoint = %self.endpoint, "agent endpoint stopped");
    }

    /// Applies queued commands; false when the thread must stop.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Send {
                    identity,
                    delimited,
                    reply,
                }) => self.send(&identity, delimited, &reply),
                Ok(Command::Stop) => return false,
                Err(std_mpsc::TryRecvError::Empty) => return true,
                // Unreachable while `command_sender` lives, kept for clarity.
                Err(std_mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// One message as read from the ROUTER: checks the frame layout
    /// (`identity, [empty,] body`; both DEALER and REQ peers are served),
    /// the size, the JSON and then the agent's name and token. Anything
    /// refused is answered with `rejected` and counted, and a
    /// [`EndpointEvent::Rejected`] is emitted; the rest goes to `dispatch`.
    fn handle(&mut self, mut frames: Vec<Vec<u8>>) {
        bump(&self.counters.received);
        // [identity, (empty delimiter), body]
        let (body, delimited) = match frames.len() {
            2 => (frames.pop().unwrap_or_default(), false),
            3 if frames[1].is_empty() => (frames.pop().unwrap_or_default(), true),
            _ => {
                bump(&self.counters.rejected_malformed);
                if let Some(identity) = frames.first() {
                    let delimited = frames.get(1).is_some_and(Vec::is_empty);
                    self.send(
                        identity,
                        delimited,
                        &Reply::rejected(0, "malformed message: wrong frame count"),
                    );
                }
                self.emit_rejection(None, RejectReason::Malformed);
                return;
            }
        };
        let identity = &frames[0];
        if body.len() > self.max_message_bytes {
            bump(&self.counters.rejected_oversized);
            self.send(
                identity,
                delimited,
                &Reply::rejected(0, RejectReason::Oversized.as_str()),
            );
            self.emit_rejection(None, RejectReason::Oversized);
            return;
        }
        let message = match AgentMessage::decode(&body) {
            Ok(message) => message,
            Err(reason) => {
                bump(&self.counters.rejected_malformed);
                self.send(
                    identity,
                    delimited,
                    &Reply::rejected(0, &format!("malformed message: {reason}")),
                );
                self.emit_rejection(None, RejectReason::Malformed);
                return;
            }
        };
        if !matches!(message.kind, MessageKind::Heartbeat) {
            // Whatever this message emits comes after the heartbeats before it.
            self.flush_heartbeats();
        }
        let verdict = match self.table.check(&message.agent, message.token.as_bytes()) {
            TokenCheck::Unknown => Some(RejectReason::UnknownAgent),
            TokenCheck::Wrong => Some(RejectReason::BadToken),
            TokenCheck::Valid => None,
        };
        if let Some(reason) = verdict {
            let counter = match reason {
                RejectReason::UnknownAgent => &self.counters.rejected_unknown_agent,
                _ => &self.counters.rejected_bad_token,
            };
            bump(counter);
            tracing::debug!(agent = %message.agent, reason = reason.as_str(), "agent message rejected");
            self.send(
                identity,
                delimited,
                &Reply::rejected(message.seq, reason.as_str()),
            );
            self.emit_rejection(Some(message.agent), reason);
            return;
        }
        self.dispatch(identity.clone(), delimited, message);
    }

    /// An authenticated message: counts it, turns it into its
    /// [`EndpointEvent`] and answers it. READY, HELLO and RESOLVE need the
    /// event channel to have room (else they are answered `busy`, and the
    /// agent retries). Heartbeats and errors are never refused: when the
    /// channel is full their event is dropped and counted (an error is on
    /// the error bus and in the journal all the same).
    fn dispatch(&mut self, identity: Vec<u8>, delimited: bool, message: AgentMessage) {
        let seq = message.seq;
        match message.kind {
            MessageKind::Heartbeat => {
                bump(&self.counters.heartbeats);
                let event = EndpointEvent::HeartbeatReceived {
                    agent: message.agent,
                    seq,
                    payload: message.payload,
                    received_at: Instant::now(),
                };
                // Sent together at the end of the round (or before the next
                // other event): one wake-up of the consumer for a burst.
                self.heartbeats.push(event);
                if message.ack {
                    self.send(&identity, delimited, &Reply::new(ReplyKind::Ack, seq));
                }
            }
            MessageKind::Error => {
                bump(&self.counters.errors);
                let Some(fields) = message.error else {
                    return; // `decode` guarantees it; nothing to do otherwise.
                };
                let record = ErrorRecord::from_agent(&message.agent, fields);
                if let Some(errors) = &self.errors {
                    // Blocks only while the bus writer catches up: errors are
                    // never dropped, back-pressure reaches the agent's socket.
                    errors.publish(record.clone());
                }
                if self
                    .events
                    .try_send(EndpointEvent::ErrorReported { record })
                    .is_err()
                {
                    bump(&self.counters.events_dropped);
                }
                if message.ack {
                    self.send(&identity, delimited, &Reply::new(ReplyKind::Ack, seq));
                }
            }
            MessageKind::Hello => {
                let event = EndpointEvent::Connected {
                    agent: message.agent,
                    pid: message.pid,
                };
                let reply = self.deliver(event, Reply::new(ReplyKind::Welcome, seq));
                self.send(&identity, delimited, &reply);
            }
            MessageKind::Ready => {
                bump(&self.counters.readies);
                if let Some(endpoint) = message.endpoint.clone() {
                    let advertised = EndpointEvent::Advertised {
                        agent: message.agent.clone(),
                        endpoint,
                    };
                    // If this fails the READY below is refused as busy too,
                    // and the SDK sends both again.
                    if self.events.try_send(advertised).is_err() {
                        bump(&self.counters.events_dropped);
                    }
                }
                let event = EndpointEvent::ReportedReady {
                    agent: message.agent,
                };
                let reply = self.deliver(event, Reply::new(ReplyKind::Ack, seq));
                self.send(&identity, delimited, &reply);
            }
            MessageKind::Resolve => {
                bump(&self.counters.resolves);
                let name = message.name.unwrap_or_default();
                let mut reply = ResolveReply {
                    identity,
                    delimited,
                    seq,
                    name: name.clone(),
                    commands: self.command_sender.clone(),
                    waker: self.waker.clone(),
                    answered: false,
                };
                if self.events.capacity() == 0 {
                    bump(&self.counters.refused_busy);
                    reply.answered = true;
                    self.send(&reply.identity, delimited, &Reply::rejected(seq, "busy"));
                    return;
                }
                let event = EndpointEvent::ResolveRequested {
                    agent: message.agent,
                    name,
                    reply,
                };
                if let Err(error) = self.events.try_send(event) {
                    bump(&self.counters.events_dropped);
                    // Dropping the event answers "not found" through the reply's Drop.
                    drop(error);
                }
            }
        }
    }

    /// Delivers an event that needs an answer; `busy` when it cannot.
    fn deliver(&self, event: EndpointEvent, accepted: Reply) -> Reply {
        match self.events.try_send(event) {
            Ok(()) => accepted,
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&self.counters.refused_busy);
                Reply::rejected(accepted.seq, "busy")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // Nobody listens (tests, shutdown): acknowledge anyway.
                bump(&self.counters.events_dropped);
                accepted
            }
        }
    }

    /// Sends the heartbeats gathered so far, in order.
    fn flush_heartbeats(&mut self) {
        for event in self.heartbeats.drain(..) {
            if self.events.try_send(event).is_err() {
                bump(&self.counters.events_dropped);
            }
        }
    }

    /// Reports a refused message to the supervisor, if the channel has room
    /// (a flood of bad messages must not block the endpoint).
    fn emit_rejection(&mut self, agent: Option<String>, reason: RejectReason) {
        self.flush_heartbeats();
        if self
            .events
            .try_send(EndpointEvent::Rejected { agent, reason })
            .is_err()
        {
            bump(&self.counters.events_dropped);
        }
    }

    /// Sends `reply` to the peer `identity`, with the empty delimiter when
    /// its message had one (REQ peers need it). Never blocks: a peer that
    /// is gone or not reading loses the reply (counted).
    fn send(&self, identity: &[u8], delimited: bool, reply: &Reply) {
        let body = reply.encode();
        let result = if delimited {
            self.router
                .send_multipart([identity, &[][..], &body[..]], zmq::DONTWAIT)
        } else {
            self.router
                .send_multipart([identity, &body[..]], zmq::DONTWAIT)
        };
        if result.is_err() {
            bump(&self.counters.replies_failed);
        }
    }
}
