//! The peer link between the supervisors of the hosts of one system: each
//! supervisor stays the only owner of its own host's agents; over the link
//! they share state and forward commands (see docs/two-hosts.md).
//!
//! Owns: the link protocol ([`Message`]: beats with clock and
//! acknowledgement, numbered events), the outbox per peer (bounded by
//! [`BUFFER_BOUND`], oldest dropped and counted, resent until acknowledged,
//! so a partition loses nothing below the bound and a heal delivers no
//! duplicate), the view of each peer ([`PeerView`]: link up or down, last
//! seen, clock offset, its agents' states), and feeding remote readiness into
//! the local supervisor ([`crate::supervisor::SupervisorHandle::report_remote`]),
//! and carrying `logs` reads between hosts (`logs`).
//!
//! Does not own: sockets, encryption or authentication
//! (`crate::transport::peer`), keys on disk (`keys`), agent state (the
//! supervisor; this module only reads its status and reports what peers say).

pub mod keys;
pub mod logs;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::supervisor::{AgentState, RemoteRun, StatusSnapshot, SupervisorHandle};
use crate::transport::messages::ErrorSource;
use crate::transport::peer::{self, PeerAddress, PeerConfig, PeerEvent, PeerHandle, PeerKeys};
use crate::transport::{ErrorBusHandle, ErrorRecord, ErrorSink};
use logs::{LogPage, LogQuery, LogReader};

/// Events kept per peer until it acknowledges them; past this the oldest
/// are dropped (and counted in [`PeerView::dropped`]).
pub const BUFFER_BOUND: usize = 10_000;
/// How often each side sends a beat (clock, acknowledgement).
pub const BEAT_INTERVAL: Duration = Duration::from_millis(250);
/// A peer not heard from for this long is unreachable.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// An unacknowledged event is sent again after this long.
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// One link message (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Sent every [`BEAT_INTERVAL`]: who is sending, its run (a new epoch
    /// after a restart), its clock, and the last event of ours it received
    /// in our epoch `ack_epoch`.
    Beat {
        host: String,
        epoch: u64,
        time_ms: u64,
        ack_epoch: u64,
        ack: u64,
    },
    /// One event, numbered from 1 within the pair of runs: the sender's
    /// `epoch` and the receiver's epoch `to` as the sender knew it when it
    /// numbered the event. The receiver applies an event only when both are
    /// the current runs and `seq` is the next number, so a renumbering after
    /// either side restarted can never be taken for events already applied.
    Event {
        epoch: u64,
        to: u64,
        seq: u64,
        event: LinkEvent,
    },
}

/// What one host tells another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LinkEvent {
    /// One of the sender's agents changed state. `run` is its spawn
    /// generation on the sender: the receiver ignores a report about an
    /// older run than one it applied (`crate::supervisor::RemoteRun`).
    State {
        agent: String,
        state: String,
        ready: bool,
        pid: Option<u32>,
        reason: Option<String>,
        #[serde(default)]
        run: u64,
        /// For an instance (`worker-2`) of an agent with `replicas`: that
        /// agent (`worker`), so the peer routes a command naming it here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replica_of: Option<String>,
    },
    /// An operator command for the receiver's own agents (routed here
    /// because the receiver owns them); answered with [`LinkEvent::Reply`].
    Command {
        id: u64,
        verb: Verb,
        agents: Vec<String>,
        with_dependents: bool,
    },
    /// The outcome of a [`LinkEvent::Command`]: the agents affected, or why not.
    Reply {
        id: u64,
        result: Result<Vec<String>, String>,
    },
    /// The sender restarted these agents with their dependents: the
    /// receiver marks them not ready (unless it already heard of a newer
    /// run), then restarts its own agents that depend on them. `runs` are
    /// the runs that were restarted, one per agent.
    RestartedWithDependents {
        agents: Vec<String>,
        #[serde(default)]
        runs: Vec<u64>,
    },
    /// A record of the sender's error bus.
    Error { record: Box<ErrorRecord> },
    /// `logs` of the receiver's agents; answered with
    /// [`LinkEvent::LogsAnswered`].
    LogsAsked { id: u64, query: LogQuery },
    /// The lines a [`LinkEvent::LogsAsked`] asked for, or why not.
    LogsAnswered {
        id: u64,
        result: Result<LogPage, String>,
    },
}

/// What a routed command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    Start,
    Stop,
    Restart,
    /// Stop everything and end (`down --all-hosts`).
    Down,
}

/// A request from the control socket to a peer.
pub struct LinkRequest {
    pub peer: String,
    pub verb: Verb,
    pub agents: Vec<String>,
    pub with_dependents: bool,
    /// Not a command: tell the peer that `agents` (ours) were restarted
    /// with their dependents ([`LinkEvent::RestartedWithDependents`]);
    /// answered at once.
    pub notify: bool,
    /// With `notify`: the run of each of `agents` that was restarted.
    pub runs: Vec<u64>,
    /// Answered with the peer's reply (or an error when it cannot be sent).
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<String>, String>>,
}

