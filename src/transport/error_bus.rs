//! The error bus: one thread receives every structured error (from the agent
//! endpoint, from the supervisor itself, and from legacy `ERROR:` publishers
//! on a configured port), appends it to `<run-dir>/errors.jsonl`, logs it
//! through tracing, counts it per agent and severity, and re-publishes it on
//! a PUB socket with topic `<severity>.<agent>` (so `supervisor errors
//! --follow` subscribes to `fatal.` or `error.api` and filters in libzmq).
//!
//! Loss: producers hand records over a bounded channel with a blocking send,
//! so a slow disk slows producers (and, through the endpoint, the agents'
//! sockets) instead of dropping; every wait is counted. The PUB side follows
//! ZeroMQ semantics: a subscriber that falls behind its high-water mark loses
//! messages, never the journal.
//!
//! Floods: each agent has a token bucket ([`RateLimit`], default 100
//! records a second with bursts of 1,000). A record beyond it is counted,
//! not journaled, logged or published; while an agent is being limited, a
//! summary record (`kind: rate_limited`, "api: 249,100 errors suppressed in
//! 10 s") is journaled and logged every [`SUMMARY_INTERVAL`]. The journal is
//! rotated by size like the agent logs ([`crate::files::RotatingFile`]), so
//! one agent can neither fill the disk nor the console. The supervisor's own
//! records are never limited.
//!
//! Owns the journal file, the PUB and legacy SUB sockets, the counts and the
//! per-agent limits.
//! Does not own policy (`on_error`, error-rate rules: the supervisor, fed by
//! [`super::EndpointEvent::ErrorReported`]) nor the agent endpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::messages::{ErrorRecord, ErrorSource, Severity, parse_legacy_error};
use super::wake::{self, WakeReceiver, Waker};
use super::{TransportError, bound_endpoint, context};
use crate::files::{LogTarget, RotatingFile};

/// The one rate-limit bucket of every legacy (unauthenticated) record.
const LEGACY_BUCKET: &str = "(legacy port)";

/// Records queued between producers and the bus thread. The channel's slots
/// are allocated (and touched) up front, so each holds a boxed record: 8,192
/// slots cost about 200 KB of resident memory, where 65,536 unboxed ones
/// cost 10 MB. A full queue makes producers wait, it never drops.
const CHANNEL_CAPACITY: usize = 8_192;

/// Journal lines gathered before one append (whole lines only, so a
/// rotation never splits one).
const JOURNAL_BUFFER: usize = 256 * 1024;

/// How often a suppression summary is written while an agent is limited.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Per-agent token bucket: `per_second` records a second on average,
/// `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Records per second refilled into the bucket (default 100).
    pub per_second: f64,
    /// Bucket size: records accepted at once after a quiet spell
    /// (default 1000).
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            per_second: 100.0,
            burst: 1000.0,
        }
    }
}

/// One agent's bucket and what it has suppressed since the last summary.
#[derive(Debug)]
struct Bucket {
    /// Records it may still accept now, at most `burst`.
    tokens: f64,
    /// When `tokens` was last topped up.
    refilled: Instant,
    /// Records refused since the last summary.
    suppressed: u64,
    /// When the first record of the current summary window was suppressed.
    since: Option<Instant>,
}

impl Bucket {
    /// A full bucket.
    fn new(limit: &RateLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: limit.burst,
            refilled: now,
            suppressed: 0,
            since: None,
        }
    }

    /// Takes a token; false (and counted) when there is none.
    fn admit(&mut self, limit: &RateLimit, now: Instant) -> bool {
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        self.suppressed += 1;
        self.since.get_or_insert(now);
        false
    }
}

