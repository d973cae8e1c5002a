//! The pure heart of the supervisor: the agent table and
//! [`Lifecycle::apply`]`(event, now) -> Vec<Action>`.
//!
//! Owns every agent's `Phase` (its state with exactly the data valid in
//! it: the process of a run, its timers, why it is being stopped), its run
//! generation and its restart bookkeeping. Does no I/O and never reads the
//! clock: the run loop in [`super`] feeds it events with `now`, performs the
//! actions it returns and sleeps until [`Lifecycle::next_deadline`].
//!
//! Split by concern, each file an `impl Lifecycle` block:
//! - this file: the types, the table, [`Lifecycle::apply`] (which event goes
//!   where), the status snapshot and the one `Lifecycle::transition` that
//!   checks every change against the table of [`super::state`];
//! - `transitions.rs`: a run from start to exit (spawned, ready, readiness
//!   and liveness results, timers);
//! - `restarting.rs`: what follows an exit: restart policy and backoff
//!   ([`super::restart`]), strategies, failure;
//! - `gating.rs`: dependency gating: an agent starts the moment all its
//!   dependencies are `Ready` (never level by level; with `sequential`, the
//!   benchmark baseline, one at a time), in the [`crate::plan::start_order`];
//!   a dependency that failed, was blocked or stopped for good blocks its
//!   pending dependents; operator `start` and `restart`;
//! - `stopping.rs`: ordered stop: shutdown, operator `stop`, and the stop
//!   wave that signals an agent stopped for shutdown, a strategy or an
//!   operator only once none of its dependents is alive (a hung or
//!   never-ready agent is killed at once);
//! - `reload.rs`: the difference between two configurations: added agents
//!   start in dependency order, removed ones stop in reverse order and are
//!   retired (kept in the table under their id, hidden from the status),
//!   changed ones restart with the new definition, the rest are untouched;
//!   `scale` is a reload too, and its count outlives reloads of a manifest
//!   whose `replicas:` did not change;
//! - `resources.rs`: resource samples matched to agents by pid: memory above
//!   the limit for its grace restarts the agent (cause `memory`), CPU above
//!   the limit is a warning;
//! - `agent_reports.rs`: READY, heartbeats and errors reported through the SDK;
//! - `idle.rs`: `idle_stop`: an agent whose heartbeats report no work for
//!   that long is stopped gracefully and becomes `Idle` (dependents keep
//!   running); a RESOLVE of it, `start` or a pending dependent wakes it.
//!
//! A required agent that fails (with `on_give_up: shutdown`) shuts
//! everything down and becomes the [`Outcome`](crate::supervisor::Outcome)'s failure. Operators start,
//! stop and restart agents by name: `start` also starts the stopped
//! dependencies the agent needs; `stop` stops the agent's dependents first
//! and keeps them all stopped (`held`) until started again, so a run with
//! held agents does not end on its own; `restart` replaces the process at
//! once, leaving dependents running unless `with_dependents`.

mod agent_reports;
mod gating;
mod idle;
mod phase;
mod reload;
mod resources;
mod restarting;
mod stopping;
mod transitions;

#[cfg(test)]
mod properties;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::event::{Action, AgentId, AgentStatus, Event, Failure, RemoteRun, StatusSnapshot};
use super::restart::{Jitter, RestartTracker};
use super::state::{AgentState, allowed};
use crate::manifest::{Agent, Strategy};
use crate::process::Termination;
use phase::{Phase, Process, StopIntent};

/// One agent as the supervisor runs it.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub agent: Agent,
    /// Runs on another host: never spawned, only probed until ready so its
    /// local dependents can start.
    pub remote: bool,
}

/// CPU limit crossings are logged at most this often per agent.
const CPU_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long a not-ready agent is kept for its diagnosis (`Action::Diagnose`).
const DIAGNOSIS_WAIT: Duration = Duration::from_secs(3);

/// With an `sdk` readiness check and no SDK yet, an agent counts as ready
/// after running this long.
const SDK_FALLBACK_START_PERIOD: Duration = Duration::from_secs(1);

