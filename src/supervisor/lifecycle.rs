//! The pure heart of the supervisor: the agent table and
//! [`Lifecycle::apply`]`(event, now) -> Vec<Action>`.
//!
//! Owns every agent's state, run generation, pid, timers (readiness timeout,
//! start period, restart delay, stop grace), stop intent and restart
//! bookkeeping. Does no I/O and never reads the clock: the run loop in
//! [`super`] feeds it events with `now`, performs the actions it returns and
//! sleeps until [`Lifecycle::next_deadline`].
//!
//! Rules it implements:
//! - an agent starts the moment all its dependencies are `Ready` (never level
//!   by level); with `sequential` (benchmark baseline) one at a time in plan
//!   order;
//! - a dependency that failed, was blocked or stopped for good blocks its
//!   pending dependents;
//! - stops go in reverse dependency order: an agent asked to stop for
//!   shutdown or a strategy restart is signalled only once none of its
//!   dependents is alive; a hung or never-ready agent is stopped at once;
//! - restarts follow [`super::restart`]; strategies `rest_for_one` and
//!   `one_for_all` requeue the affected agents, which start again when their
//!   dependencies are ready;
//! - a required agent that fails (with `on_give_up: shutdown`) shuts
//!   everything down and becomes the [`Outcome`]'s failure;
//! - operators start, stop and restart agents by name: `start` also starts
//!   the stopped dependencies the agent needs; `stop` stops the agent's
//!   dependents first (reverse order) and keeps them all stopped (`held`)
//!   until started again, so a run with held agents does not end on its
//!   own; `restart` replaces the process at once, leaving dependents running
//!   unless `with_dependents`;
//! - a reload applies the difference between two configurations: added
//!   agents start in dependency order, removed ones stop in reverse order and
//!   are retired (kept in the table under their id, hidden from the status),
//!   changed ones are restarted with the new definition, the rest untouched;
//! - resource samples are matched to agents by pid: memory above the limit
//!   for its grace restarts the agent (cause `memory`), CPU above the limit
//!   is a warning.

mod agent_reports;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::event::{
    Action, AgentId, AgentStatus, Event, Failure, Outcome, Reload, ReloadSummary, ResourceSample,
    StatusSnapshot,
};
use super::restart::{Decision, Jitter, RestartTracker};
use super::state::{AgentState, allowed};
use crate::manifest::{Agent, GiveUp, ReadinessCheck, Strategy};
use crate::process::Termination;

/// With an `sdk` readiness check and no SDK yet, an agent counts as ready
/// after running this long.
const SDK_FALLBACK_START_PERIOD: Duration = Duration::from_secs(1);

/// One agent as the supervisor runs it.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub agent: Agent,
    /// Runs on another host: never spawned, only probed until ready so its
    /// local dependents can start.
    pub remote: bool,
}

/// Why an agent is being stopped; decides where its exit leads.
#[derive(Debug, Clone, PartialEq)]
enum StopIntent {
    /// The supervisor is shutting down: -> `Stopped`.
    Shutdown,
    /// Restarted because of an agent it depends on (strategy): -> `Pending`.
    Requeue,
    /// Hung (liveness) or above its memory limit: killed, then restarted
    /// under its policy; `cause` labels the restart.
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
}

