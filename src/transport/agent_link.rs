//! The agent side of the agent protocol: a thread owning one DEALER socket
//! connected to the supervisor's ROUTER. It says HELLO on start, sends a
//! HEARTBEAT every interval on its own (with the latest payload and the
//! reports of the agent's circuit breakers), sends what
//! the SDK asks, and routes replies back to the waiting caller by `seq`.
//!
//! Owns the DEALER socket, the agent's token and the sequence numbers. Does
//! not own the public agent API (`crate::sdk` wraps this), signal handling or
//! any retry policy beyond the socket's own reconnects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::breaker::Breakers;
use super::messages::{AgentMessage, HeartbeatPayload, MessageKind, Reply, ReplyKind};
use super::wake::{self, WakeReceiver, Waker};
use super::{TransportError, context, millis_i32};

/// Replies nobody collected within this long are forgotten.
const PENDING_LIMIT: Duration = Duration::from_secs(60);

/// How long a stopping link waits for the supervisor to confirm the errors
/// it sent.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// How an agent reaches its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// `SUPERVISOR_ENDPOINT`.
    pub endpoint: String,
    /// `AGENT_NAME`.
    pub agent: String,
    /// `AGENT_TOKEN`.
    pub token: String,
    /// Time between automatic heartbeats.
    pub heartbeat_interval: Duration,
    /// Sent in HELLO, e.g. `rust/0.1.0`.
    pub sdk: String,
}

/// Counters of the link, for the agent's own diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Heartbeats handed to the socket (not necessarily received yet).
    pub heartbeats_sent: u64,
    /// Heartbeats not sent because the socket's queue was full.
    pub heartbeats_skipped: u64,
    /// Other messages (HELLO, READY, ERROR, RESOLVE) handed to the socket.
    pub messages_sent: u64,
    /// Other messages that could not be sent within the send timeout;
    /// each is also logged as a warning.
    pub send_failures: u64,
    /// Rejections nobody was waiting for (e.g. of heartbeats).
    pub rejections: u64,
}

/// The live counters behind [`LinkStats`]: written by the link thread,
/// read by any handle.
#[derive(Debug, Default)]
struct Counters {
    heartbeats_sent: AtomicU64,
    heartbeats_skipped: AtomicU64,
    messages_sent: AtomicU64,
    send_failures: AtomicU64,
    rejections: AtomicU64,
}

/// What a handle asks of the link thread (over a std channel, followed by
/// a byte on the wake pipe so the thread's `poll` returns).
enum Command {
    /// Send `message` (envelope filled in by the thread); the reply, if one
    /// is expected, goes to `reply`.
    Send {
        message: Box<AgentMessage>,
        reply: Option<ReplyTo>,
    },
    /// Attach this payload to every following heartbeat.
    SetPayload(HeartbeatPayload),
    /// Leave the loop; queued commands before it are sent first.
    Stop,
}

/// Where the link thread delivers a reply: the caller waits on the other
/// end; dropping this end (the reply never came) ends that wait.
enum ReplyTo {
    /// A blocked thread ([`AgentLinkHandle::call`]).
    Thread(std_mpsc::Sender<Reply>),
    /// A task ([`AgentLinkHandle::call_async`]).
    #[cfg(feature = "async")]
    Task(tokio::sync::oneshot::Sender<Reply>),
}

impl ReplyTo {
    /// Hands `reply` to the waiting caller, if it still waits.
    fn deliver(self, reply: Reply) {
        // The caller may have given up already; then nobody wants the reply.
        match self {
            ReplyTo::Thread(sender) => {
                let _ = sender.send(reply);
            }
            #[cfg(feature = "async")]
            ReplyTo::Task(sender) => {
                let _ = sender.send(reply);
            }
        }
    }
}

/// A cloneable way to reach the link thread.
#[derive(Debug, Clone)]
pub struct AgentLinkHandle {
    /// Received by the link thread; fails once it has stopped.
    commands: std_mpsc::Sender<Command>,
    /// Wakes the link thread's poll after a command.
    waker: Waker,
    /// Shared with the link thread, read by `stats`.
    counters: Arc<Counters>,
    /// The agent's name, for the errors built from rejections.
    agent: String,
}

impl AgentLinkHandle {
    /// Sends `message` and waits up to `timeout` for its reply. A `rejected`
    /// reply becomes [`TransportError::Rejected`].
    pub fn call(&self, message: AgentMessage, timeout: Duration) -> Result<Reply, TransportError> {
        let (reply_sender, reply) = std_mpsc::channel();
        self.command(Command::Send {
            message: Box::new(message),
            reply: Some(ReplyTo::Thread(reply_sender)),
        })?;
        self.outcome(reply.recv_timeout(timeout).ok(), timeout)
    }