/// One agent of the table: its definition, edges, phase, and what lasts
/// across its runs.
#[derive(Debug, Clone)]
struct Record {
    spec: AgentSpec,
    /// Every agent it depends on (for a replicated dependency, each instance).
    dependencies: Vec<AgentId>,
    /// What it waits for: per written dependency, how many of which agents
    /// must be ready (one agent, or `min_ready` instances of a replicated one).
    needs: Vec<Need>,
    dependents: Vec<AgentId>,
    phase: Phase,
    /// Spawn generation; events carrying an older one are stale.
    run: u64,
    first_ready: Option<Instant>,
    time_to_ready: Option<Duration>,
    restarts: RestartTracker,
    reason: Option<String>,
    /// How its last run ended when it ended on its own (no stop was asked
    /// of it); `None` while it runs or when its last run was stopped.
    own_exit: Option<Termination>,
    /// Stopped by an operator: stays stopped until started again, and a run
    /// with held agents does not end on its own.
    held: bool,
    /// Held only because an agent it depends on was stopped by an operator:
    /// starting that agent again brings this one back too.
    held_for_dependency: bool,
    /// Removed by a reload: hidden from the status, never started again.
    retired: bool,
    /// When the last CPU warning was logged.
    cpu_warned_at: Option<Instant>,
    restart_causes: BTreeMap<&'static str, u32>,
    /// The last SDK heartbeat of the latest run: when, and its payload.
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
            needs: Vec::new(),
            dependents: Vec::new(),
            phase: Phase::Pending,
            run: 0,
            first_ready: None,
            time_to_ready: None,
            restarts: RestartTracker::default(),
            reason: None,
            own_exit: None,
            held: false,
            held_for_dependency: false,
            retired: false,
            cpu_warned_at: None,
            restart_causes: BTreeMap::new(),
            last_heartbeat: None,
            error_times: VecDeque::new(),
            degraded: None,
        }
    }

    fn state(&self) -> AgentState {
        self.phase.state()
    }

    fn count_restart(&mut self, cause: &'static str) {
        *self.restart_causes.entry(cause).or_default() += 1;
    }

    fn name(&self) -> &str {
        &self.spec.agent.name
    }

    /// Has (or is about to have) a process of its own.
    fn alive(&self) -> bool {
        !self.spec.remote && self.phase.process().is_some()
    }
}

/// One written dependency as the table resolves it: at least `min_ready`
/// of `agents` must be ready (`worker` with `replicas: 3, min_ready: 2`:
/// two of `worker-0..2`; a plain agent: itself).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Need {
    agents: Vec<AgentId>,
    min_ready: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Running,
    ShuttingDown { forced: bool },
}

/// The agent table and its transition function.
#[derive(Debug)]
pub struct Lifecycle {
    agents: Vec<Record>,
    /// Agent ids in start order ([`crate::plan::start_order`]).
    order: Vec<AgentId>,
    /// Agent ids in the order agents that can start at the same moment are
    /// launched: those heading the longest chain of dependents first, ties
    /// in start order (`order` itself when sequential). A burst of starts
    /// queues on the spawner, and an agent a long chain waits for must not
    /// wait behind ones nothing waits for (issue 18: up to 46 ms per hop of
    /// the MainPC graph).
    launch_order: Vec<AgentId>,
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
    /// Remote agents: the newest run their owning host reported about;
    /// reports about older runs are stale.
    remote_runs: HashMap<AgentId, RemoteRun>,
    /// The agents with `replicas` an operator scaled: their count, kept
    /// by reloads while the manifest's `replicas:` stays as it was
    /// (`reload.rs`).
    scaled: BTreeMap<String, Scaled>,
}

