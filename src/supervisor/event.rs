//! The messages of the supervisor: [`Event`]s (what happened, past tense)
//! flow into [`super::lifecycle::Lifecycle::apply`], which returns
//! [`Action`]s (what to do, imperative) for the run loop to perform;
//! [`Command`]s come from a [`super::SupervisorHandle`]. Also the status
//! snapshot published after every change, and the final [`Outcome`].
//!
//! Owns no state and does no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::lifecycle::AgentSpec;
use super::state::AgentState;
use crate::manifest::Strategy;
pub use crate::process::ResourceSample;
use crate::process::Termination;
pub use crate::transport::{HeartbeatPayload, Severity};

/// Index of an agent in the supervisor's table.
pub type AgentId = usize;

/// Something that happened. `run` is the agent's spawn generation: events of
/// an older run are ignored.
///
/// The process events, from the spawner's reporter: `Spawned` (the run's
/// process started, as process group leader `pid`), `SpawnFailed` (it could
/// not be started; `error` says why), `LastLine` and `Exited` (it was
/// reaped, with how it ended).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Spawned {
        agent: AgentId,
        run: u64,
        pid: u32,
    },
    SpawnFailed {
        agent: AgentId,
        run: u64,
        error: String,
    },
    /// What a not-ready agent really listens on (`Action::Diagnose`).
    Diagnosed {
        agent: AgentId,
        run: u64,
        text: String,
    },
    /// What the run printed last (stderr first), just before `Exited`.
    LastLine {
        agent: AgentId,
        run: u64,
        line: String,
    },
    Exited {
        agent: AgentId,
        run: u64,
        termination: Termination,
    },
    /// The readiness probe passed.
    ReadinessPassed {
        agent: AgentId,
        run: u64,
    },
    /// The readiness probe connected, but to a listener outside the agent's
    /// process tree (`reason` names its pid and process), so not ready.
    ReadinessBlocked {
        agent: AgentId,
        run: u64,
        reason: String,
    },
    /// One liveness probe attempt; `Err` carries why it failed.
    LivenessProbed {
        agent: AgentId,
        run: u64,
        result: Result<(), String>,
    },
    /// The earliest deadline the loop was told about has passed.
    DeadlineReached,
    /// SIGINT/SIGTERM or `down`; `force` (a second signal) skips the grace.
    ShutdownRequested {
        force: bool,
    },
    /// The supervisor of another host reported over the peer link whether
    /// one of its agents (awaited here, `remote`) is ready (`crate::link`),
    /// and of which run of it.
    RemoteReported {
        agent: AgentId,
        ready: bool,
        run: RemoteRun,
    },
    /// An operator asked to start these agents (and, implicitly, the
    /// dependencies they need).
    StartRequested {
        agents: Vec<AgentId>,
    },
    /// An operator asked to stop these agents (their dependents stop first).
    StopRequested {
        agents: Vec<AgentId>,
    },
    /// An operator asked to restart these agents; `with_dependents` also
    /// restarts everything that depends on them, in dependency order.
    RestartRequested {
        agents: Vec<AgentId>,
        with_dependents: bool,
    },
    /// New manifests were loaded and passed `check`: apply the difference.
    ReloadRequested(Reload),
    /// New manifests were loaded but did not pass: keep the old ones and
    /// show these errors in the status.
    ReloadFailed {
        errors: Vec<String>,
    },
    /// One resource sample of every supervised process tree, by agent pid.
    ResourcesSampled {
        samples: Vec<ResourceSample>,
    },
    /// The agent said READY through the SDK (readiness passes only for
    /// `readiness: sdk`). From the agent endpoint, via `fabric`'s bridge.
    ReportedReady {
        agent: AgentId,
        run: u64,
    },
    /// An SDK heartbeat, with its payload if it carried one.
    HeartbeatReceived {
        agent: AgentId,
        run: u64,
        payload: Option<HeartbeatPayload>,
    },
    /// The agent reported a structured error (already in `errors.jsonl`);
    /// feeds its `on_error` policy.
    ErrorReported {
        agent: AgentId,
        run: u64,
        severity: Severity,
        message: String,
    },
    /// Another agent resolved this one (RESOLVE through the agent endpoint,
    /// via `fabric`'s bridge): an `Idle` agent is started again (`idle.rs`);
    /// in any other state nothing happens. `by` names the asking agent.
    WakeRequested {
        agent: AgentId,
        by: String,
    },
}

/// The agents of a configuration that passed `check` (shared, not copied,
/// between the command and the event).
#[derive(Debug, Clone)]
pub struct Reload {
    /// Every agent of the new configuration, as [`super::Config::agents`]
    /// lists them (this host's, plus the remote agents they depend on).
    pub agents: Arc<Vec<AgentSpec>>,
    /// The new configuration's restart strategy.
    pub strategy: Strategy,
    /// `Some(agent)` for the reload `scale` makes of the running
    /// configuration (a new count of the agent's instances, the operator's
    /// until the manifest's `replicas:` changes); `None` for one made from
    /// the manifests.
    pub scaled: Option<String>,
}