/// A `logs` read of a peer's agents, from the control socket.
pub struct LogsRequest {
    pub peer: String,
    pub query: LogQuery,
    /// Answered with the peer's page, or why there is none.
    pub reply: tokio::sync::oneshot::Sender<Result<LogPage, String>>,
}

/// What the control socket asks of the link task.
enum Asked {
    Command(LinkRequest),
    Logs(LogsRequest),
}

/// What the link tells its own supervisor about the peers' agents, in the
/// order the peers said it ([`forward_reports`]).
#[derive(Debug)]
enum Report {
    /// A peer's agent is (or is no longer) ready, in its run `run`.
    Remote {
        agent: String,
        ready: bool,
        run: RemoteRun,
    },
    /// Restart these agents of ours with their dependents (a peer restarted
    /// agents they depend on).
    RestartDependents { agents: Vec<String> },
}

/// Whether a local agent in `state` is reported ready to the peers (the
/// `ready` of [`LinkEvent::State`], which their gating follows). An `idle`
/// agent is: it was stopped on purpose and starts again on demand, so a
/// peer's dependents must not wait for it, be blocked by it, or have it
/// probed and failed (the state string still says `idle`, which the peer's
/// `status` shows).
fn available(state: AgentState) -> bool {
    matches!(state, AgentState::Ready | AgentState::Idle)
}

/// Hands the link's reports to the supervisor one after the other, waiting
/// for room in its queue (nothing is dropped; a restart of dependents is
/// applied after the not-ready reports sent before it). Ends when the link
/// drops its sender.
async fn forward_reports(
    supervisor: SupervisorHandle,
    mut reports: mpsc::UnboundedReceiver<Report>,
) {
    while let Some(report) = reports.recv().await {
        match report {
            Report::Remote { agent, ready, run } => {
                supervisor.report_remote(agent, ready, run).await;
            }
            Report::RestartDependents { agents } => {
                if let Err(error) = supervisor.restart(agents, true).await {
                    tracing::warn!(%error, "restarting the dependents of a peer's agents");
                }
            }
        }
    }
}

/// A routed command's outcome, for the peer that sent it: `(peer, id, result)`.
type Outcome = (String, u64, Result<Vec<String>, String>);

/// A log read's answer, for the peer that asked: `(peer, id, result)`.
type LogsOutcome = (String, u64, Result<LogPage, String>);

/// How long a `logs` read waits for the other host's answer.
pub const LOGS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a routed command waits for the owning host's answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a peer is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Never heard from since this supervisor started.
    Waiting,
    Up,
    /// Heard from before, silent for [`PEER_TIMEOUT`].
    Unreachable,
}

/// One agent of a peer, as it reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteAgent {
    pub state: String,
    pub ready: bool,
    pub pid: Option<u32>,
    pub reason: Option<String>,
    /// The agent with `replicas` it is an instance of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
}

/// What this side knows of one peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub host: String,
    pub endpoint: String,
    pub link: LinkState,
    /// Unix milliseconds of the last message from it.
    pub last_seen_ms: Option<u64>,
    /// Its clock minus ours, in milliseconds (one-way delay included).
    pub clock_offset_ms: Option<i64>,
    /// Events waiting for its acknowledgement.
    pub buffered: usize,
    /// Events dropped because the buffer was full.
    pub dropped: u64,
    pub agents: BTreeMap<String, RemoteAgent>,
}

/// Every peer's view plus the link's own counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkSnapshot {
    pub host: String,
    pub bound: String,
    pub peers: Vec<PeerView>,
    /// Connections refused: unknown or wrong key, no CURVE.
    pub refused: u64,
}

/// How to run the link.
#[derive(Clone)]
pub struct LinkConfig {
    /// This host's name (as in `hosts:`).
    pub host: String,
    /// `tcp://ADDRESS:PORT` to listen on.
    pub bind: String,
    pub keys: PeerKeys,
    pub peers: Vec<PeerAddress>,
    /// This host's agents and their dependencies (names as this host's
    /// supervisor knows them), to find the dependents of a peer's agent.
    pub dependencies: BTreeMap<String, Vec<String>>,
    /// Reads this host's agent logs for peers' `logs`; `None` answers them
    /// with an error.
    pub logs: Option<LogReader>,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LinkConfig")
            .field("host", &self.host)
            .field("bind", &self.bind)
            .field("peers", &self.peers)
            .field("dependencies", &self.dependencies)
            .field("logs", &self.logs.is_some())
            .finish_non_exhaustive()
    }
}

/// Unix milliseconds now.
fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Events for one peer that it has not acknowledged yet.
#[derive(Debug, Default)]
struct Outbox {
    /// `(seq, event, last sent)`, oldest first.
    waiting: VecDeque<(u64, LinkEvent, Option<Instant>)>,
    dropped: u64,
    /// The number of the next event.
    next_seq: u64,
}