    /// [`AgentLinkHandle::call`] for async code: the link thread hands the
    /// reply to this task through a oneshot channel, so no thread blocks.
    /// Must run inside a Tokio runtime with time enabled.
    #[cfg(feature = "async")]
    pub async fn call_async(
        &self,
        message: AgentMessage,
        timeout: Duration,
    ) -> Result<Reply, TransportError> {
        let (reply_sender, reply) = tokio::sync::oneshot::channel();
        self.command(Command::Send {
            message: Box::new(message),
            reply: Some(ReplyTo::Task(reply_sender)),
        })?;
        let reply = tokio::time::timeout(timeout, reply)
            .await
            .ok()
            .and_then(Result::ok);
        self.outcome(reply, timeout)
    }

    /// The reply as the caller sees it: `None` (none in time, or the link
    /// thread dropped the request) is a timeout, a rejection an error.
    fn outcome(&self, reply: Option<Reply>, timeout: Duration) -> Result<Reply, TransportError> {
        match reply {
            Some(reply) if reply.kind == ReplyKind::Rejected => Err(TransportError::Rejected {
                agent: self.agent.clone(),
                reason: reply.reason.unwrap_or_default(),
            }),
            Some(reply) => Ok(reply),
            None => Err(TransportError::Timeout {
                endpoint: "supervisor".into(),
                attempts: 1,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Sends `message` without waiting for anything.
    pub fn post(&self, message: AgentMessage) -> Result<(), TransportError> {
        self.command(Command::Send {
            message: Box::new(message),
            reply: None,
        })
    }

    /// The payload attached to every following heartbeat.
    pub fn set_payload(&self, payload: HeartbeatPayload) {
        let _ = self.command(Command::SetPayload(payload));
    }

    /// A snapshot of the counters; cheap, callable from any thread.
    pub fn stats(&self) -> LinkStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LinkStats {
            heartbeats_sent: read(&self.counters.heartbeats_sent),
            heartbeats_skipped: read(&self.counters.heartbeats_skipped),
            messages_sent: read(&self.counters.messages_sent),
            send_failures: read(&self.counters.send_failures),
            rejections: read(&self.counters.rejections),
        }
    }

    /// Stops the thread; messages already queued are still sent, and the
    /// errors among them confirmed by the supervisor (waited for up to 2 s).
    pub fn stop(&self) {
        let _ = self.command(Command::Stop);
    }

    /// Queues `command` and wakes the thread; fails only when the thread
    /// has ended.
    fn command(&self, command: Command) -> Result<(), TransportError> {
        self.commands
            .send(command)
            .map_err(|_| TransportError::Stopped { what: "agent link" })?;
        self.waker.wake();
        Ok(())
    }
}

/// The link thread's state.
pub struct AgentLink {
    /// Who this agent is and where the supervisor listens.
    settings: LinkSettings,
    /// The socket to the supervisor's endpoint; owned by this thread alone.
    dealer: zmq::Socket,
    /// Senders live in [`AgentLinkHandle`]s; when all are gone the thread stops.
    commands: std_mpsc::Receiver<Command>,
    /// Polled beside the DEALER; readable when a command was queued.
    wake_receiver: WakeReceiver,
    /// Shared with every handle, which reads them.
    counters: Arc<Counters>,
    /// Sent with every heartbeat from now on (`Agent::progress`).
    payload: Option<HeartbeatPayload>,
    /// Reported in every heartbeat's `payload.breakers` (shared with the
    /// agent's socket pool, which updates them).
    breakers: Option<Breakers>,
    /// The `seq` of the next message; replies are matched by it.
    next_seq: u64,
    /// seq -> who waits for the reply, and since when.
    pending: HashMap<u64, (ReplyTo, Instant)>,
    /// The `seq` of every error sent and not yet confirmed. A stopping link
    /// waits for them: the process-wide ZMQ context is never terminated, so
    /// libzmq's linger does not run, and a message still queued in its I/O
    /// thread when the process exits is lost (a fatal error sent just
    /// before `exit` was, now and then).
    unconfirmed: HashSet<u64>,
}

impl AgentLink {
    /// Connects (libzmq connects in the background and reconnects on its
    /// own) and starts the link thread, which says HELLO at once. Each
    /// heartbeat carries the reports of `breakers`, when given.
    pub fn spawn(
        settings: LinkSettings,
        breakers: Option<Breakers>,
    ) -> Result<(AgentLinkHandle, JoinHandle<()>), TransportError> {
        let endpoint = settings.endpoint.clone();
        let dealer = context()
            .socket(zmq::DEALER)
            .map_err(|error| TransportError::zmq("create DEALER", &endpoint, error))?;
        dealer
            .set_linger(2000)
            .and_then(|()| dealer.set_sndtimeo(5000))
            .and_then(|()| dealer.set_sndhwm(10_000))
            .and_then(|()| dealer.set_reconnect_ivl(100))
            .and_then(|()| dealer.set_reconnect_ivl_max(millis_i32(Duration::from_secs(2))))
            .map_err(|error| TransportError::zmq("set DEALER options", &endpoint, error))?;
        dealer
            .connect(&endpoint)
            .map_err(|error| TransportError::zmq("connect", &endpoint, error))?;
        let (waker, wake_receiver) = wake::pair().map_err(|source| TransportError::Io {
            what: "agent link wake pipe",
            source,
        })?;
        let (commands_sender, commands) = std_mpsc::channel();
        let counters = Arc::new(Counters::default());
        let handle = AgentLinkHandle {
            commands: commands_sender,
            waker,
            counters: counters.clone(),
            agent: settings.agent.clone(),
        };
        let link = AgentLink {
            settings,
            dealer,
            commands,
            wake_receiver,
            counters,
            payload: None,
            breakers,
            next_seq: 1,
            pending: HashMap::new(),
            unconfirmed: HashSet::new(),
        };
        let thread = std::thread::Builder::new()
            .name("agent-link".into())
            .spawn(move || link.run())
            .map_err(|source| TransportError::Io {
                what: "spawn the agent link thread",
                source,
            })?;
        Ok((handle, thread))
    }

    /// The link thread's body: HELLO, then one `zmq::poll` over the DEALER
    /// and the wake pipe whose timeout is the next heartbeat (aligned to
    /// the wall clock, see [`until_next_beat`]). Returns on `Stop` or when
    /// every handle is gone (after the errors sent were confirmed, see
    /// [`AgentLink::flush`]), or when poll fails.
    fn run(mut self) {
        let mut hello = self.envelope(MessageKind::Hello);
        hello.pid = Some(std::process::id());
        hello.sdk = Some(self.settings.sdk.clone());
        self.send(hello, 0);
        // The first heartbeat goes out at once, so a supervisor that starts
        // watching at spawn time sees one immediately.
        let mut next_heartbeat = Instant::now();
        loop {
            if Instant::now() >= next_heartbeat {
                self.heartbeat();
                // Both clocks read together, after the send: with an older
                // monotonic reading the wake-up would land just before the
                // wall-clock tick and a second heartbeat follow at once.
                let (now, wall) = (Instant::now(), unix_time());
                next_heartbeat = now + until_next_beat(self.settings.heartbeat_interval, wall);
            }
            let wait = next_heartbeat.saturating_duration_since(Instant::now());
            let (dealer_readable, wake_readable) = {
                let mut items = [
                    self.dealer.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(self.wake_receiver.fd(), zmq::POLLIN),
                ];
                match zmq::poll(
                    &mut items,
                    i64::try_from(wait.as_millis()).unwrap_or(i64::MAX).max(1),
                ) {
                    Ok(_) => {}
                    Err(zmq::Error::EINTR) => continue,
                    Err(error) => {
                        tracing::error!(%error, "agent link poll failed");
                        return;
                    }
                }
                (items[0].is_readable(), items[1].is_readable())
            };
            if dealer_readable {
                self.receive_replies();
            }
            if wake_readable {
                self.wake_receiver.clear();
                if !self.drain_commands() {
                    self.flush();
                    return;
                }
            }
        }
    }

    /// Carries out every queued command in order, numbering messages and
    /// remembering who waits for which reply. False when the thread should
    /// end (`Stop`, or every handle dropped).
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Send { mut message, reply }) => {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    if let Some(reply) = reply {
                        self.pending.insert(seq, (reply, Instant::now()));
                    }
                    if message.kind == MessageKind::Error {
                        message.ack = true;
                        self.unconfirmed.insert(seq);
                    }
                    self.send(*message, seq);
                }
                Ok(Command::SetPayload(payload)) => self.payload = Some(payload),
                Ok(Command::Stop) | Err(std_mpsc::TryRecvError::Disconnected) => return false,
                Err(std_mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    /// Waits, up to [`FLUSH_LIMIT`], until the supervisor has confirmed
    /// (acknowledged or rejected) every error sent, reading replies.
    fn flush(&mut self) {
        let deadline = Instant::now() + FLUSH_LIMIT;
        while !self.unconfirmed.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    agent = %self.settings.agent,
                    errors = self.unconfirmed.len(),
                    "stopping with errors the supervisor has not confirmed"
                );
                return;
            }
            let mut items = [self.dealer.as_poll_item(zmq::POLLIN)];
            match zmq::poll(&mut items, i64::from(millis_i32(left)).max(1)) {
                Ok(_) if items[0].is_readable() => self.receive_replies(),
                Ok(_) | Err(zmq::Error::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// A message of `kind` from this agent, with its token.
    fn envelope(&self, kind: MessageKind) -> AgentMessage {
        AgentMessage::new(kind, &self.settings.agent, &self.settings.token, 0)
    }

    /// Sends one heartbeat with the latest payload, without waiting (a late
    /// heartbeat is worthless), and forgets callers that waited too long
    /// for a reply.
    fn heartbeat(&mut self) {
        let mut message = self.envelope(MessageKind::Heartbeat);
        message.seq = self.next_seq;
        self.next_seq += 1;
        message.payload = self.payload.clone();
        let reports = self
            .breakers
            .as_ref()
            .map(Breakers::reports)
            .unwrap_or_default();
        if !reports.is_empty() {
            message
                .payload
                .get_or_insert_with(HeartbeatPayload::default)
                .breakers = reports;
        }
        let body = message.encode();
        // A heartbeat that cannot go now is worthless later: never wait.
        match self
            .dealer
            .send_multipart([&[][..], &body[..]], zmq::DONTWAIT)
        {
            Ok(()) => bump(&self.counters.heartbeats_sent),
            Err(_) => bump(&self.counters.heartbeats_skipped),
        }
        let now = Instant::now();
        self.pending
            .retain(|_, (_, since)| now.saturating_duration_since(*since) < PENDING_LIMIT);
    }

    /// Sends a non-heartbeat message, waiting up to the send timeout: READY
    /// and errors must not be dropped silently (a failure is counted and
    /// logged).
    fn send(&mut self, mut message: AgentMessage, seq: u64) {
        message.v = super::messages::PROTOCOL_VERSION;
        message.agent.clone_from(&self.settings.agent);
        message.token.clone_from(&self.settings.token);
        message.seq = seq;
        let body = message.encode();
        // Blocking up to SNDTIMEO: errors and READY must not be dropped silently.
        match self.dealer.send_multipart([&[][..], &body[..]], 0) {
            Ok(()) => bump(&self.counters.messages_sent),
            Err(error) => {
                bump(&self.counters.send_failures);
                tracing::warn!(endpoint = %self.settings.endpoint, %error, kind = ?message.kind, "cannot send to the supervisor");
            }
        }
    }

    /// Reads every reply available now and hands each to the caller waiting
    /// for its `seq`; a rejection nobody waits for (a heartbeat's) is
    /// counted and logged.
    fn receive_replies(&mut self) {
        while let Ok(mut frames) = self.dealer.recv_multipart(zmq::DONTWAIT) {
            let body = frames.pop().unwrap_or_default();
            let reply = match Reply::decode(&body) {
                Ok(reply) => reply,
                Err(reason) => {
                    tracing::warn!(%reason, "unreadable reply from the supervisor");
                    continue;
                }
            };
            self.unconfirmed.remove(&reply.seq);
            match self.pending.remove(&reply.seq) {
                Some((waiter, _)) => waiter.deliver(reply),
                None if reply.kind == ReplyKind::Rejected => {
                    bump(&self.counters.rejections);
                    tracing::warn!(agent = %self.settings.agent, reason = ?reply.reason, "the supervisor rejected a message");
                }
                None => {}
            }
        }
    }
}

/// Adds one to a counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Time since the Unix epoch by the wall clock (zero if it is set before 1970).
fn unix_time() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// How long until the next heartbeat: the next whole multiple of `interval`
/// on the wall clock, so every agent with the same interval beats at the
/// same moment and the supervisor takes them in one wake-up instead of one
/// per agent (see docs/protocol.md, Heartbeats). Never more than `interval`.
fn until_next_beat(interval: Duration, since_epoch: Duration) -> Duration {
    let interval_nanos = interval.as_nanos().max(1);
    let into_period = since_epoch.as_nanos() % interval_nanos;
    let left = interval_nanos - into_period;
    Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::until_next_beat;
    use std::time::Duration;

    #[test]
    fn heartbeats_fall_on_whole_multiples_of_the_interval() {
        let second = Duration::from_secs(1);
        let at = |millis: u64| Duration::from_millis(millis);
        assert_eq!(until_next_beat(second, at(1_700_000_000_250)), at(750));
        assert_eq!(until_next_beat(second, at(1_700_000_000_999)), at(1));
        // Exactly on a beat: the next one is a whole interval away.
        assert_eq!(until_next_beat(second, at(1_700_000_000_000)), second);
        let odd = Duration::from_millis(300);
        assert_eq!(until_next_beat(odd, at(1_000)), at(200));
        assert_eq!(
            until_next_beat(Duration::ZERO, at(5)),
            Duration::from_nanos(1)
        );
    }
}