/// Two reloads are equal when they share the same agent list (the same
/// `Arc`, not equal contents) and strategy: enough for tests comparing the
/// events a command produced.
impl PartialEq for Reload {
    fn eq(&self, other: &Reload) -> bool {
        Arc::ptr_eq(&self.agents, &other.agents)
            && self.strategy == other.strategy
            && self.scaled == other.scaled
    }
}

/// What a reload changed, by agent name. Its `Display` is the line the
/// supervisor logs after applying a reload:
///
/// ```
/// use supervisor::supervisor::ReloadSummary;
///
/// let summary = ReloadSummary {
///     added: vec!["cache".into()],
///     changed: vec!["api".into(), "db".into()],
///     unchanged: 3,
///     ..ReloadSummary::default()
/// };
/// assert_eq!(
///     summary.to_string(),
///     "added: cache; removed: none; changed: api, db; unchanged: 3"
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Agents of the new configuration that the table does not have (they start).
    pub added: Vec<String>,
    /// Agents that are no longer in the configuration (they stop).
    pub removed: Vec<String>,
    /// Agents whose definition differs (they are replaced).
    pub changed: Vec<String>,
    /// How many agents keep running untouched.
    pub unchanged: usize,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| match names.is_empty() {
            true => "none".to_string(),
            false => names.join(", "),
        };
        write!(
            f,
            "added: {}; removed: {}; changed: {}; unchanged: {}",
            list(&self.added),
            list(&self.removed),
            list(&self.changed),
            self.unchanged
        )
    }
}

/// Something the run loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a process for this run of the agent.
    Spawn { agent: AgentId, run: u64 },
    /// Send a signal to the process group of this run.
    Signal {
        agent: AgentId,
        run: u64,
        pid: u32,
        signal: Signal,
    },
    /// Probe until ready (initial delay, interval), then report once.
    WatchReadiness { agent: AgentId, run: u64 },
    /// Probe every liveness interval and report each result.
    WatchLiveness { agent: AgentId, run: u64 },
    /// Stop every probe task of the agent.
    CancelWatchers { agent: AgentId },
    /// Find out what the not-ready process `pid` listens on and answers
    /// (`supervisor::diagnose`); report it as `Event::Diagnosed`.
    Diagnose { agent: AgentId, run: u64, pid: u32 },
    /// Every agent is settled: the loop ends with this outcome.
    Exit(Outcome),
}

/// A request from a [`super::SupervisorHandle`]. Requests that can be
/// refused carry a `oneshot` reply, answered once the change is applied and
/// the status published; dropping the receiver is harmless.
#[derive(Debug)]
pub enum Command {
    /// Stop everything in reverse dependency order; `force` skips the grace.
    Shutdown { force: bool },
    /// An agent of another host changed readiness (from the peer link):
    /// ignored unless `agent` is awaited here.
    RemoteState {
        agent: String,
        ready: bool,
        run: RemoteRun,
    },
    /// Reply with the current status.
    Status {
        reply: oneshot::Sender<StatusSnapshot>,
    },
    /// Start agents by name (and the dependencies they need); replies with
    /// every agent the request starts, in dependency order.
    Start {
        agents: Vec<String>,
        reply: oneshot::Sender<Result<Vec<String>, CommandError>>,
    },
    /// Stop agents by name (their dependents first); they stay stopped
    /// until started again. Replies with every agent the request stops.
    Stop {
        agents: Vec<String>,
        reply: oneshot::Sender<Result<Vec<String>, CommandError>>,
    },
    /// Restart agents by name; replies with every agent it replaces.
    Restart {
        agents: Vec<String>,
        with_dependents: bool,
        reply: oneshot::Sender<Result<Vec<String>, CommandError>>,
    },
    /// Apply a configuration that passed `check`.
    Reload {
        reload: Reload,
        reply: oneshot::Sender<Result<ReloadSummary, CommandError>>,
    },
    /// A reload that did not pass `check`: keep running, report `errors`.
    ReloadFailed { errors: Vec<String> },
    /// Run `count` instances of the agent with `replicas` called `agent`
    /// (a reload of the running configuration, see `Lifecycle::scaled`).
    Scale {
        agent: String,
        count: u32,
        reply: oneshot::Sender<Result<ReloadSummary, CommandError>>,
    },
}

/// Why the supervisor refused a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Names that no agent has (empty when the request named no agent).
    #[error("unknown agent(s): {}", .0.join(", "))]
    UnknownAgents(Vec<String>),
    /// The supervisor is stopping everything; nothing new is accepted.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// A request that cannot be carried out, and why (one line).
    #[error("{0}")]
    Refused(String),
    /// The supervisor task has ended (or ended before answering).
    #[error("the supervisor has ended")]
    Ended,
}