/// `249100` as `249,100`.
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// Where the bus writes, publishes and listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBusConfig {
    /// The JSON-lines journal, appended to (created if missing).
    pub journal: PathBuf,
    /// PUB endpoint for followers; `None` disables re-publishing.
    pub publish: Option<String>,
    /// Endpoint the legacy SUB socket binds (legacy agents connect their PUB
    /// to it), e.g. `tcp://0.0.0.0:7150`; `None` disables legacy intake.
    pub legacy: Option<String>,
    /// Each agent's allowance; the supervisor's own records are not limited.
    pub limit: RateLimit,
}

impl ErrorBusConfig {
    /// `<run_dir>/errors.jsonl`, published on `ipc://<run_dir>/errors.sock`,
    /// no legacy port.
    ///
    /// ```
    /// use supervisor::transport::ErrorBusConfig;
    /// let config = ErrorBusConfig::in_run_dir(std::path::Path::new("/run/sv"));
    /// assert_eq!(config.journal, std::path::Path::new("/run/sv/errors.jsonl"));
    /// assert_eq!(config.publish.as_deref(), Some("ipc:///run/sv/errors.sock"));
    /// ```
    pub fn in_run_dir(run_dir: &Path) -> ErrorBusConfig {
        ErrorBusConfig {
            journal: run_dir.join("errors.jsonl"),
            publish: Some(format!("ipc://{}", run_dir.join("errors.sock").display())),
            legacy: None,
            limit: RateLimit::default(),
        }
    }
}

/// Counters, readable at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorBusStats {
    /// Records handed to the bus (all sources).
    pub received: u64,
    /// Records appended to the journal.
    pub written: u64,
    /// Records sent on the PUB socket.
    pub published: u64,
    /// Legacy `ERROR:` messages read and normalised into a record.
    pub legacy_accepted: u64,
    /// Legacy messages refused as unreadable (none of the four shapes).
    pub legacy_rejected: u64,
    /// Times a producer had to wait for room in the channel.
    pub backpressure_waits: u64,
    /// Records lost because the bus thread had stopped.
    pub lost: u64,
    /// Records over an agent's rate limit (counted, not journaled).
    pub suppressed: u64,
    /// Records not in the journal: unserialisable, or the append failed
    /// (disk full, file removed); logged once per failing spell.
    pub write_failures: u64,
}

/// The live counters behind [`ErrorBusStats`]: written by the bus thread
/// and producers, read by any handle.
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    written: AtomicU64,
    published: AtomicU64,
    legacy_accepted: AtomicU64,
    legacy_rejected: AtomicU64,
    backpressure_waits: AtomicU64,
    lost: AtomicU64,
    suppressed: AtomicU64,
    write_failures: AtomicU64,
}

/// Adds one to a counter.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Per agent, per severity counts.
pub type ErrorCounts = BTreeMap<String, BTreeMap<Severity, u64>>;

/// What producers and handles ask of the bus thread, in order.
enum Command {
    /// Rate-limit, journal, log and publish this record.
    Record(Box<ErrorRecord>),
    /// Replies once everything queued before it is written and flushed.
    Flush(std_mpsc::Sender<()>),
    /// Replies with the per-agent, per-severity counts so far.
    Counts(std_mpsc::Sender<ErrorCounts>),
    /// Hand every record written from now on to this receiver, too.
    Subscribe(std_mpsc::Sender<ErrorRecord>),
    /// Write what is queued, summarise, flush, and end the thread.
    Stop,
}

/// Where producers put records. Cheap to clone; one per producer thread.
#[derive(Debug, Clone)]
pub struct ErrorSink {
    /// Received by the bus thread; once it has stopped, records are counted
    /// as lost.
    commands: std_mpsc::SyncSender<Command>,
    /// Wakes the bus thread's poll after a send.
    waker: Waker,
    /// Shared with the bus thread (`backpressure_waits`, `lost` are
    /// counted here).
    counters: Arc<Counters>,
}

