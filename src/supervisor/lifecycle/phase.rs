//! What an agent's state carries: [`Phase`], one variant per [`AgentState`]
//! holding exactly the data valid in it (the [`Process`] of a run, the
//! timers of `Starting`, `BackingOff` and `Stopping`, the [`StopIntent`] that
//! decides where a stop leads), so an illegal combination cannot be written.
//!
//! Owns the shapes, not the decisions: every change of phase goes through
//! [`super::Lifecycle::transition`], checked against `state.rs`.

use tokio::time::Instant;

use super::idle::IdleWatch;
use crate::supervisor::state::AgentState;
use crate::transport::HeartbeatTracker;

/// Why an agent is being stopped; decides where its exit leads.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum StopIntent {
    /// The supervisor is shutting down: -> `Stopped`.
    Shutdown,
    /// Restarted because of an agent it depends on (strategy): -> `Pending`.
    Requeue,
    /// Hung (liveness, heartbeats), never ready, above its memory limit or
    /// reporting fatal errors: killed, then restarted under its policy;
    /// `cause` labels the restart.
    Restart { reason: String, cause: &'static str },
    /// Stopped by an operator: -> `Stopped`, held.
    Operator,
    /// Restarted by an operator or a reload: -> `Pending`, starts again once
    /// its dependencies are ready. Alone (dependents keep running) unless
    /// `after_dependents` (`restart --with-dependents`).
    Replace {
        reason: String,
        cause: &'static str,
        after_dependents: bool,
    },
    /// Removed by a reload: -> `Stopped`, retired.
    Retire,
    /// Its heartbeats reported no work for `idle_stop` (`reason` says how
    /// long): -> `Idle`, started again on demand. Dependents keep running.
    Idle { reason: String },
}

impl StopIntent {
    /// These stops wait for the agent's dependents to stop first.
    pub(super) fn waits_for_dependents(&self) -> bool {
        matches!(
            self,
            StopIntent::Shutdown
                | StopIntent::Requeue
                | StopIntent::Operator
                | StopIntent::Retire
                | StopIntent::Replace {
                    after_dependents: true,
                    ..
                }
        )
    }
}

/// The current run of an agent, from its start to its exit.
#[derive(Debug, Clone)]
pub(super) struct Process {
    /// Known from `Spawned` on; never for an agent of another host.
    pub(super) pid: Option<u32>,
    /// When the run started: its uptime (for backoff) counts from here.
    pub(super) since: Instant,
    /// What the run printed last (`Event::LastLine`), for the reason of its exit.
    pub(super) last_line: Option<String>,
    pub(super) cpu_percent: Option<f64>,
    pub(super) rss_bytes: Option<u64>,
    /// Since when memory has been above the limit.
    pub(super) memory_over_since: Option<Instant>,
    /// SDK heartbeat deadlines of this run (see `agent_reports`).
    pub(super) heartbeat: Option<HeartbeatTracker>,
    /// Since when its heartbeats report no work (see `idle.rs`).
    pub(super) idle: IdleWatch,
}

impl Process {
    pub(super) fn new(since: Instant) -> Process {
        Process {
            pid: None,
            since,
            last_line: None,
            cpu_percent: None,
            rss_bytes: None,
            memory_over_since: None,
            heartbeat: None,
            idle: IdleWatch::default(),
        }
    }
}

/// Where an agent is, with exactly the data valid there. Its [`AgentState`]
/// is [`Phase::state`]; every change goes through [`Lifecycle::transition`].
#[derive(Debug, Clone)]
pub(super) enum Phase {
    Pending,
    Blocked,
    Starting {
        process: Process,
        /// The readiness timeout; while `diagnosing`, the end of the wait for
        /// the diagnosis.
        ready_deadline: Option<Instant>,
        /// Ready at this moment if still running (`start_period`, or the SDK
        /// fallback); armed by `Spawned`, once the process exists.
        ready_at: Option<Instant>,
        /// Missed its readiness deadline; waiting (briefly) for the diagnosis
        /// of what it listens on before it is killed and restarted.
        diagnosing: bool,
        /// Decided to stop; signalled by the stop wave once its pid is known
        /// and (for some intents) its dependents are gone.
        stop: Option<StopIntent>,
    },
    Ready {
        process: Process,
        liveness_failures: u32,
        /// As in `Starting`.
        stop: Option<StopIntent>,
    },
    BackingOff {
        /// When to start again.
        until: Instant,
    },
    Stopping {
        process: Process,
        /// Where its exit leads.
        intent: StopIntent,
        /// SIGKILL at this moment (the end of its grace); none once sent.
        kill_at: Option<Instant>,
    },
    Stopped,
    Failed,
    /// Stopped after `idle_stop` without work; woken on demand.
    Idle,
}

impl Phase {
    pub(super) fn state(&self) -> AgentState {
        match self {
            Phase::Pending => AgentState::Pending,
            Phase::Blocked => AgentState::Blocked,
            Phase::Starting { .. } => AgentState::Starting,
            Phase::Ready { .. } => AgentState::Ready,
            Phase::BackingOff { .. } => AgentState::BackingOff,
            Phase::Stopping { .. } => AgentState::Stopping,
            Phase::Stopped => AgentState::Stopped,
            Phase::Failed => AgentState::Failed,
            Phase::Idle => AgentState::Idle,
        }
    }

    pub(super) fn process(&self) -> Option<&Process> {
        match self {
            Phase::Starting { process, .. }
            | Phase::Ready { process, .. }
            | Phase::Stopping { process, .. } => Some(process),
            _ => None,
        }
    }

    pub(super) fn process_mut(&mut self) -> Option<&mut Process> {
        match self {
            Phase::Starting { process, .. }
            | Phase::Ready { process, .. }
            | Phase::Stopping { process, .. } => Some(process),
            _ => None,
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.process().and_then(|process| process.pid)
    }

    /// Running (`Starting` or `Ready`) and nobody decided to stop it yet.
    pub(super) fn running_unstopped(&self) -> bool {
        matches!(
            self,
            Phase::Starting { stop: None, .. } | Phase::Ready { stop: None, .. }
        )
    }

    /// Decides (or changes) why a running agent stops. Changes nothing in
    /// other phases.
    pub(super) fn set_stop(&mut self, intent: StopIntent) {
        match self {
            Phase::Starting { stop, .. } | Phase::Ready { stop, .. } => *stop = Some(intent),
            Phase::Stopping {
                intent: current, ..
            } => *current = intent,
            _ => {}
        }
    }

    /// The moment this phase's next timer fires.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Phase::Starting {
                ready_deadline,
                ready_at,
                stop: None,
                ..
            } => [*ready_deadline, *ready_at].into_iter().flatten().min(),
            Phase::BackingOff { until } => Some(*until),
            Phase::Stopping { kill_at, .. } => *kill_at,
            _ => None,
        }
    }
}