impl Outbox {
    fn push(&mut self, event: LinkEvent) {
        if self.waiting.len() >= BUFFER_BOUND {
            self.waiting.pop_front();
            self.dropped += 1;
        }
        self.next_seq = self.next_seq.max(1);
        self.waiting.push_back((self.next_seq, event, None));
        self.next_seq += 1;
    }

    fn acknowledge(&mut self, upto: u64) {
        while self.waiting.front().is_some_and(|(seq, ..)| *seq <= upto) {
            self.waiting.pop_front();
        }
    }

    /// A new run of the peer knows none of our numbers: what it has not
    /// acknowledged is numbered again from 1 (states left out: a fresh copy
    /// of every state follows).
    fn renumber(&mut self) {
        let events: Vec<LinkEvent> = self
            .waiting
            .drain(..)
            .map(|(_, event, _)| event)
            .filter(|event| !matches!(event, LinkEvent::State { .. }))
            .collect();
        self.next_seq = 1;
        for event in events {
            self.push(event);
        }
    }

    /// The events due, as `(seq, event)`: never sent, or sent more than
    /// [`RESEND_AFTER`] ago (all of them when `all`: the peer just came back).
    fn due(&mut self, now: Instant, all: bool) -> Vec<(u64, LinkEvent)> {
        let mut due = Vec::new();
        for (seq, event, sent) in &mut self.waiting {
            if all || sent.is_none_or(|sent| now.duration_since(sent) >= RESEND_AFTER) {
                *sent = Some(now);
                due.push((*seq, event.clone()));
            }
        }
        due
    }
}

/// The link's state for one peer.
struct Peer {
    view: PeerView,
    outbox: Outbox,
    /// The peer's epoch and the last of its events applied here.
    their_epoch: u64,
    received_upto: u64,
    last_heard: Option<Instant>,
}

impl Peer {
    /// Events go out only while the peer is up and its run is known (the
    /// numbering belongs to that run).
    fn sendable(&self) -> bool {
        self.view.link == LinkState::Up && self.their_epoch != 0
    }
}

/// The running link: a tokio task plus the socket thread.
pub struct Link {
    /// This host's name.
    host: String,
    /// Identifies this run of the supervisor (its start time in µs).
    epoch: u64,
    peers: BTreeMap<String, Peer>,
    /// This host's agents -> their dependencies.
    dependencies: BTreeMap<String, Vec<String>>,
    /// Routed commands waiting for a peer's reply, by id.
    waiting: BTreeMap<u64, tokio::sync::oneshot::Sender<Result<Vec<String>, String>>>,
    /// Log reads waiting for a peer's page, by id (numbered with commands).
    waiting_logs: BTreeMap<u64, tokio::sync::oneshot::Sender<Result<LogPage, String>>>,
    /// Reads this host's logs for peers.
    logs: Option<LogReader>,
    /// Log reads peers asked for, not yet started: `(peer, id, query)`.
    logs_asked: Vec<(String, u64, LogQuery)>,
    next_command: u64,
    sockets: PeerHandle,
    /// What the local agents were last reported as: `(state, ready, run)`.
    reported: BTreeMap<String, (String, bool, u64)>,
    /// Reports for this host's supervisor, read by [`forward_reports`]
    /// (which ends when this is dropped).
    reports: mpsc::UnboundedSender<Report>,
    /// Their pids as last reported.
    pids: BTreeMap<String, Option<u32>>,
    /// The local instances of agents with `replicas`: instance -> agent.
    replica_of: BTreeMap<String, String>,
    /// Published after each change; read by `status`.
    snapshot: watch::Sender<LinkSnapshot>,
}

/// Cloneable view of a running link.
#[derive(Clone)]
pub struct LinkHandle {
    /// Updated by the link task; closed when it ends.
    pub snapshot: watch::Receiver<LinkSnapshot>,
    /// Read by the link task; sends fail once it has ended.
    requests: mpsc::Sender<Asked>,
}

impl LinkHandle {
    /// The peer that reported an agent called `name` (or `HOST/NAME`).
    pub fn owner_of(&self, name: &str) -> Option<String> {
        let snapshot = self.snapshot.borrow();
        snapshot.peers.iter().find_map(|peer| {
            let plain = name
                .strip_prefix(&format!("{}/", peer.host))
                .unwrap_or(name);
            let instance = || {
                peer.agents
                    .values()
                    .any(|agent| agent.replica_of.as_deref() == Some(plain))
            };
            (peer.agents.contains_key(plain) || instance()).then(|| peer.host.clone())
        })
    }

    /// The peers, by name.
    pub fn peers(&self) -> Vec<String> {
        self.snapshot
            .borrow()
            .peers
            .iter()
            .map(|peer| peer.host.clone())
            .collect()
    }