impl StopIntent {
    /// These stops wait for the agent's dependents to stop first.
    fn waits_for_dependents(&self) -> bool {
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

/// CPU limit crossings are logged at most this often per agent.
const CPU_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long a not-ready agent is kept for its diagnosis (`Action::Diagnose`).
const DIAGNOSIS_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct Record {
    spec: AgentSpec,
    dependencies: Vec<AgentId>,
    dependents: Vec<AgentId>,
    state: AgentState,
    /// Spawn generation; events carrying an older one are stale.
    run: u64,
    pid: Option<u32>,
    spawned_at: Option<Instant>,
    ready_this_run: bool,
    first_ready: Option<Instant>,
    time_to_ready: Option<Duration>,
    ready_deadline: Option<Instant>,
    start_period_deadline: Option<Instant>,
    restart_at: Option<Instant>,
    kill_at: Option<Instant>,
    stop: Option<StopIntent>,
    liveness_failures: u32,
    restarts: RestartTracker,
    reason: Option<String>,
    /// Stopped by an operator: stays stopped until started again, and a run
    /// with held agents does not end on its own.
    held: bool,
    /// Held only because an agent it depends on was stopped by an operator:
    /// starting that agent again brings this one back too.
    held_for_dependency: bool,
    /// What the current run printed last (`Event::LastLine`), for the
    /// reason of its exit.
    last_line: Option<String>,
    /// Missed its readiness deadline; waiting (briefly) for the diagnosis
    /// of what it listens on before it is killed and restarted.
    diagnosing: bool,
    /// Removed by a reload: hidden from the status, never started again.
    retired: bool,
    cpu_percent: Option<f64>,
    rss_bytes: Option<u64>,
    /// Since when memory has been above the limit.
    memory_over_since: Option<Instant>,
    /// When the last CPU warning was logged.
    cpu_warned_at: Option<Instant>,
    restart_causes: BTreeMap<&'static str, u32>,
    /// SDK heartbeat deadlines of the current run (see `agent_reports`).
    heartbeat: Option<crate::transport::HeartbeatTracker>,
    /// The last SDK heartbeat of the current run: when, and its payload.
    last_heartbeat: Option<(Instant, Option<super::event::HeartbeatPayload>)>,
    /// Recent errors counted by the `on_error` rate rule.
    error_times: VecDeque<Instant>,
    /// Why `on_error` marked the current run degraded.
    degraded: Option<String>,
}

impl Record {
    fn new(spec: AgentSpec) -> Record {
        Record {
            spec,
            dependencies: Vec::new(),
            dependents: Vec::new(),
            state: AgentState::Pending,
            run: 0,
            pid: None,
            spawned_at: None,
            ready_this_run: false,
            first_ready: None,
            time_to_ready: None,
            ready_deadline: None,
            start_period_deadline: None,
            restart_at: None,
            kill_at: None,
            stop: None,
            liveness_failures: 0,
            restarts: RestartTracker::default(),
            reason: None,
            held: false,
            held_for_dependency: false,
            last_line: None,
            diagnosing: false,
            retired: false,
            cpu_percent: None,
            rss_bytes: None,
            memory_over_since: None,
            cpu_warned_at: None,
            restart_causes: BTreeMap::new(),
            heartbeat: None,
            last_heartbeat: None,
            error_times: VecDeque::new(),
            degraded: None,
        }
    }

    fn count_restart(&mut self, cause: &'static str) {
        *self.restart_causes.entry(cause).or_default() += 1;
    }

    fn name(&self) -> &str {
        &self.spec.agent.name
    }

    /// Has (or is about to have) a process of its own.
    fn alive(&self) -> bool {
        !self.spec.remote
            && matches!(
                self.state,
                AgentState::Starting | AgentState::Ready | AgentState::Stopping
            )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Running,
    ShuttingDown { forced: bool },
}

/// An agent of another host reported not ready is probed again after this
/// long if no report of it being ready came first.
const REMOTE_RECHECK: Duration = Duration::from_secs(5);

/// The agent table and its transition function.
#[derive(Debug)]
pub struct Lifecycle {
    agents: Vec<Record>,
    /// Agent ids in a valid start order (dependencies first).
    order: Vec<AgentId>,
    strategy: Strategy,
    sequential: bool,
    mode: Mode,
    failure: Option<Failure>,
    started: Instant,
    all_ready_after: Option<Duration>,
    jitter: Jitter,
    finished: bool,
    reloads: u64,
    config_errors: Vec<String>,
    cpu_warnings: u64,
    /// Agents report through the agent endpoint (`enable_fabric`).
    fabric: bool,
    /// The `now` of the latest event (ages in the snapshot are as of then).
    last_now: Instant,
    /// `up --keep-going`: a required agent that fails is reported, and the
    /// others keep running.
    keep_going: bool,
}

impl Lifecycle {
    /// `agents` in any order; dependencies on names not in the list (disabled
    /// agents, agents of other hosts nobody here needs) are ignored.
    pub fn new(
        agents: Vec<AgentSpec>,
        strategy: Strategy,
        sequential: bool,
        now: Instant,
        jitter: Jitter,
    ) -> Lifecycle {
        let mut lifecycle = Lifecycle {
            agents: agents.into_iter().map(Record::new).collect(),
            order: Vec::new(),
            strategy,
            sequential,
            mode: Mode::Running,
            failure: None,
            started: now,
            all_ready_after: None,
            jitter,
            finished: false,
            reloads: 0,
            config_errors: Vec::new(),
            cpu_warnings: 0,
            fabric: false,
            last_now: now,
            keep_going: false,
        };
        lifecycle.relink();
        lifecycle
    }

    /// Recomputes dependency edges and the start order from the agents'
    /// definitions (after construction and after a reload). Names resolve to
    /// live (not retired) agents; a retired agent keeps edges to the
    /// retired agents it depended on so they stop in reverse order.
    fn relink(&mut self) {
        let lookup = |name: &str, retired: bool| {
            self.agents
                .iter()
                .position(|record| !record.retired && record.name() == name)
                .or_else(|| {
                    retired
                        .then(|| {
                            self.agents
                                .iter()
                                .position(|record| record.retired && record.name() == name)
                        })
                        .flatten()
                })
        };
        let dependencies: Vec<Vec<AgentId>> = self
            .agents
            .iter()
            .map(|record| {
                let mut ids: Vec<AgentId> = record
                    .spec
                    .agent
                    .dependencies
                    .iter()
                    .filter_map(|dependency| lookup(&dependency.name, record.retired))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            })
            .collect();
        let mut dependents = vec![Vec::new(); self.agents.len()];
        for (id, list) in dependencies.iter().enumerate() {
            for dependency in list {
                dependents[*dependency].push(id);
            }
        }
        self.order = start_order(&dependencies);
        for ((record, dependencies), dependents) in
            self.agents.iter_mut().zip(dependencies).zip(dependents)
        {
            record.dependencies = dependencies;
            record.dependents = dependents;
        }
    }

    pub fn spec(&self, agent: AgentId) -> &AgentSpec {
        &self.agents[agent].spec
    }

    pub fn state(&self, agent: AgentId) -> AgentState {
        self.agents[agent].state
    }

    /// The live (not retired) agent called `name`.
    pub fn id(&self, name: &str) -> Option<AgentId> {
        self.agents
            .iter()
            .position(|record| !record.retired && record.name() == name)
    }

    /// `up --keep-going`: required agents that fail do not stop the others.
    pub fn set_keep_going(&mut self, keep_going: bool) {
        self.keep_going = keep_going;
    }

    pub fn agent_name(&self, agent: AgentId) -> &str {
        self.agents[agent].name()
    }

    /// Whether the supervisor is stopping everything.
    pub fn shutting_down(&self) -> bool {
        self.mode != Mode::Running
    }

    /// What applying `reload` would change; pure, changes nothing.
    pub fn reload_summary(&self, reload: &Reload) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        for spec in reload.agents.iter() {
            match self.id(&spec.agent.name) {
                None => summary.added.push(spec.agent.name.clone()),
                Some(agent) if definition(&self.agents[agent].spec) != definition(spec) => {
                    summary.changed.push(spec.agent.name.clone())
                }
                Some(_) => summary.unchanged += 1,
            }
        }
        for record in self.agents.iter().filter(|record| !record.retired) {
            if !reload
                .agents
                .iter()
                .any(|spec| spec.agent.name == record.name())
            {
                summary.removed.push(record.name().to_string());
            }
        }
        summary
    }

    /// The agents' ids in start order.
    pub fn order(&self) -> &[AgentId] {
        &self.order
    }

    /// The dependencies of `agent` that are in the table.
    pub fn dependencies(&self, agent: AgentId) -> &[AgentId] {
        &self.agents[agent].dependencies
    }

    /// Call right after construction: starts the agents without dependencies.
    pub fn begin(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        self.progress(now, &mut actions);
        actions
    }

    /// Applies one event and returns what the run loop must do.
    pub fn apply(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.finished {
            return actions;
        }
        self.last_now = self.last_now.max(now);
        match event {
            Event::Spawned { agent, run, pid } => {
                if self.current(agent, run) {
                    let record = &mut self.agents[agent];
                    record.pid = Some(pid);
                    // A start period counts from the moment the process exists.
                    if record.state == AgentState::Starting {
                        match record.spec.agent.readiness.check {
                            ReadinessCheck::StartPeriod(period) => {
                                record.start_period_deadline = Some(now + period)
                            }
                            ReadinessCheck::Sdk if self.fabric => {}
                            ReadinessCheck::Sdk => {
                                record.start_period_deadline = Some(now + SDK_FALLBACK_START_PERIOD)
                            }
                            ReadinessCheck::Probe(_) => {}
                        }
                        self.watch_heartbeats_from_spawn(agent, now);
                    }
                }
            }
            // Pushed by the other host's supervisor, which owns the agent:
            // ready is as good as a passed probe (the probe runs only while
            // no report has come); not ready (it stopped, is restarting or
            // failed there) makes it `BackingOff` here: dependents that
            // start now wait for it (they are not blocked), and it is
            // probed again after REMOTE_RECHECK unless reported ready
            // before. Agents here that already run are left alone (one host
            // never restarts agents because of another host's state; a
            // restart with dependents is routed explicitly, `crate::link`).
            Event::RemoteReported { agent, ready } => {
                let record = &self.agents[agent];
                if record.spec.remote && record.stop.is_none() && self.mode == Mode::Running {
                    match (ready, record.state) {
                        (true, AgentState::Starting) => {
                            actions.push(Action::CancelWatchers { agent });
                            self.become_ready(agent, now, &mut actions);
                        }
                        (true, AgentState::BackingOff | AgentState::Pending) => {
                            self.start(agent, now, &mut actions);
                            if self.agents[agent].state == AgentState::Starting {
                                actions.push(Action::CancelWatchers { agent });
                                self.become_ready(agent, now, &mut actions);
                            }
                        }
                        (false, AgentState::Ready | AgentState::Starting) => {
                            actions.push(Action::CancelWatchers { agent });
                            self.transition(agent, AgentState::BackingOff);
                            self.agents[agent].restart_at = Some(now + REMOTE_RECHECK);
                        }
                        _ => {}
                    }
                }
            }
            Event::SpawnFailed { agent, run, error } => {
                if self.current(agent, run) && self.agents[agent].state == AgentState::Starting {
                    actions.push(Action::CancelWatchers { agent });
                    if self.agents[agent].stop == Some(StopIntent::Shutdown) {
                        self.transition(agent, AgentState::Stopped);
                    } else {
                        self.fail(agent, format!("cannot be started: {error}"), &mut actions);
                    }
                }
            }
            Event::Diagnosed { agent, run, text } => {
                let current = self.current(agent, run);
                let record = &mut self.agents[agent];
                if current
                    && record.diagnosing
                    && record.state == AgentState::Starting
                    && record.stop.is_none()
                {
                    record.diagnosing = false;
                    record.ready_deadline = None;
                    record.stop = Some(StopIntent::Restart {
                        reason: format!(
                            "not ready within {}: {text}",
                            format_duration(record.spec.agent.readiness.timeout)
                        ),
                        cause: "readiness",
                    });
                }
            }
            Event::LastLine { agent, run, line } => {
                if self.current(agent, run) {
                    self.agents[agent].last_line = Some(line);
                }
            }
            Event::Exited {
                agent,
                run,
                termination,
            } => {
                if self.current(agent, run) {
                    self.on_exit(agent, termination, now, &mut actions);
                }
            }
            Event::ReadinessPassed { agent, run } => {
                let record = &self.agents[agent];
                if self.current(agent, run)
                    && record.state == AgentState::Starting
                    && record.stop.is_none()
                {
                    self.become_ready(agent, now, &mut actions);
                }
            }
            Event::ReadinessBlocked { agent, run, reason } => {
                if self.current(agent, run) && self.agents[agent].state == AgentState::Starting {
                    let record = &mut self.agents[agent];
                    if record.reason.as_deref() != Some(reason.as_str()) {
                        tracing::warn!(agent = record.name(), "not ready: {reason}");
                    }
                    record.reason = Some(reason);
                }
            }
            Event::LivenessProbed { agent, run, result } => {
                if self.current(agent, run) {
                    self.on_liveness(agent, result, &mut actions);
                }
            }
            Event::DeadlineReached => self.on_deadlines(now, &mut actions),
            Event::ShutdownRequested { force } => self.shutdown(None, force, &mut actions),
            Event::StartRequested { agents } if self.mode == Mode::Running => {
                self.operator_start(&agents)
            }
            Event::StopRequested { agents } if self.mode == Mode::Running => {
                self.operator_stop(&agents, &mut actions)
            }
            Event::RestartRequested {
                agents,
                with_dependents,
            } if self.mode == Mode::Running => {
                self.operator_restart(&agents, with_dependents, &mut actions)
            }
            Event::ReloadRequested(reload) if self.mode == Mode::Running => {
                self.reload(reload, &mut actions)
            }
            Event::ReloadFailed { errors } => self.config_errors = errors,
            Event::ResourcesSampled { samples } => self.on_samples(&samples, now, &mut actions),
            Event::ReportedReady { agent, run } => {
                self.on_reported_ready(agent, run, now, &mut actions)
            }
            Event::HeartbeatReceived {
                agent,
                run,
                payload,
            } => {
                // Changes no state, so there is nothing to progress: the
                // common event stays O(1) with hundreds of agents.
                self.on_heartbeat(agent, run, payload, now);
                return actions;
            }
            Event::ErrorReported {
                agent,
                run,
                severity,
                message,
            } => self.on_error_reported(agent, run, severity, &message, now, &mut actions),
            // Refused by the run loop before they get here.
            Event::StartRequested { .. }
            | Event::StopRequested { .. }
            | Event::RestartRequested { .. }
            | Event::ReloadRequested(_) => {}
        }
        self.progress(now, &mut actions);
        actions
    }

    /// The earliest timer of any agent.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.agents
            .iter()
            .flat_map(|record| {
                [
                    record.ready_deadline,
                    record.start_period_deadline,
                    record.restart_at,
                    record.kill_at,
                ]
            })
            .flatten()
            .chain(self.heartbeat_deadline())
            .min()
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            started: self.started,
            agents: self
                .agents
                .iter()
                .filter(|record| !record.retired)
                .map(|record| AgentStatus {
                    name: record.name().to_string(),
                    group: record.spec.agent.group.clone(),
                    state: record.state,
                    remote: record.spec.remote,
                    required: record.spec.agent.required,
                    pid: record.pid,
                    restarts: record.restarts.total,
                    ready_at: record.first_ready.map(|at| at.duration_since(self.started)),
                    time_to_ready: record.time_to_ready,
                    waiting_on: if record.state == AgentState::Pending {
                        record
                            .dependencies
                            .iter()
                            .filter(|dependency| {
                                self.agents[**dependency].state != AgentState::Ready
                            })
                            .map(|dependency| self.agents[*dependency].name().to_string())
                            .collect()
                    } else {
                        Vec::new()
                    },
                    reason: record.reason.clone(),
                    host: record.spec.agent.host.clone(),
                    running_since: record.pid.and(record.spawned_at),
                    heartbeat_age: record
                        .last_heartbeat
                        .as_ref()
                        .map(|(at, _)| self.last_now.saturating_duration_since(*at)),
                    cpu_percent: record.pid.and(record.cpu_percent),
                    rss_bytes: record.pid.and(record.rss_bytes),
                    restarts_by_cause: record.restart_causes.clone(),
                    held: record.held,
                    heartbeat: record
                        .last_heartbeat
                        .as_ref()
                        .and_then(|(_, payload)| payload.clone()),
                    heartbeat_at: record.last_heartbeat.as_ref().map(|(at, _)| *at),
                    degraded: record.degraded.clone(),
                    ports: record
                        .spec
                        .agent
                        .ports
                        .iter()
                        .map(|port| (port.port, port.field.clone()))
                        .collect(),
                })
                .collect(),
            all_ready_after: self.all_ready_after,
            shutting_down: self.mode != Mode::Running,
            reloads: self.reloads,
            config_errors: self.config_errors.clone(),
            cpu_warnings: self.cpu_warnings,
        }
    }