impl ErrorSink {
    /// Hands one record to the bus, waiting for room if the bus is behind.
    /// Returns false (and counts it lost) only when the bus has stopped.
    pub fn publish(&self, record: ErrorRecord) -> bool {
        let delivered = match self.commands.try_send(Command::Record(Box::new(record))) {
            Ok(()) => true,
            Err(std_mpsc::TrySendError::Full(command)) => {
                bump(&self.counters.backpressure_waits);
                // Make sure the thread is draining, then wait for room.
                self.waker.wake();
                self.commands.send(command).is_ok()
            }
            Err(std_mpsc::TrySendError::Disconnected(_)) => false,
        };
        if delivered {
            self.waker.wake();
        } else {
            bump(&self.counters.lost);
        }
        delivered
    }
}

/// A cloneable way to reach the error bus thread.
#[derive(Debug, Clone)]
pub struct ErrorBusHandle {
    /// The handle's own way in, also handed out by `sink()`.
    sink: ErrorSink,
    /// The PUB address really bound, if publishing is on.
    publish_endpoint: Option<String>,
    /// The legacy SUB address really bound, if legacy intake is on.
    legacy_endpoint: Option<String>,
}

impl ErrorBusHandle {
    /// A sink for producers (the agent endpoint, the supervisor).
    pub fn sink(&self) -> ErrorSink {
        self.sink.clone()
    }

    /// Where followers subscribe (the real port for `tcp://…:*`).
    pub fn publish_endpoint(&self) -> Option<&str> {
        self.publish_endpoint.as_deref()
    }

    /// Where legacy publishers connect (the real port for `tcp://…:*`).
    pub fn legacy_endpoint(&self) -> Option<&str> {
        self.legacy_endpoint.as_deref()
    }

    /// A snapshot of the counters (relaxed reads: each is exact, the set
    /// is not taken at one instant).
    pub fn stats(&self) -> ErrorBusStats {
        let counters = &self.sink.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ErrorBusStats {
            received: read(&counters.received),
            written: read(&counters.written),
            published: read(&counters.published),
            legacy_accepted: read(&counters.legacy_accepted),
            legacy_rejected: read(&counters.legacy_rejected),
            backpressure_waits: read(&counters.backpressure_waits),
            lost: read(&counters.lost),
            suppressed: read(&counters.suppressed),
            write_failures: read(&counters.write_failures),
        }
    }

    /// Waits until every record handed over before this call is in the
    /// journal (flushed to the OS). False on timeout or if the bus stopped.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (reply, answer) = std_mpsc::channel();
        if self.sink.commands.send(Command::Flush(reply)).is_err() {
            return false;
        }
        self.sink.waker.wake();
        answer.recv_timeout(timeout).is_ok()
    }

    /// Counts per agent and severity so far; `None` if the bus stopped or
    /// did not answer within `timeout`.
    pub fn counts(&self, timeout: Duration) -> Option<ErrorCounts> {
        let (reply, answer) = std_mpsc::channel();
        self.sink.commands.send(Command::Counts(reply)).ok()?;
        self.sink.waker.wake();
        answer.recv_timeout(timeout).ok()
    }

    /// Every record written from now on, in order, for a follower in this
    /// process. Unlike a SUB socket on the publish endpoint, which misses
    /// what is published before its subscription has reached the bus, it
    /// gets every record a producer hands over after this call returns.
    /// The channel ends when the bus thread does.
    pub fn subscribe(&self) -> std_mpsc::Receiver<ErrorRecord> {
        let (sender, receiver) = std_mpsc::channel();
        if self.sink.commands.send(Command::Subscribe(sender)).is_ok() {
            self.sink.waker.wake();
        }
        receiver
    }

    /// Stops the thread after it has written what was queued before.
    pub fn stop(&self) {
        if self.sink.commands.send(Command::Stop).is_ok() {
            self.sink.waker.wake();
        }
    }
}