/// Why `up` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The required agent that failed.
    pub agent: String,
    /// Why it failed, as the lifecycle words it (e.g. the restart limit hit).
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "required agent `{}` failed: {}", self.agent, self.reason)
    }
}

/// How the supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The required agent that brought everything down, if one did.
    pub failure: Option<Failure>,
}

/// Which run of another host's agent a report is about, as the host that
/// owns it counts: that supervisor's epoch (a new, larger one after it
/// restarts), then the agent's spawn generation there
/// ([`AgentStatus::run`]). Ordered: a report about an older run than one
/// already applied is stale (it was overtaken, e.g. a restart notice
/// arriving after the new run's readiness) and is ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteRun {
    pub epoch: u64,
    pub run: u64,
}

/// One agent in a [`StatusSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStatus {
    /// The agent's name, unique in the table.
    pub name: String,
    /// For an instance of an agent with `replicas`: that agent and the
    /// instance's index.
    pub replica: Option<(String, u32)>,
    /// The manifest's `group:` (or legacy group).
    pub group: Option<String>,
    /// Where it is in its lifecycle (see [`super::state`]).
    pub state: AgentState,
    /// Runs on another host: probed, never spawned.
    pub remote: bool,
    /// Its failure stops everything (unless `--keep-going`, or its
    /// `on_give_up` says otherwise); an optional agent's does not.
    pub required: bool,
    /// The process group leader's pid while a process runs.
    pub pid: Option<u32>,
    /// Spawn generation of its current (or last) process, from 1; 0 before
    /// the first start (told to peers so they order reports by run).
    pub run: u64,
    /// How its last run ended when it ended on its own (no stop asked);
    /// `None` while it runs or after a stop (`run-one` exits with it).
    pub own_exit: Option<Termination>,
    /// Restarts over its whole life, every cause.
    pub restarts: u32,
    /// From the supervisor's start to the agent's first readiness.
    pub ready_at: Option<Duration>,
    /// From the agent's (last) spawn to its first readiness.
    pub time_to_ready: Option<Duration>,
    /// Dependencies not ready yet (for `Pending`).
    pub waiting_on: Vec<String>,
    /// Every dependency the manifest gives it (the dashboard draws the graph
    /// from these).
    pub dependencies: Vec<String>,
    /// The last exit, failure or restart reason.
    pub reason: Option<String>,
    /// The machine it runs on.
    pub host: String,
    /// When the current process was spawned (while it has one).
    pub running_since: Option<Instant>,
    /// Age of the last SDK heartbeat; `None` until the SDK reports them.
    pub heartbeat_age: Option<Duration>,
    /// From the latest resource sample of its process tree.
    pub cpu_percent: Option<f64>,
    /// Resident memory of its whole process tree, in bytes, from the same sample.
    pub rss_bytes: Option<u64>,
    /// Restarts by cause (`exit`, `signal`, `liveness`, `memory`,
    /// `operator`, `reload`, `dependency`, `heartbeat`, `progress`, `error`).
    pub restarts_by_cause: BTreeMap<&'static str, u32>,
    /// Stopped by an operator: stays stopped until started again.
    pub held: bool,
    /// The payload of the last SDK heartbeat of the current run.
    pub heartbeat: Option<HeartbeatPayload>,
    /// When that heartbeat arrived (`heartbeat_age` is its age when the
    /// snapshot was taken; use this for a live age).
    pub heartbeat_at: Option<Instant>,
    /// Why the agent is marked degraded by its `on_error` policy (until
    /// its next restart).
    pub degraded: Option<String>,
    /// The ports the manifest gives it (`port`, `health_check_port`,
    /// `config.*_port`, legacy implicit ones), as `(port, field)`.
    pub ports: Vec<(u16, String)>,
    /// Why it is degraded (empty: healthy, or not running); derived by
    /// [`super::degraded::derive`] from the dependencies' states, its
    /// breakers and `degraded`.
    pub degraded_by: Vec<super::degraded::Cause>,
}

/// What status readers see; published after every `apply`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSnapshot {
    /// When the supervisor started (the zero of `ready_at` and `all_ready_after`).
    pub started: Instant,
    /// Every agent, in the table's order ([`super::Config::agents`]' order,
    /// then the agents added by reloads; removed ones left out).
    pub agents: Vec<AgentStatus>,
    /// Since `started`, when every agent had been ready (or settled as
    /// failed/blocked) for the first time.
    pub all_ready_after: Option<Duration>,
    /// A shutdown was requested: agents are stopping and commands are refused.
    pub shutting_down: bool,
    /// Configurations applied since the start.
    pub reloads: u64,
    /// Why the last reload was refused; empty when it was applied.
    pub config_errors: Vec<String>,
    /// Times an agent went above its CPU limit.
    pub cpu_warnings: u64,
}

impl StatusSnapshot {
    /// How many agents are [`AgentState::Ready`] now.
    pub fn ready_count(&self) -> usize {
        self.agents
            .iter()
            .filter(|agent| agent.state == AgentState::Ready)
            .count()
    }
}
