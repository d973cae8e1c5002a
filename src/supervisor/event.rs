//! The messages of the supervisor: [`Event`]s (what happened, past tense)
//! flow into [`super::lifecycle::Lifecycle::apply`], which returns
//! [`Action`]s (what to do, imperative) for the run loop to perform;
//! [`Command`]s come from a [`super::SupervisorHandle`]. Also the status
//! snapshot published after every change, and the final [`Outcome`].
//!
//! Owns no state and does no I/O.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::state::AgentState;
use crate::process::Termination;

/// Index of an agent in the supervisor's table.
pub type AgentId = usize;

/// Something that happened. `run` is the agent's spawn generation: events of
/// an older run are ignored.
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
    /// Every agent is settled: the loop ends with this outcome.
    Exit(Outcome),
}

/// A request from a [`super::SupervisorHandle`].
#[derive(Debug)]
pub enum Command {
    /// Stop everything in reverse dependency order; `force` skips the grace.
    Shutdown { force: bool },
    /// Reply with the current status.
    Status {
        reply: oneshot::Sender<StatusSnapshot>,
    },
}

/// Why `up` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub agent: String,
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

/// One agent in a [`StatusSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStatus {
    pub name: String,
    pub state: AgentState,
    /// Runs on another host: probed, never spawned.
    pub remote: bool,
    pub required: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// From the supervisor's start to the agent's first readiness.
    pub ready_at: Option<Duration>,
    /// From the agent's (last) spawn to its first readiness.
    pub time_to_ready: Option<Duration>,
    /// Dependencies not ready yet (for `Pending`).
    pub waiting_on: Vec<String>,
    /// The last exit, failure or restart reason.
    pub reason: Option<String>,
}

/// What status readers see; published after every `apply`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSnapshot {
    pub started: Instant,
    pub agents: Vec<AgentStatus>,
    /// Since `started`, when every agent had been ready (or settled as
    /// failed/blocked) for the first time.
    pub all_ready_after: Option<Duration>,
    pub shutting_down: bool,
}

impl StatusSnapshot {
    pub fn ready_count(&self) -> usize {
        self.agents
            .iter()
            .filter(|agent| agent.state == AgentState::Ready)
            .count()
    }
}