    /// Sends a command to `peer` and waits (at most [`COMMAND_TIMEOUT`])
    /// for its answer. Agent names are the peer's own (no `HOST/` prefix).
    pub async fn forward(
        &self,
        peer: &str,
        verb: Verb,
        agents: Vec<String>,
        with_dependents: bool,
    ) -> Result<Vec<String>, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = LinkRequest {
            peer: peer.to_string(),
            verb,
            agents: agents
                .into_iter()
                .map(|name| {
                    name.strip_prefix(&format!("{peer}/"))
                        .map(str::to_string)
                        .unwrap_or(name)
                })
                .collect(),
            with_dependents,
            notify: false,
            runs: Vec::new(),
            reply,
        };
        self.requests
            .send(Asked::Command(request))
            .await
            .map_err(|_| "the peer link has ended".to_string())?;
        match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the peer link has ended".into()),
            Err(_) => Err(format!(
                "host `{peer}` did not answer within {}s (the command stays queued until the link is back)",
                COMMAND_TIMEOUT.as_secs()
            )),
        }
    }

    /// Tells every peer that these local agents were restarted with their
    /// dependents (`runs`: the run of each that was restarted), so they
    /// restart theirs.
    pub async fn restarted_with_dependents(&self, agents: Vec<String>, runs: Vec<u64>) {
        for peer in self.peers() {
            let (reply, _answer) = tokio::sync::oneshot::channel();
            let _ = self
                .requests
                .send(Asked::Command(LinkRequest {
                    peer,
                    verb: Verb::Restart,
                    agents: agents.clone(),
                    with_dependents: true,
                    notify: true,
                    runs: runs.clone(),
                    reply,
                }))
                .await;
        }
    }

    /// Reads `peer`'s agent logs (at most [`LOGS_TIMEOUT`]); refused at
    /// once while the peer is not reachable (a read is not worth keeping
    /// for after a partition).
    pub async fn logs(&self, peer: &str, query: LogQuery) -> Result<LogPage, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send(Asked::Logs(LogsRequest {
                peer: peer.to_string(),
                query,
                reply,
            }))
            .await
            .map_err(|_| "the peer link has ended".to_string())?;
        match tokio::time::timeout(LOGS_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the peer link has ended".into()),
            Err(_) => Err(format!(
                "host `{peer}` did not answer within {}s",
                LOGS_TIMEOUT.as_secs()
            )),
        }
    }
}

/// This host's error bus as the link uses it.
pub struct LocalErrors {
    /// Where errors of the peers' agents go (journal, `errors -f`).
    pub sink: ErrorSink,
    /// This host's own errors, to forward; subscribed before any agent
    /// runs ([`ErrorBusHandle::subscribe`]), so none is missed.
    pub records: std::sync::mpsc::Receiver<ErrorRecord>,
}

impl LocalErrors {
    /// Subscribes to `bus` now.
    pub fn of(bus: &ErrorBusHandle) -> LocalErrors {
        LocalErrors {
            sink: bus.sink(),
            records: bus.subscribe(),
        }
    }
}