/// The error bus thread's state.
pub struct ErrorBus {
    /// `errors.jsonl`, rotated by size like the agent logs.
    journal: RotatingFile,
    /// Whole lines not yet appended to the journal, and how many records
    /// they are (counted `written` or `write_failures` when flushed).
    pending: Vec<u8>,
    /// How many records `pending` holds.
    pending_records: u64,
    /// The last append failed (its error was logged; the next success is).
    journal_failing: bool,
    /// PUB: every accepted record with topic `<severity>.<agent>`; `None`
    /// when publishing is off.
    publisher: Option<zmq::Socket>,
    /// In-process followers ([`ErrorBusHandle::subscribe`]); dropped once
    /// their receiver is gone.
    subscribers: Vec<std_mpsc::Sender<ErrorRecord>>,
    /// The bound SUB that legacy agents' PUB sockets connect to; `None`
    /// when legacy intake is off.
    legacy: Option<zmq::Socket>,
    /// Senders live in [`ErrorSink`]s and [`ErrorBusHandle`]s; when every one
    /// is dropped the thread stops.
    commands: std_mpsc::Receiver<Command>,
    /// Polled beside the legacy socket; readable when a command was queued.
    wake_receiver: WakeReceiver,
    /// Shared with sinks and handles.
    counters: Arc<Counters>,
    /// Records by agent and severity since the start
    /// ([`ErrorBusHandle::counts`]).
    counts: ErrorCounts,
    /// Reused buffer for one record's JSON line.
    line: Vec<u8>,
    /// Every agent's rate limit.
    limit: RateLimit,
    /// Each agent's token bucket (legacy senders share one).
    buckets: BTreeMap<String, Bucket>,
}