/// The count `scale` set for an agent with `replicas`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scaled {
    /// The manifest's `replicas:` when the operator scaled it.
    written: u32,
    /// The operator's count.
    count: u32,
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
            launch_order: Vec::new(),
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
            remote_runs: HashMap::new(),
            scaled: BTreeMap::new(),
        };
        lifecycle.relink();
        lifecycle
    }

    /// Recomputes dependency edges and the start order from the agents'
    /// definitions (after construction and after a reload). Names resolve to
    /// live (not retired) agents, and the name of an agent with `replicas`
    /// to its live instances; a retired agent keeps edges to the retired
    /// agents it depended on so they stop in reverse order, and a retired
    /// instance waits for the retired instance after it (`scale` down stops
    /// the highest index first).
    fn relink(&mut self) {
        let agents = &self.agents;
        let find = |name: &str, retired: bool| -> Option<Need> {
            let by_name = |retired: bool| {
                agents
                    .iter()
                    .position(|record| record.retired == retired && record.name() == name)
                    .map(|id| Need {
                        agents: vec![id],
                        min_ready: 1,
                    })
            };
            let instances = |retired: bool| {
                let ids: Vec<AgentId> = (0..agents.len())
                    .filter(|id| {
                        agents[*id].retired == retired
                            && agents[*id]
                                .spec
                                .agent
                                .replica
                                .as_ref()
                                .is_some_and(|replica| replica.of == name)
                    })
                    .collect();
                let min_ready = ids
                    .iter()
                    .filter_map(|id| agents[*id].spec.agent.replicas.as_ref())
                    .map(|replicas| replicas.min_ready as usize)
                    .max()
                    .unwrap_or(1)
                    .min(ids.len());
                (!ids.is_empty()).then_some(Need {
                    agents: ids,
                    min_ready,
                })
            };
            by_name(false).or_else(|| instances(false)).or_else(|| {
                retired
                    .then(|| by_name(true).or_else(|| instances(true)))
                    .flatten()
            })
        };
        let needs: Vec<Vec<Need>> = agents
            .iter()
            .map(|record| {
                let mut needs: Vec<Need> = record
                    .spec
                    .agent
                    .dependencies
                    .iter()
                    .filter_map(|dependency| find(&dependency.name, record.retired))
                    .collect();
                if let (true, Some(replica)) = (record.retired, &record.spec.agent.replica) {
                    let before: Vec<AgentId> =
                        (0..agents.len())
                            .filter(|id| {
                                agents[*id].retired
                                    && agents[*id].spec.agent.replica.as_ref().is_some_and(
                                        |other| {
                                            other.of == replica.of
                                                && other.index + 1 == replica.index
                                        },
                                    )
                            })
                            .collect();
                    if !before.is_empty() {
                        needs.push(Need {
                            agents: before,
                            min_ready: 0,
                        });
                    }
                }
                needs
            })
            .collect();
        let dependencies: Vec<Vec<AgentId>> = needs
            .iter()
            .map(|needs| {
                let mut ids: Vec<AgentId> = needs
                    .iter()
                    .flat_map(|need| need.agents.iter().copied())
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
        self.order = crate::plan::start_order(&dependencies);
        // Agents on the longest chains below them first; dependents come
        // after their dependencies in `order`, so walking it backwards sees
        // every dependent's chain before the agent's own.
        let mut chain = vec![0usize; self.agents.len()];
        for agent in self.order.iter().rev() {
            chain[*agent] = 1 + dependents[*agent]
                .iter()
                .map(|dependent| chain[*dependent])
                .max()
                .unwrap_or(0);
        }
        self.launch_order = self.order.clone();
        if !self.sequential {
            self.launch_order
                .sort_by_key(|agent| std::cmp::Reverse(chain[*agent]));
        }
        for (((record, dependencies), dependents), needs) in self
            .agents
            .iter_mut()
            .zip(dependencies)
            .zip(dependents)
            .zip(needs)
        {
            record.dependencies = dependencies;
            record.dependents = dependents;
            record.needs = needs;
        }
    }

    pub fn spec(&self, agent: AgentId) -> &AgentSpec {
        &self.agents[agent].spec
    }

    pub fn state(&self, agent: AgentId) -> AgentState {
        self.agents[agent].state()
    }

    /// The live instances of the agent with `replicas` called `of`, by index.
    pub fn instances_of(&self, of: &str) -> Vec<AgentId> {
        let mut ids: Vec<AgentId> = (0..self.agents.len())
            .filter(|id| {
                let record = &self.agents[*id];
                !record.retired
                    && record
                        .spec
                        .agent
                        .replica
                        .as_ref()
                        .is_some_and(|replica| replica.of == of)
            })
            .collect();
        ids.sort_by_key(|id| {
            self.agents[*id]
                .spec
                .agent
                .replica
                .as_ref()
                .map(|replica| replica.index)
        });
        ids
    }

    /// The specs of every live agent (what a reload starts from).
    pub fn live_specs(&self) -> Vec<AgentSpec> {
        self.agents
            .iter()
            .filter(|record| !record.retired)
            .map(|record| record.spec.clone())
            .collect()
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
                    self.on_spawned(agent, pid, now);
                }
            }
            Event::SpawnFailed { agent, run, error } => {
                if self.current(agent, run) {
                    self.on_spawn_failed(agent, error, &mut actions);
                }
            }
            Event::Diagnosed { agent, run, text } => {
                if self.current(agent, run) {
                    self.on_diagnosed(agent, text);
                }
            }
            Event::LastLine { agent, run, line } => {
                if self.current(agent, run)
                    && let Some(process) = self.agents[agent].phase.process_mut()
                {
                    process.last_line = Some(line);
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
                if self.current(agent, run)
                    && matches!(self.agents[agent].phase, Phase::Starting { stop: None, .. })
                {
                    self.become_ready(agent, now, &mut actions);
                }
            }
            Event::ReadinessBlocked { agent, run, reason } => {
                if self.current(agent, run) && self.state(agent) == AgentState::Starting {
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
            Event::WakeRequested { agent, by } => {
                if agent < self.agents.len() {
                    self.wake(agent, &format!("resolved by `{by}`"));
                }
            }
            Event::RemoteReported { agent, ready, run } => {
                if self.mode == Mode::Running {
                    self.on_remote_report(agent, ready, run, now, &mut actions);
                }
            }
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
            .filter_map(|record| record.phase.deadline())
            .chain(self.heartbeat_deadline())
            .chain(self.idle_deadline())
            .min()
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let mut snapshot = StatusSnapshot {
            started: self.started,
            agents: self
                .agents
                .iter()
                .filter(|record| !record.retired)
                .map(|record| self.status(record))
                .collect(),
            all_ready_after: self.all_ready_after,
            shutting_down: self.mode != Mode::Running,
            reloads: self.reloads,
            config_errors: self.config_errors.clone(),
            cpu_warnings: self.cpu_warnings,
        };
        super::degraded::derive(&mut snapshot);
        snapshot
    }

    fn status(&self, record: &Record) -> AgentStatus {
        let process = record.phase.process();
        let pid = process.and_then(|process| process.pid);
        AgentStatus {
            name: record.name().to_string(),
            replica: record
                .spec
                .agent
                .replica
                .as_ref()
                .map(|replica| (replica.of.clone(), replica.index)),
            group: record.spec.agent.group.clone(),
            state: record.state(),
            remote: record.spec.remote,
            required: record.spec.agent.required,
            pid,
            run: record.run,
            own_exit: record.own_exit,
            restarts: record.restarts.total,
            ready_at: record.first_ready.map(|at| at.duration_since(self.started)),
            time_to_ready: record.time_to_ready,
            waiting_on: if record.state() == AgentState::Pending {
                record
                    .dependencies
                    .iter()
                    .filter(|dependency| self.agents[**dependency].state() != AgentState::Ready)
                    .map(|dependency| self.agents[*dependency].name().to_string())
                    .collect()
            } else {
                Vec::new()
            },
            dependencies: record
                .spec
                .agent
                .dependencies
                .iter()
                .map(|dependency| dependency.name.clone())
                .collect(),
            degraded_by: Vec::new(),
            reason: record.reason.clone(),
            host: record.spec.agent.host.clone(),
            running_since: pid.and(process.map(|process| process.since)),
            heartbeat_age: record
                .last_heartbeat
                .as_ref()
                .map(|(at, _)| self.last_now.saturating_duration_since(*at)),
            cpu_percent: pid.and(process.and_then(|process| process.cpu_percent)),
            rss_bytes: pid.and(process.and_then(|process| process.rss_bytes)),
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
        }
    }

    fn current(&self, agent: AgentId, run: u64) -> bool {
        self.agents
            .get(agent)
            .is_some_and(|record| record.run == run)
    }

    /// Moves `agent` to `to`, enforcing the table of `state.rs`; the old
    /// phase, with its timers and stop intent, is returned (or, for an
    /// illegal change, a bug, left in place and `None` returned).
    fn transition(&mut self, agent: AgentId, to: Phase) -> Option<Phase> {
        let record = &mut self.agents[agent];
        let (from, next) = (record.state(), to.state());
        if !allowed(from, next) {
            tracing::error!(agent = record.name(), %from, to = %next, "illegal state transition (bug)");
            debug_assert!(
                false,
                "illegal transition {from:?} -> {next:?} for {}",
                record.spec.agent.name
            );
            return None;
        }
        tracing::debug!(agent = record.name(), %from, to = %next, "transition");
        Some(std::mem::replace(&mut record.phase, to))
    }
}

/// `250ms`, `1.50s`.
pub fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.2}s", duration.as_secs_f64())
    }
}