impl Link {
    /// Binds and connects (the socket thread), then runs the link task until
    /// `cancel`: local status changes go to every peer, peers' reports come
    /// back into `supervisor`.
    pub fn start(
        config: LinkConfig,
        supervisor: SupervisorHandle,
        errors: Option<LocalErrors>,
        cancel: CancellationToken,
    ) -> Result<(LinkHandle, tokio::task::JoinHandle<()>), crate::transport::TransportError> {
        let (events_sender, events) = mpsc::unbounded_channel();
        let (sockets, thread) = peer::start(
            PeerConfig {
                bind: config.bind.clone(),
                keys: config.keys.clone(),
                peers: config.peers.clone(),
            },
            events_sender,
        )?;
        let peers = config
            .peers
            .iter()
            .map(|address| {
                (
                    address.name.clone(),
                    Peer {
                        view: PeerView {
                            host: address.name.clone(),
                            endpoint: address.endpoint.clone(),
                            link: LinkState::Waiting,
                            last_seen_ms: None,
                            clock_offset_ms: None,
                            buffered: 0,
                            dropped: 0,
                            agents: BTreeMap::new(),
                        },
                        outbox: Outbox::default(),
                        their_epoch: 0,
                        received_upto: 0,
                        last_heard: None,
                    },
                )
            })
            .collect();
        let (requests, request_receiver) = mpsc::channel(64);
        let (reports, report_receiver) = mpsc::unbounded_channel();
        tokio::spawn(forward_reports(supervisor.clone(), report_receiver));
        let (snapshot, snapshot_receiver) = watch::channel(LinkSnapshot {
            host: config.host.clone(),
            bound: sockets.bound.clone(),
            ..LinkSnapshot::default()
        });
        let link = Link {
            host: config.host,
            epoch: unix_ms(SystemTime::now()).saturating_mul(1000)
                + u64::from(std::process::id() % 1000),
            peers,
            dependencies: config.dependencies,
            waiting: BTreeMap::new(),
            waiting_logs: BTreeMap::new(),
            logs: config.logs,
            logs_asked: Vec::new(),
            next_command: 1,
            sockets,
            reported: BTreeMap::new(),
            reports,
            pids: BTreeMap::new(),
            replica_of: BTreeMap::new(),
            snapshot,
        };
        tracing::info!(bound = %link.sockets.bound, "peer link listening");
        // This host's errors, passed on by a thread.
        let (sink, follower) = match errors {
            Some(LocalErrors { sink, records }) => (Some(sink), Some(records)),
            None => (None, None),
        };
        let (errors_sender, errors) = mpsc::unbounded_channel();
        {
            let cancel = cancel.clone();
            std::thread::Builder::new()
                .name("peer-link-errors".into())
                .spawn(move || {
                    let Some(follower) = follower else { return };
                    while !cancel.is_cancelled() {
                        match follower.recv_timeout(Duration::from_millis(200)) {
                            Ok(record) if record.source != ErrorSource::Peer => {
                                if errors_sender.send(record).is_err() {
                                    return;
                                }
                            }
                            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                })
                .map_err(|source| crate::transport::TransportError::File {
                    path: "peer link error thread".into(),
                    source,
                })?;
        }
        let task = tokio::spawn(async move {
            link.run(supervisor, events, request_receiver, errors, sink, cancel)
                .await;
            // The thread ends once told to; it never blocks on anything else.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        });
        Ok((
            LinkHandle {
                snapshot: snapshot_receiver,
                requests,
            },
            task,
        ))
    }

    async fn run(
        mut self,
        supervisor: SupervisorHandle,
        mut events: mpsc::UnboundedReceiver<PeerEvent>,
        mut requests: mpsc::Receiver<Asked>,
        mut errors: mpsc::UnboundedReceiver<ErrorRecord>,
        sink: Option<ErrorSink>,
        cancel: CancellationToken,
    ) {
        let mut status = supervisor.subscribe();
        let mut beat = tokio::time::interval(BEAT_INTERVAL);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Outcomes of commands that peers routed here: (peer, id, result).
        let (done, mut outcomes) = mpsc::unbounded_channel();
        // Log pages read here for peers: (peer, id, result).
        let (logs_done, mut logs_outcomes) = mpsc::unbounded_channel::<LogsOutcome>();
        let current = status.borrow_and_update().clone();
        self.on_status(&current);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let current = status.borrow_and_update().clone();
                    self.on_status(&current);
                }
                event = events.recv() => match event {
                    Some(PeerEvent::Received { peer, payload }) => {
                        self.on_message(&peer, &payload, &supervisor, &done, sink.as_ref());
                        self.serve_logs(&logs_done);
                    }
                    Some(PeerEvent::Refused { .. }) => {}
                    None => break,
                },
                Some(request) = requests.recv() => match request {
                    Asked::Command(request) => self.on_request(request),
                    Asked::Logs(request) => self.on_logs_request(request),
                },
                Some(record) = errors.recv() => {
                    self.queue(LinkEvent::Error { record: Box::new(record) });
                }
                Some((peer, id, result)) = outcomes.recv() => {
                    self.queue_to(&peer, LinkEvent::Reply { id, result });
                }
                Some((peer, id, result)) = logs_outcomes.recv() => {
                    self.queue_to(&peer, LinkEvent::LogsAnswered { id, result });
                }
                _ = beat.tick() => self.on_beat(),
            }
            self.publish();
        }
        // The last states (stopping, stopped) reach the peers that are up.
        let current = status.borrow().clone();
        self.on_status(&current);
        self.sockets.stop();
    }

    /// A command from the control socket for a peer's agents.
    fn on_request(&mut self, request: LinkRequest) {
        if !self.peers.contains_key(&request.peer) {
            let _ = request
                .reply
                .send(Err(format!("no peer host `{}`", request.peer)));
            return;
        }
        if request.notify {
            self.queue_to(
                &request.peer,
                LinkEvent::RestartedWithDependents {
                    agents: request.agents,
                    runs: request.runs,
                },
            );
            let _ = request.reply.send(Ok(Vec::new()));
            return;
        }
        let id = self.next_id();
        self.waiting.insert(id, request.reply);
        self.queue_to(
            &request.peer,
            LinkEvent::Command {
                id,
                verb: request.verb,
                agents: request.agents,
                with_dependents: request.with_dependents,
            },
        );
    }

    /// The number of the next command or log read sent to a peer (their
    /// answers come back by it).
    fn next_id(&mut self) -> u64 {
        let id = self.next_command;
        self.next_command += 1;
        id
    }

    /// A `logs` read for a peer's agents: sent now, or refused while the
    /// peer cannot be reached.
    fn on_logs_request(&mut self, request: LogsRequest) {
        let Some(peer) = self.peers.get(&request.peer) else {
            let _ = request
                .reply
                .send(Err(format!("no peer host `{}`", request.peer)));
            return;
        };
        if peer.view.link != LinkState::Up {
            let state = match peer.view.link {
                LinkState::Waiting => "not connected yet",
                _ => "unreachable",
            };
            let _ = request
                .reply
                .send(Err(format!("host `{}` is {state}", request.peer)));
            return;
        }
        let id = self.next_id();
        self.waiting_logs.insert(id, request.reply);
        self.queue_to(
            &request.peer,
            LinkEvent::LogsAsked {
                id,
                query: request.query,
            },
        );
    }

    /// Reads the logs peers asked for, each on a blocking thread; the pages
    /// come back through `done`.
    fn serve_logs(&mut self, done: &mpsc::UnboundedSender<LogsOutcome>) {
        for (peer, id, query) in std::mem::take(&mut self.logs_asked) {
            let done = done.clone();
            match self.logs.clone() {
                Some(reader) => {
                    tokio::task::spawn_blocking(move || {
                        let _ = done.send((peer, id, reader(&query)));
                    });
                }
                None => {
                    let _ = done.send((
                        peer,
                        id,
                        Err(format!("host `{}` serves no logs", self.host)),
                    ));
                }
            }
        }
    }

    /// Queues a state event for every local agent whose state changed.
    fn on_status(&mut self, status: &StatusSnapshot) {
        for agent in status.agents.iter().filter(|agent| !agent.remote) {
            let ready = available(agent.state);
            let state = agent.state.to_string();
            let now = (state.clone(), ready, agent.run);
            if self.reported.get(&agent.name) == Some(&now)
                && self.pids.get(&agent.name) == Some(&agent.pid)
            {
                continue;
            }
            self.reported.insert(agent.name.clone(), now);
            self.pids.insert(agent.name.clone(), agent.pid);
            let replica_of = agent.replica.as_ref().map(|(of, _)| of.clone());
            if let Some(of) = &replica_of {
                self.replica_of.insert(agent.name.clone(), of.clone());
            }
            self.queue(LinkEvent::State {
                agent: agent.name.clone(),
                state,
                ready,
                pid: agent.pid,
                reason: agent.reason.clone(),
                run: agent.run,
                replica_of,
            });
        }
    }

    /// Puts `event` in every peer's outbox and sends it to the peers that
    /// are up.
    fn queue(&mut self, event: LinkEvent) {
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for name in names {
            self.queue_to(&name, event.clone());
        }
    }

    /// Numbers `event` for `peer`, keeps it until acknowledged, and sends it
    /// now if the peer is up.
    fn queue_to(&mut self, peer: &str, event: LinkEvent) {
        let Some(target) = self.peers.get_mut(peer) else {
            return;
        };
        target.outbox.push(event);
        if target.sendable() {
            let due = target.outbox.due(Instant::now(), false);
            let to = target.their_epoch;
            self.send_events(peer, to, due);
        }
    }

    /// Sends numbered events of our epoch to `peer`, whose run is `to`.
    fn send_events(&self, peer: &str, to: u64, events: Vec<(u64, LinkEvent)>) {
        for (seq, event) in events {
            let payload = serde_json::to_vec(&Message::Event {
                epoch: self.epoch,
                to,
                seq,
                event,
            })
            .expect("link messages serialize");
            self.sockets.send(peer, payload);
        }
    }

    fn on_beat(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        let time_ms = unix_ms(SystemTime::now());
        for (name, peer) in &mut self.peers {
            if peer.view.link == LinkState::Up
                && peer
                    .last_heard
                    .is_some_and(|heard| now.duration_since(heard) > PEER_TIMEOUT)
            {
                peer.view.link = LinkState::Unreachable;
                tracing::warn!(peer = %name, "peer link: host unreachable; its agents keep their last known state");
            }
            let beat = Message::Beat {
                host: self.host.clone(),
                epoch: self.epoch,
                time_ms,
                ack_epoch: peer.their_epoch,
                ack: peer.received_upto,
            };
            self.sockets.send(
                name,
                serde_json::to_vec(&beat).expect("link messages serialize"),
            );
            if peer.sendable() {
                due.push((name.clone(), peer.their_epoch, peer.outbox.due(now, false)));
            }
        }
        for (name, to, events) in due {
            self.send_events(&name, to, events);
        }
    }

    fn on_message(
        &mut self,
        from: &str,
        payload: &[u8],
        supervisor: &SupervisorHandle,
        done: &mpsc::UnboundedSender<Outcome>,
        sink: Option<&ErrorSink>,
    ) {
        let Some(peer) = self.peers.get_mut(from) else {
            return;
        };
        let message: Message = match serde_json::from_slice(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(peer = %from, %error, "peer link: unreadable message ignored");
                return;
            }
        };
        let now = Instant::now();
        let wall = SystemTime::now();
        peer.last_heard = Some(now);
        peer.view.last_seen_ms = Some(unix_ms(wall));
        let came_back = peer.view.link != LinkState::Up;
        if came_back {
            peer.view.link = LinkState::Up;
            tracing::info!(peer = %from, "peer link: connected");
        }
        match message {
            Message::Beat {
                epoch,
                time_ms,
                ack_epoch,
                ack,
                ..
            } => {
                peer.view.clock_offset_ms =
                    Some(i64::try_from(time_ms).unwrap_or(i64::MAX) - unix_ms(wall) as i64);
                if epoch != peer.their_epoch {
                    // A new run of the peer: it knows nothing of ours.
                    peer.their_epoch = epoch;
                    peer.received_upto = 0;
                    peer.view.agents.clear();
                    peer.outbox.renumber();
                    self.resend_states(from);
                    return;
                }
                if ack_epoch == self.epoch {
                    peer.outbox.acknowledge(ack);
                }
                if came_back {
                    let due = peer.outbox.due(now, true);
                    let to = peer.their_epoch;
                    self.send_events(from, to, due);
                }
            }
            Message::Event {
                epoch,
                to,
                seq,
                event,
            } => {
                if epoch != peer.their_epoch || to != self.epoch || seq != peer.received_upto + 1 {
                    // Out of order or already applied: it comes again in order.
                    return;
                }
                peer.received_upto = seq;
                match event {
                    LinkEvent::State {
                        agent,
                        state,
                        ready,
                        pid,
                        reason,
                        run,
                        replica_of,
                    } => {
                        let run = RemoteRun {
                            epoch: peer.their_epoch,
                            run,
                        };
                        for name in [format!("{from}/{agent}"), agent.clone()] {
                            let _ = self.reports.send(Report::Remote {
                                agent: name,
                                ready,
                                run,
                            });
                        }
                        peer.view.agents.insert(
                            agent,
                            RemoteAgent {
                                state,
                                ready,
                                pid,
                                reason,
                                replica_of,
                            },
                        );
                    }
                    LinkEvent::Error { mut record } => {
                        record.source = ErrorSource::Peer;
                        record.agent = format!("{from}/{}", record.agent);
                        record
                            .context
                            .insert("host".into(), serde_json::Value::String(from.to_string()));
                        if let Some(sink) = sink {
                            sink.publish(*record);
                        }
                    }
                    LinkEvent::Reply { id, result } => {
                        if let Some(reply) = self.waiting.remove(&id) {
                            let _ = reply.send(result);
                        }
                    }
                    LinkEvent::LogsAsked { id, query } => {
                        self.logs_asked.push((from.to_string(), id, query));
                    }
                    LinkEvent::LogsAnswered { id, result } => {
                        if let Some(reply) = self.waiting_logs.remove(&id) {
                            let _ = reply.send(result);
                        }
                    }
                    LinkEvent::Command {
                        id,
                        verb,
                        agents,
                        with_dependents,
                    } => {
                        tracing::info!(peer = %from, ?verb, ?agents, "command routed from a peer");
                        let (supervisor, done, from) =
                            (supervisor.clone(), done.clone(), from.to_string());
                        tokio::spawn(async move {
                            let result = match verb {
                                Verb::Start => supervisor.start(agents).await,
                                Verb::Stop => supervisor.stop(agents).await,
                                Verb::Restart => supervisor.restart(agents, with_dependents).await,
                                Verb::Down => {
                                    // Answer first: the link ends with the
                                    // shutdown, and the answer must get out.
                                    let _ = done.send((from, id, Ok(Vec::new())));
                                    tokio::time::sleep(Duration::from_millis(300)).await;
                                    supervisor.shutdown(false).await;
                                    return;
                                }
                            };
                            let _ =
                                done.send((from, id, result.map_err(|error| error.to_string())));
                        });
                    }
                    LinkEvent::RestartedWithDependents { agents, runs } => {
                        // Not ready any more, before any dependent restarts
                        // (the sender's state change may come after this
                        // notice; a newer run already reported stays).
                        for (agent, run) in agents.iter().zip(&runs) {
                            let run = RemoteRun {
                                epoch: peer.their_epoch,
                                run: *run,
                            };
                            for name in [format!("{from}/{agent}"), agent.clone()] {
                                let _ = self.reports.send(Report::Remote {
                                    agent: name,
                                    ready: false,
                                    run,
                                });
                            }
                        }
                        let theirs: Vec<String> = agents
                            .iter()
                            .flat_map(|agent| [agent.clone(), format!("{from}/{agent}")])
                            .collect();
                        let ours: Vec<String> = self
                            .dependencies
                            .iter()
                            .filter(|(_, dependencies)| {
                                dependencies
                                    .iter()
                                    .any(|dependency| theirs.contains(dependency))
                            })
                            .map(|(agent, _)| agent.clone())
                            .collect();
                        if !ours.is_empty() {
                            tracing::info!(peer = %from, ?agents, dependents = ?ours, "restarting the dependents of a peer's restarted agents");
                            let _ = self
                                .reports
                                .send(Report::RestartDependents { agents: ours });
                        }
                    }
                }
            }
        }
    }