impl ErrorBus {
    /// Opens the journal, binds the sockets and starts the bus thread.
    pub fn spawn(
        config: &ErrorBusConfig,
    ) -> Result<(ErrorBusHandle, JoinHandle<()>), TransportError> {
        let journal =
            RotatingFile::open(LogTarget::new(config.journal.clone())).map_err(|source| {
                TransportError::File {
                    path: config.journal.clone(),
                    source,
                }
            })?;
        let mut publish_endpoint = None;
        let publisher = match &config.publish {
            Some(endpoint) => {
                let socket = context()
                    .socket(zmq::PUB)
                    .map_err(|error| TransportError::zmq("create PUB", endpoint, error))?;
                socket
                    .set_linger(0)
                    .and_then(|()| socket.set_sndhwm(100_000))
                    .and_then(|()| socket.bind(endpoint))
                    .map_err(|error| TransportError::zmq("bind PUB", endpoint, error))?;
                publish_endpoint = Some(bound_endpoint(&socket, endpoint));
                Some(socket)
            }
            None => None,
        };
        let mut legacy_endpoint = None;
        let legacy = match &config.legacy {
            Some(endpoint) => {
                let socket = context()
                    .socket(zmq::SUB)
                    .map_err(|error| TransportError::zmq("create SUB", endpoint, error))?;
                socket
                    .set_linger(0)
                    .and_then(|()| socket.set_rcvhwm(100_000))
                    .and_then(|()| socket.set_subscribe(b"ERROR"))
                    .and_then(|()| socket.bind(endpoint))
                    .map_err(|error| TransportError::zmq("bind legacy SUB", endpoint, error))?;
                legacy_endpoint = Some(bound_endpoint(&socket, endpoint));
                Some(socket)
            }
            None => None,
        };
        let (waker, wake_receiver) = wake::pair().map_err(|source| TransportError::Io {
            what: "error bus wake pipe",
            source,
        })?;
        let (command_sender, commands) = std_mpsc::sync_channel(CHANNEL_CAPACITY);
        let counters = Arc::new(Counters::default());
        let bus = ErrorBus {
            journal,
            pending: Vec::with_capacity(JOURNAL_BUFFER),
            pending_records: 0,
            journal_failing: false,
            publisher,
            subscribers: Vec::new(),
            legacy,
            commands,
            wake_receiver,
            counters: counters.clone(),
            counts: ErrorCounts::new(),
            line: Vec::with_capacity(1024),
            limit: config.limit,
            buckets: BTreeMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("error-bus".into())
            .spawn(move || bus.run())
            .map_err(|source| TransportError::Io {
                what: "spawn the error bus thread",
                source,
            })?;
        Ok((
            ErrorBusHandle {
                sink: ErrorSink {
                    commands: command_sender,
                    waker,
                    counters,
                },
                publish_endpoint,
                legacy_endpoint,
            },
            thread,
        ))
    }

    /// The bus thread's body: one `zmq::poll` over the wake pipe and the
    /// legacy SUB socket, with the next suppression summary as its timeout.
    /// The journal is appended once per round (batched lines), and once
    /// more with every pending summary on the way out.
    fn run(mut self) {
        loop {
            let (legacy_readable, wake_readable) = {
                let mut items = Vec::with_capacity(2);
                items.push(zmq::PollItem::from_fd(self.wake_receiver.fd(), zmq::POLLIN));
                if let Some(legacy) = &self.legacy {
                    items.push(legacy.as_poll_item(zmq::POLLIN));
                }
                match zmq::poll(&mut items, self.next_summary_in()) {
                    Ok(_) => {}
                    Err(zmq::Error::EINTR) => continue,
                    Err(error) => {
                        tracing::error!(%error, "error bus poll failed");
                        break;
                    }
                }
                (
                    items.get(1).is_some_and(|item| item.is_readable()),
                    items[0].is_readable(),
                )
            };
            if legacy_readable {
                self.drain_legacy();
            }
            if wake_readable {
                self.wake_receiver.clear();
                if !self.drain_commands() {
                    break;
                }
            }
            self.summarize(Instant::now(), false);
            self.flush_journal();
        }
        self.summarize(Instant::now(), true);
        self.flush_journal();
    }

    /// Milliseconds until the next suppression summary is due, -1 for none.
    fn next_summary_in(&self) -> i64 {
        let now = Instant::now();
        self.buckets
            .values()
            .filter_map(|bucket| bucket.since)
            .map(|since| (since + SUMMARY_INTERVAL).saturating_duration_since(now))
            .min()
            .map(|wait| wait.as_millis() as i64 + 1)
            .unwrap_or(-1)
    }

    /// Journals and logs one summary per agent whose window has run out
    /// (every window with `all`, at the end).
    fn summarize(&mut self, now: Instant, all: bool) {
        let mut due = Vec::new();
        for (agent, bucket) in &mut self.buckets {
            if let Some(since) = bucket.since
                && (all || now.duration_since(since) >= SUMMARY_INTERVAL)
            {
                due.push((agent.clone(), bucket.suppressed, now.duration_since(since)));
                bucket.suppressed = 0;
                bucket.since = None;
            }
        }
        for (agent, suppressed, within) in due {
            let message = format!(
                "{agent}: {} errors suppressed in {} s (limit {}/s, bursts of {})",
                thousands(suppressed),
                within.as_secs_f64().round().max(1.0),
                self.limit.per_second,
                self.limit.burst
            );
            let mut context = serde_json::Map::new();
            context.insert(
                "suppressed".to_string(),
                serde_json::Value::from(suppressed),
            );
            self.write(ErrorRecord {
                timestamp: super::messages::now_rfc3339(),
                agent,
                severity: Severity::Warning,
                kind: "rate_limited".into(),
                message,
                context,
                correlation_id: None,
                source: ErrorSource::Supervisor,
            });
        }
    }

    /// Handles everything queued; false when the thread must stop.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Record(record)) => self.accept(*record),
                Ok(Command::Flush(reply)) => {
                    self.flush_journal();
                    let _ = reply.send(());
                }
                Ok(Command::Counts(reply)) => {
                    let _ = reply.send(self.counts.clone());
                }
                Ok(Command::Subscribe(subscriber)) => self.subscribers.push(subscriber),
                Ok(Command::Stop) => {
                    // Write what producers queued before the stop.
                    while let Ok(Command::Record(record)) = self.commands.try_recv() {
                        self.accept(*record);
                    }
                    return false;
                }
                Err(std_mpsc::TryRecvError::Empty) => return true,
                Err(std_mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Reads up to 1,024 legacy messages (then lets commands have a turn),
    /// normalising each into a record; unreadable ones are counted.
    fn drain_legacy(&mut self) {
        for _ in 0..1024 {
            let Some(legacy) = &self.legacy else { return };
            match legacy.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => match parse_legacy_error(&frames) {
                    Ok(record) => {
                        bump(&self.counters.legacy_accepted);
                        self.accept(record);
                    }
                    Err(reason) => {
                        bump(&self.counters.legacy_rejected);
                        tracing::debug!(%reason, "legacy error message refused");
                    }
                },
                Err(zmq::Error::EAGAIN) => return,
                Err(error) => {
                    tracing::warn!(%error, "legacy error bus receive failed");
                    return;
                }
            }
        }
    }

    /// Counts a record and passes it through its agent's rate limit
    /// (legacy senders share one bucket; the supervisor's own records are
    /// never limited).
    fn accept(&mut self, record: ErrorRecord) {
        bump(&self.counters.received);
        *self
            .counts
            .entry(record.agent.clone())
            .or_default()
            .entry(record.severity)
            .or_default() += 1;
        if record.source != ErrorSource::Supervisor {
            let now = Instant::now();
            let limit = self.limit;
            // A legacy message names its agent itself (unauthenticated): all
            // of them share one bucket, so new names buy no fresh burst.
            let key = match record.source {
                ErrorSource::Legacy => LEGACY_BUCKET,
                _ => record.agent.as_str(),
            };
            let bucket = match self.buckets.get_mut(key) {
                Some(bucket) => bucket,
                None => self
                    .buckets
                    .entry(key.to_string())
                    .or_insert_with(|| Bucket::new(&limit, now)),
            };
            if !bucket.admit(&limit, now) {
                bump(&self.counters.suppressed);
                return;
            }
        }
        self.write(record);
    }

    /// Journals, logs and publishes one record.
    fn write(&mut self, mut record: ErrorRecord) {
        // Secrets an agent put in its error context go no further than here.
        crate::transport::redact::redact_map(&mut record.context);
        let record = &record;
        log(record);
        self.line.clear();
        if serde_json::to_writer(&mut self.line, record).is_err() {
            bump(&self.counters.write_failures);
            return;
        }
        self.line.push(b'\n');
        self.pending.extend_from_slice(&self.line);
        self.pending_records += 1;
        if self.pending.len() >= JOURNAL_BUFFER {
            self.flush_journal();
        }
        self.subscribers
            .retain(|subscriber| subscriber.send(record.clone()).is_ok());
        if let Some(publisher) = &self.publisher {
            let topic = record.topic();
            let body = &self.line[..self.line.len() - 1];
            if publisher
                .send_multipart([topic.as_bytes(), body], zmq::DONTWAIT)
                .is_ok()
            {
                bump(&self.counters.published);
            }
        }
    }

    /// Appends the lines gathered this round to `errors.jsonl` in one
    /// write (rotating first when it would grow past its limit). A failure
    /// is counted per record and logged once until writing works again.
    fn flush_journal(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.pending_records);
        match self.journal.append([&self.pending]) {
            Ok(()) => {
                self.counters.written.fetch_add(records, Ordering::Relaxed);
                if self.journal_failing {
                    self.journal_failing = false;
                    tracing::info!(path = %self.journal.path().display(), "the error journal is written again");
                }
            }
            Err(error) => {
                self.counters
                    .write_failures
                    .fetch_add(records, Ordering::Relaxed);
                if !self.journal_failing {
                    self.journal_failing = true;
                    tracing::error!(path = %self.journal.path().display(), %error, "cannot append to the error journal; records are counted as write failures until it can be");
                }
            }
        }
        self.pending.clear();
    }
}