    fn current(&self, agent: AgentId, run: u64) -> bool {
        self.agents
            .get(agent)
            .is_some_and(|record| record.run == run)
    }

    /// Changes state, enforcing the table of `state.rs`, and drops the timers
    /// that belong to the old state.
    fn transition(&mut self, agent: AgentId, to: AgentState) {
        let record = &mut self.agents[agent];
        let from = record.state;
        if !allowed(from, to) {
            tracing::error!(agent = record.name(), %from, %to, "illegal state transition (bug)");
            debug_assert!(
                false,
                "illegal transition {from:?} -> {to:?} for {}",
                record.spec.agent.name
            );
            return;
        }
        tracing::debug!(agent = record.name(), %from, %to, "transition");
        record.state = to;
        record.ready_deadline = None;
        record.start_period_deadline = None;
        record.restart_at = None;
        if to != AgentState::Stopping {
            record.kill_at = None;
        }
        if matches!(
            to,
            AgentState::Pending
                | AgentState::Blocked
                | AgentState::BackingOff
                | AgentState::Stopped
                | AgentState::Failed
        ) {
            record.stop = None;
        }
    }

    fn start(&mut self, agent: AgentId, now: Instant, actions: &mut Vec<Action>) {
        self.transition(agent, AgentState::Starting);
        let record = &mut self.agents[agent];
        record.run += 1;
        record.last_line = None;
        record.diagnosing = false;
        record.pid = None;
        record.spawned_at = Some(now);
        record.ready_this_run = false;
        record.liveness_failures = 0;
        let run = record.run;
        self.reset_reports(agent);
        let record = &mut self.agents[agent];
        let readiness = record.spec.agent.readiness.clone();
        record.ready_deadline = Some(now + readiness.timeout);
        match (record.spec.remote, run) {
            (true, _) => tracing::info!(agent = record.name(), "probing (on another host)"),
            (false, 1) => tracing::info!(agent = record.name(), "starting"),
            (false, _) => tracing::info!(agent = record.name(), "starting (run {run})"),
        }
        if !record.spec.remote {
            actions.push(Action::Spawn { agent, run });
        }
        match readiness.check {
            ReadinessCheck::Probe(_) => actions.push(Action::WatchReadiness { agent, run }),
            // Nothing to observe on another host without a probe.
            _ if record.spec.remote => self.become_ready(agent, now, actions),
            // Armed by `Spawned`, once the process exists.
            ReadinessCheck::StartPeriod(_) | ReadinessCheck::Sdk => {}
        }
    }

    fn become_ready(&mut self, agent: AgentId, now: Instant, actions: &mut Vec<Action>) {
        self.transition(agent, AgentState::Ready);
        let record = &mut self.agents[agent];
        record.ready_this_run = true;
        record.first_ready.get_or_insert(now);
        let took = now.duration_since(record.spawned_at.unwrap_or(now));
        record.time_to_ready = Some(took);
        tracing::info!(agent = record.name(), "ready in {}", format_duration(took));
        if !record.spec.remote && record.spec.agent.liveness.is_some() {
            actions.push(Action::WatchLiveness {
                agent,
                run: record.run,
            });
        }
    }

    fn on_liveness(
        &mut self,
        agent: AgentId,
        result: Result<(), String>,
        actions: &mut Vec<Action>,
    ) {
        let record = &mut self.agents[agent];
        if record.state != AgentState::Ready || record.stop.is_some() {
            return;
        }
        let Some(liveness) = &record.spec.agent.liveness else {
            return;
        };
        match result {
            Ok(()) => record.liveness_failures = 0,
            Err(error) => {
                record.liveness_failures += 1;
                tracing::warn!(agent = record.name(), failures = record.liveness_failures, %error, "liveness probe failed");
                if record.liveness_failures >= liveness.failures.max(1) {
                    let reason = format!(
                        "hung: liveness probe failed {} times in a row ({error})",
                        record.liveness_failures
                    );
                    record.stop = Some(StopIntent::Restart {
                        reason,
                        cause: "liveness",
                    });
                    actions.push(Action::CancelWatchers { agent });
                }
            }
        }
    }