    /// A peer that (re)started gets the state of every local agent.
    fn resend_states(&mut self, peer: &str) {
        let states: Vec<LinkEvent> = self
            .reported
            .iter()
            .map(|(agent, (state, ready, run))| LinkEvent::State {
                agent: agent.clone(),
                state: state.clone(),
                ready: *ready,
                pid: self.pids.get(agent).copied().flatten(),
                reason: None,
                run: *run,
                replica_of: self.replica_of.get(agent).cloned(),
            })
            .collect();
        for event in states {
            self.queue_to(peer, event);
        }
    }

    fn publish(&mut self) {
        let refused = self
            .sockets
            .stats
            .refused
            .load(std::sync::atomic::Ordering::Relaxed);
        let peers = self
            .peers
            .values()
            .map(|peer| PeerView {
                buffered: peer.outbox.waiting.len(),
                dropped: peer.outbox.dropped,
                ..peer.view.clone()
            })
            .collect();
        self.snapshot.send_if_modified(|snapshot| {
            let next = LinkSnapshot {
                host: snapshot.host.clone(),
                bound: snapshot.bound.clone(),
                peers,
                refused,
            };
            let changed = *snapshot != next;
            *snapshot = next;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(n: u64) -> LinkEvent {
        LinkEvent::RestartedWithDependents {
            agents: vec![n.to_string()],
            runs: vec![n],
        }
    }

    #[test]
    fn the_outbox_keeps_the_newest_up_to_the_bound_and_counts_the_rest() {
        let mut outbox = Outbox::default();
        for n in 1..=(BUFFER_BOUND as u64 + 5) {
            outbox.push(error(n));
        }
        assert_eq!(outbox.waiting.len(), BUFFER_BOUND);
        assert_eq!(outbox.dropped, 5);
        assert_eq!(outbox.waiting.front().map(|entry| entry.0), Some(6));
        outbox.acknowledge(100);
        assert_eq!(outbox.waiting.front().map(|entry| entry.0), Some(101));
    }

    #[test]
    fn an_event_is_due_once_then_again_only_after_the_resend_delay_or_on_reconnect() {
        let mut outbox = Outbox::default();
        outbox.push(error(1));
        let now = Instant::now();
        assert_eq!(outbox.due(now, false).len(), 1);
        assert!(outbox.due(now, false).is_empty());
        assert_eq!(outbox.due(now + RESEND_AFTER, false).len(), 1);
        assert_eq!(outbox.due(now + RESEND_AFTER, true).len(), 1);
    }

    #[test]
    fn a_restarted_peer_gets_the_unacknowledged_events_numbered_from_one_without_old_states() {
        let mut outbox = Outbox::default();
        outbox.push(error(1));
        outbox.push(LinkEvent::State {
            agent: "a".into(),
            state: "ready".into(),
            ready: true,
            pid: None,
            reason: None,
            run: 1,
            replica_of: None,
        });
        outbox.push(error(3));
        outbox.acknowledge(1);
        outbox.renumber();
        let seqs: Vec<u64> = outbox.waiting.iter().map(|entry| entry.0).collect();
        assert_eq!(seqs, [1]);
        assert_eq!(outbox.waiting[0].1, error(3));
        outbox.push(error(4));
        assert_eq!(outbox.waiting.back().map(|entry| entry.0), Some(2));
    }

    #[test]
    fn an_idle_agent_is_reported_available_to_the_peers() {
        assert!(available(AgentState::Ready));
        assert!(available(AgentState::Idle));
        for state in [
            AgentState::Pending,
            AgentState::Starting,
            AgentState::Stopping,
            AgentState::Stopped,
            AgentState::Failed,
            AgentState::BackingOff,
            AgentState::Blocked,
        ] {
            assert!(!available(state), "{state:?}");
        }
    }

    #[test]
    fn messages_round_trip_as_json() {
        let message = Message::Event {
            epoch: 7,
            to: 9,
            seq: 1,
            event: LinkEvent::State {
                agent: "Tts".into(),
                state: "ready".into(),
                ready: true,
                pid: Some(42),
                reason: None,
                run: 3,
                replica_of: Some("tts".into()),
            },
        };
        let text = serde_json::to_string(&message).expect("serialize");
        assert!(text.contains("\"type\":\"event\""), "{text}");
        assert_eq!(
            serde_json::from_str::<Message>(&text).expect("deserialize"),
            message
        );
    }
}