fn log(record: &ErrorRecord) {
    let (agent, kind, message) = (&record.agent, &record.kind, &record.message);
    match record.severity {
        Severity::Debug => tracing::debug!(%agent, %kind, "agent error: {message}"),
        Severity::Info => tracing::info!(%agent, %kind, "agent error: {message}"),
        Severity::Warning => tracing::warn!(%agent, %kind, "agent error: {message}"),
        Severity::Error | Severity::Critical | Severity::Fatal => {
            tracing::error!(%agent, %kind, severity = %record.severity, "agent error: {message}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(agent: &str, severity: Severity, message: &str) -> ErrorRecord {
        ErrorRecord {
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            agent: agent.into(),
            severity,
            kind: "test".into(),
            message: message.into(),
            context: Default::default(),
            correlation_id: None,
            source: ErrorSource::Supervisor,
        }
    }

    #[test]
    fn a_flooding_agent_is_limited_and_the_suppressed_are_summarized() {
        let dir = tempfile::tempdir().unwrap();
        let config = ErrorBusConfig {
            journal: dir.path().join("errors.jsonl"),
            publish: None,
            legacy: None,
            limit: RateLimit {
                per_second: 0.001,
                burst: 10.0,
            },
        };
        let (handle, thread) = ErrorBus::spawn(&config).unwrap();
        let sink = handle.sink();
        for index in 0..2_000 {
            sink.publish(ErrorRecord {
                source: ErrorSource::Sdk,
                ..record("api", Severity::Error, &format!("m{index}"))
            });
        }
        for index in 0..5 {
            sink.publish(ErrorRecord {
                source: ErrorSource::Legacy,
                ..record("calm", Severity::Error, &format!("c{index}"))
            });
        }
        assert!(handle.flush(Duration::from_secs(10)));
        assert_eq!(handle.stats().suppressed, 1_990);
        handle.stop();
        thread.join().unwrap();
        let text = std::fs::read_to_string(&config.journal).unwrap();
        let lines: Vec<ErrorRecord> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.iter().filter(|line| line.agent == "calm").count(), 5);
        let summary = lines
            .iter()
            .find(|line| line.kind == "rate_limited")
            .expect("a summary at the end");
        assert!(
            summary
                .message
                .starts_with("api: 1,990 errors suppressed in"),
            "{}",
            summary.message
        );
        assert_eq!(lines.len(), 10 + 5 + 1);
        assert_eq!(thousands(249_100), "249,100");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn records_are_journaled_in_order_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let config = ErrorBusConfig {
            journal: dir.path().join("errors.jsonl"),
            publish: None,
            legacy: None,
            limit: RateLimit::default(),
        };
        let (handle, thread) = ErrorBus::spawn(&config).unwrap();
        let follower = handle.subscribe();
        let sink = handle.sink();
        for index in 0..100 {
            assert!(sink.publish(record("a", Severity::Warning, &format!("m{index}"))));
        }
        sink.publish(record("b", Severity::Fatal, "boom"));
        assert!(handle.flush(Duration::from_secs(10)), "flush timed out");
        let text = std::fs::read_to_string(&config.journal).unwrap();
        let lines: Vec<ErrorRecord> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 101);
        for (index, line) in lines.iter().take(100).enumerate() {
            assert_eq!(line.message, format!("m{index}"));
        }
        let counts = handle.counts(Duration::from_secs(10)).unwrap();
        assert_eq!(counts["a"][&Severity::Warning], 100);
        assert_eq!(counts["b"][&Severity::Fatal], 1);
        assert_eq!(handle.stats().written, 101);
        handle.stop();
        thread.join().unwrap();
        assert!(!sink.publish(record("a", Severity::Info, "late")));
        assert_eq!(handle.stats().lost, 1);
        // The in-process follower got every record, in order, then the end.
        let followed: Vec<String> = follower.iter().map(|record| record.message).collect();
        assert_eq!(followed.len(), 101);
        assert_eq!(followed[0], "m0");
        assert_eq!(followed[100], "boom");
    }
}