    fn on_deadlines(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.check_heartbeats(now, actions);
        for agent in 0..self.agents.len() {
            let record = &mut self.agents[agent];
            let due = |deadline: Option<Instant>| deadline.is_some_and(|at| at <= now);
            match record.state {
                AgentState::Starting if record.stop.is_none() && due(record.ready_deadline) => {
                    let reason = format!(
                        "not ready within {}",
                        format_duration(record.spec.agent.readiness.timeout)
                    );
                    record.ready_deadline = None;
                    actions.push(Action::CancelWatchers { agent });
                    if record.spec.remote {
                        self.fail(agent, reason, actions);
                    } else if let (Some(pid), false, ReadinessCheck::Probe(_)) = (
                        record.pid,
                        record.diagnosing,
                        &record.spec.agent.readiness.check,
                    ) {
                        // Say what it listens on before it is killed; if the
                        // answer does not come, it is killed anyway.
                        record.diagnosing = true;
                        record.ready_deadline = Some(now + DIAGNOSIS_WAIT);
                        actions.push(Action::Diagnose {
                            agent,
                            run: record.run,
                            pid,
                        });
                    } else {
                        record.diagnosing = false;
                        // Killed and tried again under its restart policy
                        // (model-loading agents may miss a first deadline).
                        record.stop = Some(StopIntent::Restart {
                            reason,
                            cause: "readiness",
                        });
                    }
                }
                AgentState::Starting
                    if record.stop.is_none() && due(record.start_period_deadline) =>
                {
                    self.become_ready(agent, now, actions);
                }
                AgentState::BackingOff if due(record.restart_at) => {
                    if self.dependencies_ready(agent) {
                        self.start(agent, now, actions);
                    } else {
                        self.transition(agent, AgentState::Pending);
                    }
                }
                AgentState::Stopping if due(record.kill_at) => {
                    record.kill_at = None;
                    if let Some(pid) = record.pid {
                        tracing::warn!(
                            agent = record.name(),
                            "did not stop within its grace; sending SIGKILL"
                        );
                        actions.push(Action::Signal {
                            agent,
                            run: record.run,
                            pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                }
                _ => {}
            }
        }
    }

    fn on_exit(
        &mut self,
        agent: AgentId,
        termination: Termination,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let record = &mut self.agents[agent];
        record.heartbeat = None;
        record.pid = None;
        record.cpu_percent = None;
        record.rss_bytes = None;
        record.memory_over_since = None;
        actions.push(Action::CancelWatchers { agent });
        let intent = record.stop.take();
        tracing::info!(agent = record.name(), "{termination}");
        match intent {
            Some(StopIntent::Shutdown) => {
                record.reason = Some(format!("{termination} (stopped)"));
                self.transition(agent, AgentState::Stopped);
            }
            Some(StopIntent::Requeue) if self.mode == Mode::Running => {
                record.reason = Some(format!("{termination} (restarted with a dependency)"));
                record.count_restart("dependency");
                self.transition(agent, AgentState::Pending);
            }
            Some(StopIntent::Replace { reason, cause, .. }) if self.mode == Mode::Running => {
                record.reason = Some(reason);
                record.count_restart(cause);
                self.transition(agent, AgentState::Pending);
            }
            Some(StopIntent::Requeue | StopIntent::Replace { .. }) => {
                self.transition(agent, AgentState::Stopped)
            }
            Some(StopIntent::Operator) => {
                record.reason = Some(format!("stopped by operator ({termination})"));
                self.transition(agent, AgentState::Stopped);
            }
            Some(StopIntent::Retire) => {
                record.reason = Some(format!("removed by reload ({termination})"));
                self.transition(agent, AgentState::Stopped);
            }
            Some(StopIntent::Restart { reason, cause }) => {
                self.decide_restart(agent, termination, true, reason, cause, now, actions)
            }
            None => {
                let cause = match termination {
                    Termination::Code(_) => "exit",
                    _ => "signal",
                };
                // With its last words: `exited with code 1: No module named 'x'`.
                let reason = match self.agents[agent].last_line.take() {
                    Some(line) => format!("{termination}: {line}"),
                    None => termination.to_string(),
                };
                self.decide_restart(agent, termination, false, reason, cause, now, actions)
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // the exit's facts, passed through from on_exit
    fn decide_restart(
        &mut self,
        agent: AgentId,
        termination: Termination,
        failed: bool,
        reason: String,
        cause: &'static str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.mode != Mode::Running {
            self.transition(agent, AgentState::Stopped);
            return;
        }
        let jitter = self.jitter.sample();
        let record = &mut self.agents[agent];
        let uptime = now.duration_since(record.spawned_at.unwrap_or(now));
        let policy = record.spec.agent.restart.clone();
        match record
            .restarts
            .on_exit(&policy, termination, failed, uptime, now, jitter)
        {
            // Not ready in time and not to be restarted: it cannot run.
            Decision::Done if cause == "readiness" => self.fail(agent, reason, actions),
            Decision::Done => {
                tracing::info!(
                    agent = record.name(),
                    "{reason}; not restarted (restart policy)"
                );
                record.reason = Some(reason);
                self.transition(agent, AgentState::Stopped);
            }
            Decision::Restart { delay } => {
                tracing::warn!(
                    agent = record.name(),
                    "{reason}; restarting in {}",
                    format_duration(delay)
                );
                record.reason = Some(reason);
                record.count_restart(cause);
                self.transition(agent, AgentState::BackingOff);
                self.agents[agent].restart_at = Some(now + delay);
                self.apply_strategy(agent);
            }
            // The policy's words, with the exit told as ours: why it was
            // killed, or what it said last.
            Decision::GiveUp { reason: given } => {
                let reason = given.replacen(&termination.to_string(), &reason, 1);
                self.fail(agent, reason, actions)
            }
        }
    }

    /// What a restart of `agent` does to the others.
    fn apply_strategy(&mut self, agent: AgentId) {
        let affected: Vec<AgentId> = match self.strategy {
            Strategy::OneForOne => {
                for dependent in &self.agents[agent].dependents {
                    let record = &self.agents[*dependent];
                    if record.alive() {
                        tracing::warn!(
                            agent = record.name(),
                            "dependency `{}` is down",
                            self.agents[agent].name()
                        );
                    }
                }
                Vec::new()
            }
            Strategy::RestForOne => self.transitive_dependents(agent),
            Strategy::OneForAll => (0..self.agents.len())
                .filter(|other| *other != agent)
                .collect(),
        };
        for other in affected {
            let record = &mut self.agents[other];
            if matches!(record.state, AgentState::Starting | AgentState::Ready)
                && record.stop.is_none()
            {
                record.stop = Some(StopIntent::Requeue);
            }
        }
    }

    fn transitive_dependents(&self, agent: AgentId) -> Vec<AgentId> {
        let mut found = vec![false; self.agents.len()];
        let mut stack = vec![agent];
        while let Some(next) = stack.pop() {
            for dependent in &self.agents[next].dependents {
                if !found[*dependent] {
                    found[*dependent] = true;
                    stack.push(*dependent);
                }
            }
        }
        (0..self.agents.len()).filter(|id| found[*id]).collect()
    }

    fn fail(&mut self, agent: AgentId, reason: String, actions: &mut Vec<Action>) {
        self.transition(agent, AgentState::Failed);
        let record = &mut self.agents[agent];
        record.reason = Some(reason.clone());
        let required =
            record.spec.agent.required && record.spec.agent.restart.on_give_up == GiveUp::Shutdown;
        if required && self.keep_going {
            tracing::error!(
                agent = record.name(),
                "required agent failed: {reason}; the others keep running (--keep-going)"
            );
        } else if required && self.mode == Mode::Running {
            tracing::error!(
                agent = record.name(),
                "required agent failed: {reason}; stopping everything"
            );
            let failure = Failure {
                agent: record.name().to_string(),
                reason,
            };
            self.shutdown(Some(failure), false, actions);
        } else {
            tracing::error!(
                agent = record.name(),
                "agent failed: {reason}; its dependents will not start"
            );
        }
    }

    fn shutdown(&mut self, failure: Option<Failure>, force: bool, actions: &mut Vec<Action>) {
        if self.failure.is_none() {
            self.failure = failure;
        }
        if let Mode::ShuttingDown { forced } = self.mode {
            if force && !forced {
                self.mode = Mode::ShuttingDown { forced: true };
                tracing::warn!("second stop request: killing every agent now");
                for (agent, record) in self.agents.iter_mut().enumerate() {
                    if let (AgentState::Stopping, Some(pid)) = (record.state, record.pid) {
                        record.kill_at = None;
                        actions.push(Action::Signal {
                            agent,
                            run: record.run,
                            pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                }
            }
            return;
        }
        self.mode = Mode::ShuttingDown { forced: force };
        for agent in 0..self.agents.len() {
            let record = &mut self.agents[agent];
            match record.state {
                AgentState::Pending | AgentState::Blocked | AgentState::BackingOff => {
                    self.transition(agent, AgentState::Stopped);
                }
                AgentState::Starting | AgentState::Ready if record.spec.remote => {
                    actions.push(Action::CancelWatchers { agent });
                    self.transition(agent, AgentState::Stopped);
                }
                AgentState::Starting | AgentState::Ready | AgentState::Stopping => {
                    actions.push(Action::CancelWatchers { agent });
                    record.stop = Some(StopIntent::Shutdown);
                    if force
                        && record.state == AgentState::Stopping
                        && let Some(pid) = record.pid
                    {
                        record.kill_at = None;
                        actions.push(Action::Signal {
                            agent,
                            run: record.run,
                            pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                }
                AgentState::Stopped | AgentState::Failed => {}
            }
        }
    }

    /// `roots` and everything reachable through `next` (dependencies or
    /// dependents), in start order.
    fn closure(&self, roots: &[AgentId], next: impl Fn(&Record) -> &Vec<AgentId>) -> Vec<AgentId> {
        let mut found = vec![false; self.agents.len()];
        let mut stack = roots.to_vec();
        for root in roots {
            found[*root] = true;
        }
        while let Some(agent) = stack.pop() {
            for other in next(&self.agents[agent]) {
                if !found[*other] {
                    found[*other] = true;
                    stack.push(*other);
                }
            }
        }
        self.order
            .iter()
            .copied()
            .filter(|agent| found[*agent])
            .collect()
    }

    /// What `StartRequested` for `agents` starts, in dependency order: the
    /// agents, the dependencies they need, and the dependents that were
    /// stopped only because of them (and need nothing else that is held).
    pub fn start_targets(&self, agents: &[AgentId]) -> Vec<AgentId> {
        let mut chosen = vec![false; self.agents.len()];
        for agent in self.closure(agents, |record| &record.dependencies) {
            chosen[agent] = true;
        }
        for agent in self.closure(agents, |record| &record.dependents) {
            let record = &self.agents[agent];
            if !chosen[agent]
                && record.held_for_dependency
                && record
                    .dependencies
                    .iter()
                    .all(|dependency| chosen[*dependency] || !self.agents[*dependency].held)
            {
                chosen[agent] = true;
            }
        }
        self.order
            .iter()
            .copied()
            .filter(|agent| chosen[*agent])
            .collect()
    }

    /// What `StopRequested` for `agents` stops: they and every agent that
    /// depends on them, in dependency order.
    pub fn stop_targets(&self, agents: &[AgentId]) -> Vec<AgentId> {
        self.closure(agents, |record| &record.dependents)
    }

    /// What `RestartRequested` replaces: the agents (and with
    /// `with_dependents` every agent depending on them), in dependency order.
    pub fn restart_targets(&self, agents: &[AgentId], with_dependents: bool) -> Vec<AgentId> {
        match with_dependents {
            true => self.closure(agents, |record| &record.dependents),
            false => self.closure(agents, |_| &NO_AGENTS),
        }
    }

    /// `StartRequested`: the [`Self::start_targets`] go back to `Pending`
    /// (from `Stopped`, `Failed` or `Blocked`, with a fresh restart budget)
    /// and start in dependency order; dependents that were blocked for want
    /// of them are unblocked.
    fn operator_start(&mut self, agents: &[AgentId]) {
        for agent in self.start_targets(agents) {
            let record = &mut self.agents[agent];
            record.held = false;
            record.held_for_dependency = false;
            match record.state {
                AgentState::Stopped | AgentState::Failed | AgentState::Blocked => {
                    record.restarts.forgive();
                    record.reason = Some("started by operator".into());
                    self.transition(agent, AgentState::Pending);
                }
                AgentState::Stopping if record.stop == Some(StopIntent::Operator) => {
                    record.stop = Some(StopIntent::Replace {
                        reason: "started by operator".into(),
                        cause: "operator",
                        after_dependents: false,
                    });
                }
                _ => {}
            }
        }
        for agent in self.closure(agents, |record| &record.dependents) {
            let record = &mut self.agents[agent];
            if record.state == AgentState::Blocked && !record.held {
                record.reason = None;
                self.transition(agent, AgentState::Pending);
            }
        }
    }

    /// `StopRequested`: the [`Self::stop_targets`] stop (dependents first)
    /// and are held until started again.
    fn operator_stop(&mut self, agents: &[AgentId], actions: &mut Vec<Action>) {
        for agent in self.stop_targets(agents) {
            let record = &mut self.agents[agent];
            if !record.held {
                record.held_for_dependency = !agents.contains(&agent);
            } else if agents.contains(&agent) {
                record.held_for_dependency = false;
            }
            record.held = true;
            match record.state {
                AgentState::Pending | AgentState::Blocked | AgentState::BackingOff => {
                    record.reason = Some("stopped by operator".into());
                    self.transition(agent, AgentState::Stopped);
                }
                AgentState::Starting | AgentState::Ready if record.spec.remote => {
                    actions.push(Action::CancelWatchers { agent });
                    record.reason = Some("stopped by operator".into());
                    self.transition(agent, AgentState::Stopped);
                }
                AgentState::Starting | AgentState::Ready | AgentState::Stopping => {
                    actions.push(Action::CancelWatchers { agent });
                    record.stop = Some(StopIntent::Operator);
                }
                AgentState::Stopped | AgentState::Failed => {}
            }
        }
    }

    /// `RestartRequested`: running agents are stopped and go back to
    /// `Pending`; agents that are not running are started.
    fn operator_restart(
        &mut self,
        agents: &[AgentId],
        with_dependents: bool,
        actions: &mut Vec<Action>,
    ) {
        let targets = self.restart_targets(agents, with_dependents);
        for agent in targets {
            let record = &mut self.agents[agent];
            record.held = false;
            record.held_for_dependency = false;
            let replace = StopIntent::Replace {
                reason: "restarted by operator".into(),
                cause: "operator",
                after_dependents: with_dependents,
            };
            match record.state {
                AgentState::Starting | AgentState::Ready if record.spec.remote => {}
                AgentState::Starting | AgentState::Ready => {
                    actions.push(Action::CancelWatchers { agent });
                    record.stop = Some(replace);
                }
                AgentState::Stopping if record.stop == Some(StopIntent::Operator) => {
                    record.stop = Some(replace);
                }
                AgentState::BackingOff => self.transition(agent, AgentState::Pending),
                AgentState::Stopped | AgentState::Failed | AgentState::Blocked => {
                    record.restarts.forgive();
                    record.reason = Some("started by operator".into());
                    self.transition(agent, AgentState::Pending);
                }
                AgentState::Pending | AgentState::Stopping => {}
            }
        }
        self.operator_start(agents);
    }

    /// `ReloadRequested`: applies the difference (see the module doc).
    fn reload(&mut self, reload: Reload, actions: &mut Vec<Action>) {
        let summary = self.reload_summary(&reload);
        tracing::info!("reloading: {summary}");
        self.strategy = reload.strategy;
        for agent in 0..self.agents.len() {
            if self.agents[agent].retired {
                continue;
            }
            let name = self.agents[agent].name().to_string();
            match reload.agents.iter().find(|spec| spec.agent.name == name) {
                None => self.retire(agent, actions),
                Some(spec) if definition(spec) != definition(&self.agents[agent].spec) => {
                    self.agents[agent].spec = spec.clone();
                    self.replace_changed(agent, actions);
                }
                Some(spec) => self.agents[agent].spec = spec.clone(),
            }
        }
        for spec in reload.agents.iter() {
            if self.id(&spec.agent.name).is_none() {
                self.agents.push(Record::new(spec.clone()));
            }
        }
        self.relink();
        self.reloads += 1;
        self.config_errors.clear();
    }

    /// A removed agent: stopped (dependents first) and hidden for good.
    fn retire(&mut self, agent: AgentId, actions: &mut Vec<Action>) {
        let record = &mut self.agents[agent];
        record.retired = true;
        record.held = false;
        match record.state {
            AgentState::Pending | AgentState::Blocked | AgentState::BackingOff => {
                self.transition(agent, AgentState::Stopped)
            }
            AgentState::Starting | AgentState::Ready if record.spec.remote => {
                actions.push(Action::CancelWatchers { agent });
                self.transition(agent, AgentState::Stopped);
            }
            AgentState::Starting | AgentState::Ready | AgentState::Stopping => {
                actions.push(Action::CancelWatchers { agent });
                record.stop = Some(StopIntent::Retire);
            }
            AgentState::Stopped | AgentState::Failed => {}
        }
    }

    /// An agent whose definition changed: restarted with the new one, alone.
    /// Agents an operator stopped stay stopped.
    fn replace_changed(&mut self, agent: AgentId, actions: &mut Vec<Action>) {
        let record = &mut self.agents[agent];
        let replace = StopIntent::Replace {
            reason: "definition changed (reload)".into(),
            cause: "reload",
            after_dependents: false,
        };
        match record.state {
            AgentState::Starting | AgentState::Ready if record.spec.remote => {
                actions.push(Action::CancelWatchers { agent });
                self.transition(agent, AgentState::Stopped);
                self.transition(agent, AgentState::Pending);
            }
            AgentState::Starting | AgentState::Ready => {
                actions.push(Action::CancelWatchers { agent });
                record.stop = Some(replace);
            }
            AgentState::Stopping if record.stop != Some(StopIntent::Operator) => {
                record.stop = Some(replace);
            }
            AgentState::BackingOff | AgentState::Blocked | AgentState::Failed => {
                record.restarts.forgive();
                self.transition(agent, AgentState::Pending);
            }
            AgentState::Stopped if !record.held => self.transition(agent, AgentState::Pending),
            AgentState::Stopped | AgentState::Stopping | AgentState::Pending => {}
        }
    }

    /// `ResourcesSampled`: records the figures and enforces the limits.
    fn on_samples(&mut self, samples: &[ResourceSample], now: Instant, actions: &mut Vec<Action>) {
        let by_pid: HashMap<u32, AgentId> = self
            .agents
            .iter()
            .enumerate()
            .filter_map(|(agent, record)| Some((record.pid?, agent)))
            .collect();
        for sample in samples {
            let Some(&agent) = by_pid.get(&sample.pid) else {
                continue;
            };
            let record = &mut self.agents[agent];
            if let Some(cpu_percent) = sample.cpu_percent {
                record.cpu_percent = Some(cpu_percent);
            }
            record.rss_bytes = Some(sample.rss_bytes);
            let Some(limits) = record.spec.agent.limits.clone() else {
                continue;
            };
            if !matches!(record.state, AgentState::Starting | AgentState::Ready)
                || record.stop.is_some()
            {
                continue;
            }
            match limits.memory_bytes {
                Some(limit) if sample.rss_bytes > limit => {
                    let since = *record.memory_over_since.get_or_insert(now);
                    let over = now.duration_since(since);
                    if over >= limits.grace {
                        const MIB: u64 = 1024 * 1024;
                        let reason = format!(
                            "memory {} MiB above the limit of {} MiB for {}",
                            sample.rss_bytes / MIB,
                            limit / MIB,
                            format_duration(over)
                        );
                        tracing::warn!(agent = record.name(), "{reason}; restarting");
                        record.stop = Some(StopIntent::Restart {
                            reason,
                            cause: "memory",
                        });
                        actions.push(Action::CancelWatchers { agent });
                    }
                }
                _ => record.memory_over_since = None,
            }
            if let Some(limit) = limits.cpu_percent
                && let Some(cpu_percent) = sample.cpu_percent
                && cpu_percent > limit
                && record
                    .cpu_warned_at
                    .is_none_or(|at| now.duration_since(at) >= CPU_WARNING_EVERY)
            {
                record.cpu_warned_at = Some(now);
                self.cpu_warnings += 1;
                tracing::warn!(
                    agent = record.name(),
                    cpu_percent,
                    limit,
                    "CPU {cpu_percent:.0}% above the limit of {limit:.0}%"
                );
            }
        }
    }

    /// Every dependency is ready and not about to be stopped.
    fn dependencies_ready(&self, agent: AgentId) -> bool {
        self.agents[agent].dependencies.iter().all(|dependency| {
            let record = &self.agents[*dependency];
            record.state == AgentState::Ready && record.stop.is_none()
        })
    }

    /// Everything that follows from the current states: block, start, stop,
    /// detect all-ready and the end.
    fn progress(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.mode == Mode::Running {
            for index in 0..self.order.len() {
                let agent = self.order[index];
                if self.agents[agent].state != AgentState::Pending {
                    continue;
                }
                let blocker = self.agents[agent]
                    .dependencies
                    .iter()
                    .copied()
                    .find(|dependency| {
                        matches!(
                            self.agents[*dependency].state,
                            AgentState::Failed | AgentState::Blocked | AgentState::Stopped
                        )
                    });
                if let Some(blocker) = blocker {
                    let reason = format!(
                        "dependency `{}` is {}",
                        self.agents[blocker].name(),
                        self.agents[blocker].state
                    );
                    tracing::warn!(agent = self.agents[agent].name(), "not started: {reason}");
                    self.agents[agent].reason = Some(reason);
                    self.transition(agent, AgentState::Blocked);
                }
            }
            for index in 0..self.order.len() {
                let agent = self.order[index];
                if self.sequential
                    && self
                        .agents
                        .iter()
                        .any(|record| record.state == AgentState::Starting)
                {
                    break;
                }
                if self.agents[agent].state == AgentState::Pending && self.dependencies_ready(agent)
                {
                    self.start(agent, now, actions);
                }
            }
        }
        self.stop_wave(now, actions);
        if self.all_ready_after.is_none() && self.mode == Mode::Running {
            let settled = self.agents.iter().all(|record| {
                record.retired
                    || record.first_ready.is_some()
                    || matches!(
                        record.state,
                        AgentState::Failed | AgentState::Blocked | AgentState::Stopped
                    )
            });
            if settled {
                self.all_ready_after = Some(now.duration_since(self.started));
            }
        }
        let done = match self.mode {
            Mode::ShuttingDown { .. } => self.agents.iter().all(|record| record.state.is_final()),
            // Agents held by an operator wait for the operator.
            Mode::Running => self.agents.iter().all(|record| {
                !record.held
                    && matches!(
                        record.state,
                        AgentState::Stopped | AgentState::Failed | AgentState::Blocked
                    )
            }),
        };
        if done && !self.finished {
            self.finished = true;
            actions.push(Action::Exit(Outcome {
                failure: self.failure.clone(),
            }));
        }
    }

    /// Signals every agent whose stop is due, dependents before dependencies.
    fn stop_wave(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let forced = self.mode == Mode::ShuttingDown { forced: true };
        for index in (0..self.order.len()).rev() {
            let agent = self.order[index];
            let record = &self.agents[agent];
            let Some(intent) = &record.stop else { continue };
            if !matches!(record.state, AgentState::Starting | AgentState::Ready) {
                continue;
            }
            if record.spec.remote {
                self.transition(agent, AgentState::Stopped);
                continue;
            }
            // A spawn in flight: signalled once its pid is known.
            let Some(pid) = record.pid else { continue };
            if intent.waits_for_dependents()
                && record
                    .dependents
                    .iter()
                    .any(|dependent| self.agents[*dependent].alive())
            {
                continue;
            }
            let (signal, kill_at) = match intent {
                _ if forced => (Signal::SIGKILL, None),
                StopIntent::Restart { .. } => (Signal::SIGKILL, None),
                _ => (
                    record.spec.agent.stop.signal,
                    Some(now + record.spec.agent.stop.grace),
                ),
            };
            tracing::info!(agent = record.name(), "stopping with {}", signal.as_str());
            let run = record.run;
            self.transition(agent, AgentState::Stopping);
            self.agents[agent].kill_at = kill_at;
            actions.push(Action::CancelWatchers { agent });
            actions.push(Action::Signal {
                agent,
                run,
                pid,
                signal,
            });
        }
    }
}

static NO_AGENTS: Vec<AgentId> = Vec::new();

/// An agent's definition without where it was written: a reload restarts an
/// agent only when this differs (moving an entry in the file is no change).
fn definition(spec: &AgentSpec) -> (Agent, bool) {
    let mut agent = spec.agent.clone();
    agent.location = Default::default();
    for dependency in &mut agent.dependencies {
        dependency.location = Default::default();
    }
    for port in &mut agent.ports {
        port.location = Default::default();
        port.span = None;
    }
    if let Some(script) = &mut agent.script {
        script.location = Default::default();
    }
    (agent, spec.remote)
}

/// Dependencies first; ties keep table order. Agents in a cycle (refused by
/// `check` before we get here) are appended at the end.
fn start_order(dependencies: &[Vec<AgentId>]) -> Vec<AgentId> {
    let mut placed = vec![false; dependencies.len()];
    let mut order = Vec::with_capacity(dependencies.len());
    loop {
        let before = order.len();
        for (agent, list) in dependencies.iter().enumerate() {
            if !placed[agent] && list.iter().all(|dependency| placed[*dependency]) {
                placed[agent] = true;
                order.push(agent);
            }
        }
        if order.len() == before {
            break;
        }
    }
    order.extend((0..dependencies.len()).filter(|agent| !placed[*agent]));
    order
}

/// `250ms`, `1.50s`.
pub fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.2}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::{
        Backoff, Dependency, Heartbeat, Liveness, Location, Probe, Readiness, RestartMode,
        RestartPolicy, StopPolicy,
    };

    pub fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// An agent with default settings: ready 100 ms after start, restart
    /// always with 100 ms x2 backoff, SIGTERM with 1 s grace.
    pub fn agent(name: &str, dependencies: &[&str]) -> Agent {
        Agent {
            name: name.to_string(),
            location: Location::default(),
            host: "localhost".into(),
            address: "127.0.0.1".into(),
            command: vec!["true".into()],
            shell: false,
            cwd: None,
            env: Default::default(),
            port: None,
            health_check_port: None,
            ports: Vec::new(),
            dependencies: dependencies
                .iter()
                .map(|name| Dependency {
                    name: name.to_string(),
                    location: Location::default(),
                })
                .collect(),
            required: true,
            enabled: true,
            readiness: Readiness {
                check: ReadinessCheck::StartPeriod(ms(100)),
                timeout: Duration::from_secs(30),
                interval: ms(100),
                initial_delay: Duration::ZERO,
            },
            liveness: None,
            restart: RestartPolicy {
                mode: RestartMode::Always,
                backoff: Backoff {
                    initial: ms(100),
                    max: Duration::from_secs(30),
                    multiplier: 2.0,
                },
                max_restarts: Some(5),
                within: Duration::from_secs(60),
                reset_after: Duration::from_secs(10),
                success_codes: vec![0],
                on_give_up: GiveUp::Shutdown,
            },
            heartbeat: Heartbeat {
                interval: Duration::from_secs(5),
                misses: 3,
                progress_timeout: None,
            },
            stop: StopPolicy {
                signal: Signal::SIGTERM,
                grace: Duration::from_secs(1),
            },
            limits: None,
            on_error: Default::default(),
            config: Default::default(),
            extra: Default::default(),
            legacy: false,
            group: None,
            script: None,
        }
    }

    fn local(agents: Vec<Agent>) -> Vec<AgentSpec> {
        agents
            .into_iter()
            .map(|agent| AgentSpec {
                agent,
                remote: false,
            })
            .collect()
    }

    /// Drives a lifecycle by hand: spawns get pids 1000+agent, signals are recorded.
    struct Driver {
        lifecycle: Lifecycle,
        now: Instant,
        log: Vec<Action>,
    }

    impl Driver {
        fn new(agents: Vec<Agent>, strategy: Strategy) -> Driver {
            let now = Instant::now();
            let mut lifecycle = Lifecycle::new(local(agents), strategy, false, now, Jitter::new(7));
            let actions = lifecycle.begin(now);
            let mut driver = Driver {
                lifecycle,
                now,
                log: Vec::new(),
            };
            driver.perform(actions);
            driver
        }

        fn id(&self, name: &str) -> AgentId {
            self.lifecycle.id(name).unwrap()
        }

        fn state(&self, name: &str) -> AgentState {
            self.lifecycle.state(self.id(name))
        }

        fn perform(&mut self, actions: Vec<Action>) {
            for action in actions {
                self.log.push(action.clone());
                if let Action::Spawn { agent, run } = action {
                    let more = self.lifecycle.apply(
                        Event::Spawned {
                            agent,
                            run,
                            pid: 1000 + agent as u32,
                        },
                        self.now,
                    );
                    self.perform(more);
                }
            }
        }

        fn send(&mut self, event: Event) {
            let actions = self.lifecycle.apply(event, self.now);
            self.perform(actions);
        }

        /// Moves the clock forward, firing each deadline at its own time.
        fn advance(&mut self, by: Duration) {
            let end = self.now + by;
            while let Some(at) = self.lifecycle.next_deadline().filter(|at| *at <= end) {
                self.now = at.max(self.now);
                self.send(Event::DeadlineReached);
            }
            self.now = end;
        }

        fn exit(&mut self, name: &str, termination: Termination) {
            let agent = self.id(name);
            let run = self.lifecycle.agents[agent].run;
            self.send(Event::Exited {
                agent,
                run,
                termination,
            });
        }

        fn take_log(&mut self) -> Vec<Action> {
            std::mem::take(&mut self.log)
        }

        fn signalled(&mut self) -> Vec<(String, Signal)> {
            self.take_log()
                .into_iter()
                .filter_map(|action| match action {
                    Action::Signal { agent, signal, .. } => {
                        Some((self.lifecycle.spec(agent).agent.name.clone(), signal))
                    }
                    _ => None,
                })
                .collect()
        }

        fn spawned(&mut self) -> Vec<String> {
            self.take_log()
                .into_iter()
                .filter_map(|action| match action {
                    Action::Spawn { agent, .. } => {
                        Some(self.lifecycle.spec(agent).agent.name.clone())
                    }
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn agents_start_as_soon_as_their_own_dependencies_are_ready() {
        let mut slow = agent("slow", &[]);
        slow.readiness.check = ReadinessCheck::StartPeriod(Duration::from_secs(5));
        let agents = vec![
            agent("db", &[]),
            slow,
            agent("api", &["db"]),
            agent("ui", &["api", "slow"]),
        ];
        let mut driver = Driver::new(agents, Strategy::OneForOne);
        assert_eq!(driver.spawned(), ["db", "slow"]);
        driver.advance(ms(100));
        // api does not wait for `slow`, which is in the same level as db.
        assert_eq!(driver.spawned(), ["api"]);
        driver.advance(ms(100));
        assert_eq!(driver.state("api"), AgentState::Ready);
        assert_eq!(driver.spawned(), Vec::<String>::new());
        driver.advance(Duration::from_secs(5));
        assert_eq!(driver.spawned(), ["ui"]);
        driver.advance(ms(100));
        assert!(driver.lifecycle.snapshot().all_ready_after.is_some());
    }

    #[test]
    fn sequential_mode_starts_one_agent_at_a_time() {
        let now = Instant::now();
        let agents = local(vec![agent("a", &[]), agent("b", &[]), agent("c", &[])]);
        let mut lifecycle = Lifecycle::new(agents, Strategy::OneForOne, true, now, Jitter::new(1));
        let actions = lifecycle.begin(now);
        assert_eq!(
            actions
                .iter()
                .filter(|action| matches!(action, Action::Spawn { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn shutdown_stops_dependents_first_and_kills_after_the_grace() {
        let agents = vec![
            agent("db", &[]),
            agent("api", &["db"]),
            agent("ui", &["api"]),
            agent("free", &[]),
        ];
        let mut driver = Driver::new(agents, Strategy::OneForOne);
        driver.advance(ms(300));
        driver.take_log();
        driver.send(Event::ShutdownRequested { force: false });
        assert_eq!(
            driver.signalled(),
            [
                ("free".into(), Signal::SIGTERM),
                ("ui".into(), Signal::SIGTERM)
            ]
        );
        driver.exit("free", Termination::Signaled(15));
        driver.exit("ui", Termination::Signaled(15));
        assert_eq!(driver.signalled(), [("api".into(), Signal::SIGTERM)]);
        // api ignores SIGTERM: SIGKILL after its grace.
        driver.advance(Duration::from_secs(1));
        assert_eq!(driver.signalled(), [("api".into(), Signal::SIGKILL)]);
        driver.exit("api", Termination::Signaled(9));
        assert_eq!(driver.signalled(), [("db".into(), Signal::SIGTERM)]);
        driver.exit("db", Termination::Code(0));
        let log = driver.take_log();
        assert_eq!(log.last(), Some(&Action::Exit(Outcome::default())));
    }

    #[test]
    fn a_second_stop_request_kills_at_once() {
        let agents = vec![agent("db", &[]), agent("api", &["db"])];
        let mut driver = Driver::new(agents, Strategy::OneForOne);
        driver.advance(ms(300));
        driver.send(Event::ShutdownRequested { force: false });
        driver.take_log();
        driver.send(Event::ShutdownRequested { force: true });
        assert_eq!(driver.signalled(), [("api".into(), Signal::SIGKILL)]);
        driver.exit("api", Termination::Signaled(9));
        assert_eq!(driver.signalled(), [("db".into(), Signal::SIGKILL)]);
    }

    #[test]
    fn a_required_agent_that_is_never_ready_fails_the_run() {
        let mut db = agent("db", &[]);
        db.readiness.check = ReadinessCheck::Probe(Probe::Tcp {
            host: "127.0.0.1".into(),
            port: 1,
        });
        db.readiness.timeout = Duration::from_secs(2);
        // Not retried: the readiness miss fails it at once.
        db.restart.mode = RestartMode::Never;
        let agents = vec![db, agent("api", &["db"])];
        let mut driver = Driver::new(agents, Strategy::OneForOne);
        driver.advance(Duration::from_secs(2));
        // The deadline first asks what the process listens on.
        let run = driver.lifecycle.agents[driver.id("db")].run;
        assert!(
            driver
                .take_log()
                .iter()
                .any(|action| matches!(action, Action::Diagnose { run: r, .. } if *r == run)),
            "a diagnosis is asked for"
        );
        driver.send(Event::Diagnosed {
            agent: driver.id("db"),
            run,
            text: "nothing of the agent listens on 1".into(),
        });
        assert_eq!(driver.signalled(), [("db".into(), Signal::SIGKILL)]);
        driver.exit("db", Termination::Signaled(9));
        assert_eq!(driver.state("db"), AgentState::Failed);
        assert_eq!(driver.state("api"), AgentState::Stopped);
        let Some(Action::Exit(outcome)) = driver.take_log().pop() else {
            panic!("no exit")
        };
        let failure = outcome.failure.expect("a failure");
        assert_eq!(failure.agent, "db");
        assert!(
            failure
                .reason
                .contains("not ready within 2.00s: nothing of the agent listens on 1"),
            "{}",
            failure.reason
        );
    }

    #[test]
    fn moving_an_entry_in_the_file_is_no_change_but_editing_it_is() {
        let spec = |line: usize, args: &[&str]| {
            let mut agent = agent("a", &[]);
            agent.location.line = line;
            agent.script = Some(crate::manifest::Script {
                path: "a.py".into(),
                location: crate::manifest::Location {
                    line: line + 1,
                    ..Default::default()
                },
            });
            agent.command.extend(args.iter().map(|arg| arg.to_string()));
            AgentSpec {
                agent,
                remote: false,
            }
        };
        assert_eq!(definition(&spec(3, &[])), definition(&spec(30, &[])));
        assert_ne!(
            definition(&spec(3, &[])),
            definition(&spec(3, &["--debug"]))
        );
    }

    #[test]
    fn a_missed_readiness_deadline_is_retried_under_the_restart_policy() {
        let mut slow = agent("slow", &[]);
        slow.readiness.check = ReadinessCheck::Probe(Probe::Tcp {
            host: "127.0.0.1".into(),
            port: 1,
        });
        slow.readiness.timeout = Duration::from_secs(2);
        let mut driver = Driver::new(vec![slow], Strategy::OneForOne);
        driver.advance(Duration::from_secs(2));
        driver.take_log();
        // No diagnosis comes: it is killed after the wait anyway.
        driver.advance(DIAGNOSIS_WAIT);
        assert_eq!(driver.signalled(), [("slow".into(), Signal::SIGKILL)]);
        driver.exit("slow", Termination::Signaled(9));
        assert_eq!(driver.state("slow"), AgentState::BackingOff);
        driver.advance(Duration::from_secs(1));
        assert_eq!(driver.spawned(), ["slow"], "started again");
    }

    #[test]
    fn an_optional_agent_failing_blocks_its_dependents_only() {
        let mut flaky = agent("flaky", &[]);
        flaky.required = false;
        flaky.restart.mode = RestartMode::Never;
        let agents = vec![flaky, agent("user", &["flaky"]), agent("other", &[])];
        let mut driver = Driver::new(agents, Strategy::OneForOne);
        driver.exit("flaky", Termination::Code(3));
        assert_eq!(driver.state("flaky"), AgentState::Failed);
        assert_eq!(driver.state("user"), AgentState::Blocked);
        driver.advance(ms(100));
        assert_eq!(driver.state("other"), AgentState::Ready);
        assert!(!driver.lifecycle.snapshot().shutting_down);
    }

    #[test]
    fn restarts_back_off_until_the_intensity_limit() {
        let mut crashy = agent("crashy", &[]);
        crashy.restart.max_restarts = Some(2);
        let mut driver = Driver::new(vec![crashy], Strategy::OneForOne);
        for attempt in 0..2 {
            driver.exit("crashy", Termination::Code(1));
            assert_eq!(driver.state("crashy"), AgentState::BackingOff);
            // Delays of 100 ms, then 200 ms, +-20%.
            driver.advance(ms(125 << attempt));
            assert_eq!(driver.state("crashy"), AgentState::Starting);
        }
        driver.exit("crashy", Termination::Code(1));
        assert_eq!(driver.state("crashy"), AgentState::Failed);
        let Some(Action::Exit(outcome)) = driver.take_log().pop() else {
            panic!("no exit")
        };
        assert!(outcome.failure.unwrap().reason.contains("max_restarts: 2"));
    }

    #[test]
    fn a_hung_agent_is_killed_and_restarted() {
        let mut hung = agent("hung", &[]);
        hung.liveness = Some(Liveness {
            probe: Probe::Tcp {
                host: "127.0.0.1".into(),
                port: 1,
            },
            interval: Duration::from_secs(1),
            timeout: ms(500),
            failures: 3,
        });
        let mut driver = Driver::new(vec![hung], Strategy::OneForOne);
        driver.advance(ms(100));
        assert!(
            driver
                .take_log()
                .iter()
                .any(|action| matches!(action, Action::WatchLiveness { .. }))
        );
        let run = driver.lifecycle.agents[0].run;
        for attempt in 0..3 {
            assert_eq!(driver.state("hung"), AgentState::Ready, "attempt {attempt}");
            driver.send(Event::LivenessProbed {
                agent: 0,
                run,
                result: Err("timed out".into()),
            });
        }
        assert_eq!(driver.signalled(), [("hung".into(), Signal::SIGKILL)]);
        driver.exit("hung", Termination::Signaled(9));
        assert_eq!(driver.state("hung"), AgentState::BackingOff);
        assert!(
            driver.lifecycle.agents[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("liveness probe failed 3 times")
        );
        driver.advance(ms(125));
        assert_eq!(driver.state("hung"), AgentState::Starting);
    }

    #[test]
    fn one_success_resets_the_liveness_count() {
        let mut agent = agent("a", &[]);
        agent.liveness = Some(Liveness {
            probe: Probe::Tcp {
                host: "127.0.0.1".into(),
                port: 1,
            },
            interval: Duration::from_secs(1),
            timeout: ms(500),
            failures: 2,
        });
        let mut driver = Driver::new(vec![agent], Strategy::OneForOne);
        driver.advance(ms(100));
        let run = driver.lifecycle.agents[0].run;
        for result in [Err("x".to_string()), Ok(()), Err("x".to_string())] {
            driver.send(Event::LivenessProbed {
                agent: 0,
                run,
                result,
            });
        }
        assert_eq!(driver.state("a"), AgentState::Ready);
    }

    #[test]
    fn rest_for_one_restarts_the_dependents_in_order() {
        let agents = vec![
            agent("db", &[]),
            agent("api", &["db"]),
            agent("ui", &["api"]),
            agent("free", &[]),
        ];
        let mut driver = Driver::new(agents, Strategy::RestForOne);
        driver.advance(ms(300));
        driver.take_log();
        driver.exit("db", Termination::Code(1));
        assert_eq!(driver.signalled(), [("ui".into(), Signal::SIGTERM)]);
        driver.exit("ui", Termination::Signaled(15));
        assert_eq!(driver.signalled(), [("api".into(), Signal::SIGTERM)]);
        driver.exit("api", Termination::Signaled(15));
        assert_eq!(driver.state("api"), AgentState::Pending);
        assert_eq!(driver.state("free"), AgentState::Ready);
        driver.advance(ms(120));
        assert_eq!(driver.spawned(), ["db"]);
        driver.advance(ms(100));
        assert_eq!(driver.spawned(), ["api"]);
        driver.advance(ms(100));
        assert_eq!(driver.spawned(), ["ui"]);
    }

    #[test]
    fn one_for_all_restarts_everyone_and_one_for_one_nobody_else() {
        let agents = vec![agent("db", &[]), agent("api", &["db"]), agent("free", &[])];
        let mut driver = Driver::new(agents.clone(), Strategy::OneForAll);
        driver.advance(ms(300));
        driver.take_log();
        driver.exit("db", Termination::Code(1));
        assert_eq!(
            driver.signalled(),
            [
                ("free".into(), Signal::SIGTERM),
                ("api".into(), Signal::SIGTERM)
            ]
        );

        let mut driver = Driver::new(agents, Strategy::OneForOne);
        driver.advance(ms(300));
        driver.take_log();
        driver.exit("db", Termination::Code(1));
        assert_eq!(driver.signalled(), []);
        assert_eq!(driver.state("api"), AgentState::Ready);
    }

    #[test]
    fn stale_events_of_an_old_run_are_ignored() {
        let mut driver = Driver::new(vec![agent("a", &[])], Strategy::OneForOne);
        driver.exit("a", Termination::Code(1));
        driver.advance(ms(125));
        assert_eq!(driver.state("a"), AgentState::Starting);
        driver.send(Event::Exited {
            agent: 0,
            run: 1,
            termination: Termination::Code(1),
        });
        assert_eq!(driver.state("a"), AgentState::Starting);
    }

    #[test]
    fn everything_done_ends_the_run() {
        let mut job = agent("job", &[]);
        job.restart.mode = RestartMode::OnFailure;
        let mut driver = Driver::new(vec![job], Strategy::OneForOne);
        driver.advance(ms(100));
        driver.exit("job", Termination::Code(0));
        assert_eq!(
            driver.take_log().pop(),
            Some(Action::Exit(Outcome::default()))
        );
    }

    fn ids(driver: &Driver, names: &[&str]) -> Vec<AgentId> {
        names.iter().map(|name| driver.id(name)).collect()
    }

    #[test]
    fn an_operator_stop_takes_dependents_first_and_holds_them_until_started() {
        let agents = vec![agent("db", &[]), agent("api", &["db"]), agent("free", &[])];
        let mut driver = Driver::new(agents, Strategy::OneForOne);
        driver.advance(ms(300));
        driver.take_log();
        driver.send(Event::StopRequested {
            agents: ids(&driver, &["db"]),
        });
        assert_eq!(driver.signalled(), [("api".into(), Signal::SIGTERM)]);
        driver.exit("api", Termination::Signaled(15));
        assert_eq!(driver.signalled(), [("db".into(), Signal::SIGTERM)]);
        driver.exit("db", Termination::Signaled(15));
        assert_eq!(driver.state("db"), AgentState::Stopped);
        assert_eq!(driver.state("api"), AgentState::Stopped);
        assert_eq!(driver.state("free"), AgentState::Ready);
        driver.send(Event::StopRequested {
            agents: ids(&driver, &["free"]),
        });
        driver.exit("free", Termination::Signaled(15));
        // Everything is held: the run waits for the operator.
        assert!(
            !driver
                .take_log()
                .iter()
                .any(|action| matches!(action, Action::Exit(_)))
        );
        assert!(driver.lifecycle.snapshot().agents.iter().all(|a| a.held));
        // Starting api brings its dependency back first.
        driver.send(Event::StartRequested {
            agents: ids(&driver, &["api"]),
        });
        assert_eq!(driver.spawned(), ["db"]);
        driver.advance(ms(100));
        assert_eq!(driver.spawned(), ["api"]);
        assert_eq!(driver.state("free"), AgentState::Stopped);
    }

    #[test]
    fn an_operator_restart_replaces_one_agent_or_its_dependents_too() {
        let agents = vec![agent("db", &[]), agent("api", &["db"])];
        let mut driver = Driver::new(agents.clone(), Strategy::OneForOne);
        driver.advance(ms(300));
        driver.take_log();
        driver.send(Event::RestartRequested {
            agents: ids(&driver, &["db"]),
            with_dependents: false,
        });
        assert_eq!(driver.signalled(), [("db".into(), Signal::SIGTERM)]);
        driver.exit("db", Termination::Signaled(15));
        assert_eq!(driver.spawned(), ["db"]);
        assert_eq!(driver.state("api"), AgentState::Ready);
        let status = driver.lifecycle.snapshot();
        assert_eq!(status.agents[0].restarts_by_cause.get("operator"), Some(&1));

        let mut driver = Driver::new(agents, Strategy::OneForOne);
        driver.advance(ms(300));
        driver.take_log();
        driver.send(Event::RestartRequested {
            agents: ids(&driver, &["db"]),
            with_dependents: true,
        });
        assert_eq!(driver.signalled(), [("api".into(), Signal::SIGTERM)]);
        driver.exit("api", Termination::Signaled(15));
        assert_eq!(driver.signalled(), [("db".into(), Signal::SIGTERM)]);
        driver.exit("db", Termination::Signaled(15));
        assert_eq!(driver.spawned(), ["db"]);
        driver.advance(ms(100));
        assert_eq!(driver.spawned(), ["api"]);
    }

    #[test]
    fn a_reload_restarts_changed_agents_stops_removed_ones_and_starts_new_ones() {
        let agents = vec![
            agent("db", &[]),
            agent("api", &["db"]),
            agent("old", &[]),
            agent("same", &[]),
        ];
        let mut driver = Driver::new(agents, Strategy::OneForOne);
        driver.advance(ms(300));
        driver.take_log();
        let mut db = agent("db", &[]);
        db.env.insert("CHANGED".into(), "1".into());
        let mut same = agent("same", &[]);
        same.location.line = 42; // moved in the file: not a change
        let reload = Reload {
            agents: std::sync::Arc::new(local(vec![
                db,
                agent("api", &["db"]),
                same,
                agent("new", &["db"]),
            ])),
            strategy: Strategy::OneForOne,
        };
        let old = driver.id("old");
        let summary = driver.lifecycle.reload_summary(&reload);
        assert_eq!(summary.added, ["new"]);
        assert_eq!(summary.removed, ["old"]);
        assert_eq!(summary.changed, ["db"]);
        assert_eq!(summary.unchanged, 2);
        driver.send(Event::ReloadRequested(reload));
        let mut signalled = driver.signalled();
        signalled.sort();
        assert_eq!(
            signalled,
            [
                ("db".into(), Signal::SIGTERM),
                ("old".into(), Signal::SIGTERM)
            ]
        );
        let run = driver.lifecycle.agents[old].run;
        driver.send(Event::Exited {
            agent: old,
            run,
            termination: Termination::Signaled(15),
        });
        driver.exit("db", Termination::Signaled(15));
        assert_eq!(driver.spawned(), ["db"]);
        driver.advance(ms(100));
        assert_eq!(driver.spawned(), ["new"]);
        let names: Vec<String> = driver
            .lifecycle
            .snapshot()
            .agents
            .iter()
            .map(|agent| agent.name.clone())
            .collect();
        assert_eq!(names, ["db", "api", "same", "new"]);
        assert_eq!(driver.state("api"), AgentState::Ready);
        assert_eq!(driver.lifecycle.snapshot().reloads, 1);
    }

    #[test]
    fn memory_above_the_limit_for_the_grace_restarts_the_agent() {
        let mut hog = agent("hog", &[]);
        hog.limits = Some(crate::manifest::Limits {
            memory_bytes: Some(100 * 1024 * 1024),
            cpu_percent: Some(50.0),
            grace: Duration::from_secs(1),
        });
        let mut driver = Driver::new(vec![hog], Strategy::OneForOne);
        driver.advance(ms(100));
        driver.take_log();
        let sample = |rss_mb: u64| Event::ResourcesSampled {
            samples: vec![ResourceSample {
                pid: 1000,
                cpu_percent: Some(90.0),
                rss_bytes: rss_mb * 1024 * 1024,
            }],
        };
        driver.send(sample(150));
        assert_eq!(driver.signalled(), []);
        assert_eq!(driver.lifecycle.snapshot().cpu_warnings, 1);
        driver.advance(ms(500));
        driver.send(sample(50));
        driver.advance(ms(500));
        driver.send(sample(150));
        driver.advance(ms(900));
        driver.send(sample(150));
        assert_eq!(
            driver.signalled(),
            [],
            "back under the limit restarts the grace"
        );
        driver.advance(ms(100));
        driver.send(sample(150));
        assert_eq!(driver.signalled(), [("hog".into(), Signal::SIGKILL)]);
        driver.exit("hog", Termination::Signaled(9));
        assert_eq!(driver.state("hog"), AgentState::BackingOff);
        let status = driver.lifecycle.snapshot();
        let reason = status.agents[0].reason.as_deref().unwrap();
        assert!(reason.contains("above the limit of 100 MiB"), "{reason}");
        assert_eq!(status.agents[0].restarts_by_cause.get("memory"), Some(&1));
        assert_eq!(
            status.agents[0].rss_bytes, None,
            "no figures without a process"
        );
    }
}
