//! The runtime owner of agent state: one task runs `Supervisor::run`, a
//! single `select!` over its inbox (process and probe events), commands from
//! [`SupervisorHandle`]s, the next deadline and the shutdown token. Every
//! event goes through the pure [`lifecycle::Lifecycle::apply`]; this file
//! only performs the returned actions (spawn, signal, start/stop probe
//! tasks) and publishes a [`StatusSnapshot`] after each one. Operator
//! commands (start/stop/restart/reload) become events too; their replies are
//! sent once the change is applied and published. A sampling task reads the
//! agents' process trees every [`Config::sample_interval`] off the loop and
//! feeds the figures back as [`Event::ResourcesSampled`].
//!
//! Layout: [`event`] (events, actions, commands, status), [`state`] (states
//! and the transition table), [`lifecycle`] (the pure transition function),
//! [`restart`] (policy, backoff, intensity), [`fabric`] (agent endpoint and
//! error bus lifetimes, per-run tokens, the bridge task turning SDK messages
//! into events and answering RESOLVE), `environment` (the variables injected
//! into each run). Does not own processes or resource sampling
//! ([`crate::process`]), probes and their schedules ([`crate::health`]),
//! allocator tuning ([`crate::platform`]) or the CLI.

pub mod degraded;
mod environment;
pub mod event;
pub mod fabric;
pub mod lifecycle;
pub mod restart;
pub mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use event::{
    AgentStatus, Command, CommandError, Event, Failure, Outcome, Reload, ReloadSummary, RemoteRun,
    StatusSnapshot,
};
pub use lifecycle::{AgentSpec, format_duration};
pub use state::AgentState;

use crate::health;
use crate::manifest::Strategy;
use crate::process::{Console, ProcessEvent, Spawner};
use crate::shutdown::Shutdown;
use event::{Action, AgentId};
use lifecycle::Lifecycle;
use restart::Jitter;

/// At most this many queued events are applied before the status is published.
const MAX_BATCH: usize = 256;

/// Snapshots are published at most this often while events keep coming
/// (heartbeats from hundreds of agents): building one is O(agents), so one
/// per event would make the loop's cost grow with the square of the agents.
/// A lone event, a command reply or the end is still published at once.
const MIN_PUBLISH_GAP: Duration = Duration::from_millis(50);

/// When only heartbeats arrived (no state changed), a snapshot waits this
/// long: it carries each agent's last heartbeat time and payload, which a
/// second-old copy shows well enough (`status` asks the loop for a fresh one).
const HEARTBEAT_PUBLISH_GAP: Duration = Duration::from_secs(1);

/// What the supervisor runs and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// The agents of this host, plus the agents of other hosts they depend on
    /// (`remote: true`).
    pub agents: Vec<AgentSpec>,
    /// What else restarts when an agent restarts (the manifest's `strategy`:
    /// one-for-one, rest-for-one, one-for-all).
    pub strategy: Strategy,
    /// Start one agent at a time in plan order (the benchmark's baseline).
    pub sequential: bool,
    /// Agent logs go to `<logs>/<agent>.log`; `None` discards them.
    pub logs: Option<PathBuf>,
    /// Echo agent output to the console with a `name |` prefix.
    pub console: Option<Console>,
    /// `PORT_OFFSET` given to agents.
    pub port_offset: String,
    /// How often the agents' process trees are sampled (CPU, memory,
    /// limits); `None` turns sampling off (tests with a paused clock).
    pub sample_interval: Option<Duration>,
    /// A required agent that fails does not stop the others (`up --keep-going`).
    pub keep_going: bool,
}

/// A cloneable way to reach the supervisor task.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    /// Received by the supervisor task; sends fail once it has ended.
    commands: mpsc::Sender<Command>,
    /// Updated by the supervisor task after every event.
    status: watch::Receiver<StatusSnapshot>,
}

impl SupervisorHandle {
    /// Stops every agent in reverse dependency order; `force` skips the grace.
    /// Returns once the request is queued, not when the agents have stopped
    /// (await the supervisor task's handle for that); does nothing once the
    /// supervisor has ended.
    pub async fn shutdown(&self, force: bool) {
        let _ = self.commands.send(Command::Shutdown { force }).await;
    }

    /// Like [`SupervisorHandle::shutdown`], from synchronous code (signal
    /// handlers): never waits, so the request is lost when the command queue
    /// (64 commands) is full or the supervisor has ended.
    pub fn try_shutdown(&self, force: bool) {
        let _ = self.commands.try_send(Command::Shutdown { force });
    }

    /// The current status; `None` once the supervisor has ended.
    pub async fn status(&self) -> Option<StatusSnapshot> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Status { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Tells the supervisor that an agent of another host is (or is no
    /// longer) ready, as its own supervisor reported over the peer link
    /// about its run `run`. Waits for room in the queue: a report is never
    /// dropped, and reports keep their order.
    pub async fn report_remote(&self, agent: String, ready: bool, run: RemoteRun) {
        let _ = self
            .commands
            .send(Command::RemoteState { agent, ready, run })
            .await;
    }

    /// Follows the published status: a new snapshot after each batch of
    /// events, at most every 50 ms while events keep coming (every second when
    /// only heartbeats arrive), at once after a command. For a snapshot fresher
    /// than the last published one, ask [`SupervisorHandle::status`].
    pub fn subscribe(&self) -> watch::Receiver<StatusSnapshot> {
        self.status.clone()
    }

    /// Starts agents by name (and the dependencies they need); answers once
    /// the request is applied, not when they are ready, with every agent the
    /// request starts, in dependency order.
    ///
    /// # Errors
    ///
    /// [`CommandError::UnknownAgents`] when a name is unknown or none is given
    /// (nothing is done then), [`CommandError::ShuttingDown`] during a
    /// shutdown, [`CommandError::Ended`] once the supervisor has ended. The
    /// same holds for [`SupervisorHandle::stop`] and
    /// [`SupervisorHandle::restart`].
    pub async fn start(&self, agents: Vec<String>) -> Result<Vec<String>, CommandError> {
        self.ask(|reply| Command::Start { agents, reply }).await?
    }

    /// Stops agents by name, their dependents first; they stay stopped until
    /// started again. Answers with every agent the request stops.
    pub async fn stop(&self, agents: Vec<String>) -> Result<Vec<String>, CommandError> {
        self.ask(|reply| Command::Stop { agents, reply }).await?
    }

    /// Restarts agents by name (with everything that depends on them when
    /// `with_dependents`); answers with every agent it replaces.
    pub async fn restart(
        &self,
        agents: Vec<String>,
        with_dependents: bool,
    ) -> Result<Vec<String>, CommandError> {
        self.ask(|reply| Command::Restart {
            agents,
            with_dependents,
            reply,
        })
        .await?
    }

    /// Applies a configuration that passed `check`, answering with what it
    /// changes once the change is applied (agents still start and stop after).
    /// Refused with [`CommandError::ShuttingDown`] during a shutdown.
    pub async fn reload(&self, reload: Reload) -> Result<ReloadSummary, CommandError> {
        self.ask(|reply| Command::Reload { reload, reply }).await?
    }

    /// Records a configuration that did not pass `check` (shown in the status).
    /// Runs `count` instances of the agent with `replicas` called `agent`:
    /// extra instances stop (highest index first), new ones start once the
    /// agent's dependencies are ready. Answers what was added and removed.
    pub async fn scale(&self, agent: String, count: u32) -> Result<ReloadSummary, CommandError> {
        self.ask(|reply| Command::Scale {
            agent,
            count,
            reply,
        })
        .await?
    }

    pub async fn reload_failed(&self, errors: Vec<String>) {
        let _ = self.commands.send(Command::ReloadFailed { errors }).await;
    }

    /// Sends the command built around a fresh reply channel and waits for the
    /// answer; [`CommandError::Ended`] when the supervisor task has ended
    /// (before reading the command or before answering it).
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| CommandError::Ended)?;
        answer.await.map_err(|_| CommandError::Ended)
    }
}

/// A reply to send once the command's event is applied and published.
enum Reply {
    /// The names of the agents the request affects.
    Done(
        oneshot::Sender<Result<Vec<String>, CommandError>>,
        Vec<String>,
    ),
    /// The summary of a reload, computed before it was applied.
    Reloaded(
        oneshot::Sender<Result<ReloadSummary, CommandError>>,
        ReloadSummary,
    ),
}

impl Reply {
    /// Answers the waiting caller with success; a caller that stopped
    /// waiting is ignored.
    fn send(self) {
        match self {
            Reply::Done(reply, affected) => {
                let _ = reply.send(Ok(affected));
            }
            Reply::Reloaded(reply, summary) => {
                let _ = reply.send(Ok(summary));
            }
        }
    }
}

/// Starts the supervisor task on `shutdown`'s tracker. The task ends when
/// every agent is settled (after a shutdown, or when nothing is left to run).
/// Cancelling `shutdown`'s token stops the agents gracefully.
pub fn spawn<S: Spawner>(
    config: Config,
    spawner: S,
    shutdown: &Shutdown,
) -> (SupervisorHandle, JoinHandle<Outcome>) {
    spawn_with_fabric(config, spawner, shutdown, None)
}

/// [`spawn`], with agents supervised through the agent fabric: each run gets
/// a fresh token and `SUPERVISOR_ENDPOINT`, `readiness: sdk` waits for READY,
/// heartbeats are watched and errors feed `on_error` (see [`fabric`]).
pub fn spawn_with_fabric<S: Spawner>(
    config: Config,
    spawner: S,
    shutdown: &Shutdown,
    fabric: Option<fabric::FabricLink>,
) -> (SupervisorHandle, JoinHandle<Outcome>) {
    let now = Instant::now();
    let mut lifecycle = Lifecycle::new(
        config.agents.clone(),
        config.strategy,
        config.sequential,
        now,
        Jitter::from_entropy(),
    );
    let (command_sender, commands) = mpsc::channel(64);
    let (event_sender, events) = mpsc::unbounded_channel();
    if fabric.is_some() {
        lifecycle.enable_fabric();
    }
    lifecycle.set_keep_going(config.keep_going);
    let (status_sender, status) = watch::channel(lifecycle.snapshot());
    let registrar = fabric.map(|link| {
        let known = config
            .agents
            .iter()
            .map(|spec| (spec.agent.name.clone(), environment::service_endpoint(spec)))
            .collect();
        fabric::start_bridge(
            link,
            known,
            event_sender.clone(),
            status.clone(),
            shutdown.token().clone(),
            shutdown.tracker(),
        )
    });
    if let Some(interval) = config.sample_interval {
        let status = status.clone();
        let events = event_sender.clone();
        shutdown
            .tracker()
            .spawn(crate::process::sample::sample_every(
                interval,
                move || {
                    status
                        .borrow()
                        .agents
                        .iter()
                        .filter_map(|agent| agent.pid)
                        .collect()
                },
                move |samples| events.send(Event::ResourcesSampled { samples }).is_ok(),
                shutdown.token().clone(),
            ));
    }
    let supervisor = Supervisor {
        lifecycle,
        config,
        spawner,
        events,
        event_sender,
        commands,
        status: status_sender,
        watchers: HashMap::new(),
        spawned_pids: HashMap::new(),
        token: shutdown.token().clone(),
        shutdown: shutdown.clone(),
        fabric: registrar,
    };
    let task = shutdown.tracker().spawn(supervisor.run());
    (
        SupervisorHandle {
            commands: command_sender,
            status,
        },
        task,
    )
}

/// The run loop's state: the pure [`Lifecycle`] that decides, and
/// everything needed to carry out its actions. Owned by the one task
/// [`spawn_with_fabric`] starts; nothing else touches it.
struct Supervisor<S> {
    /// Every agent's state; changed only through `begin` and `apply`.
    lifecycle: Lifecycle,
    /// What was asked for at start (logs, console, port offset, sampling).
    config: Config,
    /// Starts and signals the agents' processes (a fake one in tests).
    spawner: S,
    /// Process reporters and probe tasks hold clones of `event_sender`; the
    /// loop keeps one too, so `recv` never sees a closed channel.
    events: mpsc::UnboundedReceiver<Event>,
    /// Cloned into every process reporter, probe task and the sampler.
    event_sender: mpsc::UnboundedSender<Event>,
    /// Senders live in [`SupervisorHandle`]s; when all are dropped the
    /// branch is disabled and the loop carries on.
    commands: mpsc::Receiver<Command>,
    /// Read by every [`SupervisorHandle::subscribe`]r.
    status: watch::Sender<StatusSnapshot>,
    /// One token per agent with probe tasks; cancelled to stop them.
    watchers: HashMap<AgentId, CancellationToken>,
    /// The pid of each agent's latest spawn, set by its process reporter
    /// once known; its readiness task reads it to tell the agent's own
    /// listener from a foreign one on the same port.
    spawned_pids: HashMap<AgentId, Arc<OnceLock<u32>>>,
    /// The root token: its cancellation is the shutdown request.
    token: CancellationToken,
    /// Probe tasks are spawned on its tracker.
    shutdown: Shutdown,
    /// Registers each run's token with the agent endpoint and the bridge;
    /// `None` without the agent fabric.
    fabric: Option<fabric::Registrar>,
}

impl<S: Spawner> Supervisor<S> {
    /// The loop: performs the lifecycle's first actions, then waits for an
    /// event, a command, the lifecycle's next deadline or the shutdown token,
    /// applies it (with up to [`MAX_BATCH`] more queued events), performs the
    /// actions and publishes a snapshot (at once for a command reply or the
    /// end, else at most every [`MIN_PUBLISH_GAP`], or
    /// [`HEARTBEAT_PUBLISH_GAP`] when only heartbeats came). Replies are sent
    /// after the snapshot that shows their effect. Returns the outcome of the
    /// action that ended it, with every probe task cancelled.
    async fn run(mut self) -> Outcome {
        let mut shutdown_seen = false;
        let actions = self.lifecycle.begin(Instant::now());
        if let Some(outcome) = self.perform(actions) {
            return outcome;
        }
        self.status.send_replace(self.lifecycle.snapshot());
        let mut last_publish = Instant::now();
        // A snapshot owed to subscribers, due at this time.
        let mut publish_at: Option<Instant> = None;
        loop {
            let deadline = self.lifecycle.next_deadline();
            let (event, reply) = tokio::select! {
                _ = sleep_until(publish_at), if publish_at.is_some() => {
                    self.status.send_replace(self.lifecycle.snapshot());
                    last_publish = Instant::now();
                    publish_at = None;
                    continue;
                }
                Some(event) = self.events.recv() => (event, None),
                Some(command) = self.commands.recv() => match self.on_command(command) {
                    Some(pair) => pair,
                    None => continue,
                },
                _ = sleep_until(deadline), if deadline.is_some() => (Event::DeadlineReached, None),
                _ = self.token.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    (Event::ShutdownRequested { force: false }, None)
                }
            };
            let mut only_heartbeats = matches!(event, Event::HeartbeatReceived { .. });
            let actions = self.lifecycle.apply(event, Instant::now());
            let mut outcome = self.perform(actions);
            // Under a burst (a whole level spawning and becoming ready) apply
            // what is already queued before publishing one snapshot: building
            // it is O(agents), the events themselves are cheap.
            for _ in 0..MAX_BATCH {
                if outcome.is_some() {
                    break;
                }
                let Ok(event) = self.events.try_recv() else {
                    break;
                };
                only_heartbeats &= matches!(event, Event::HeartbeatReceived { .. });
                let actions = self.lifecycle.apply(event, Instant::now());
                outcome = self.perform(actions);
            }
            let now = Instant::now();
            let gap = if only_heartbeats {
                HEARTBEAT_PUBLISH_GAP
            } else {
                MIN_PUBLISH_GAP
            };
            if reply.is_some() || outcome.is_some() || now >= last_publish + gap {
                self.status.send_replace(self.lifecycle.snapshot());
                last_publish = now;
                publish_at = None;
            } else {
                let due = last_publish + gap;
                publish_at = Some(publish_at.map_or(due, |at| at.min(due)));
            }
            if let Some(reply) = reply {
                reply.send();
            }
            if let Some(outcome) = outcome {
                for (_, token) in self.watchers.drain() {
                    token.cancel();
                }
                return outcome;
            }
        }
    }

    /// Turns a command into the event to apply and the reply to send after
    /// it; `None` when it was answered (or refused) on the spot.
    fn on_command(&mut self, command: Command) -> Option<(Event, Option<Reply>)> {
        match command {
            Command::Shutdown { force } => Some((Event::ShutdownRequested { force }, None)),
            Command::Status { reply } => {
                let _ = reply.send(self.lifecycle.snapshot());
                None
            }
            Command::RemoteState { agent, ready, run } => self
                .lifecycle
                .id(&agent)
                .map(|agent| (Event::RemoteReported { agent, ready, run }, None)),
            Command::Start { agents, reply } => match self.ids(&agents) {
                Ok(agents) => {
                    let affected = self.names(&self.lifecycle.start_targets(&agents));
                    Some((
                        Event::StartRequested { agents },
                        Some(Reply::Done(reply, affected)),
                    ))
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                    None
                }
            },
            Command::Stop { agents, reply } => match self.ids(&agents) {
                Ok(agents) => {
                    let affected = self.names(&self.lifecycle.stop_targets(&agents));
                    Some((
                        Event::StopRequested { agents },
                        Some(Reply::Done(reply, affected)),
                    ))
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                    None
                }
            },
            Command::Restart {
                agents,
                with_dependents,
                reply,
            } => match self.ids(&agents) {
                Ok(agents) => {
                    let affected =
                        self.names(&self.lifecycle.restart_targets(&agents, with_dependents));
                    Some((
                        Event::RestartRequested {
                            agents,
                            with_dependents,
                        },
                        Some(Reply::Done(reply, affected)),
                    ))
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                    None
                }
            },
            Command::Reload { reload, reply } => {
                if self.lifecycle.shutting_down() {
                    let _ = reply.send(Err(CommandError::ShuttingDown));
                    return None;
                }
                let summary = self.lifecycle.reload_summary(&reload);
                Some((
                    Event::ReloadRequested(reload),
                    Some(Reply::Reloaded(reply, summary)),
                ))
            }
            Command::ReloadFailed { errors } => Some((Event::ReloadFailed { errors }, None)),
            Command::Scale {
                agent,
                count,
                reply,
            } => match self.lifecycle.scaled(&agent, count) {
                Ok(reload) => {
                    let summary = self.lifecycle.reload_summary(&reload);
                    Some((
                        Event::ReloadRequested(reload),
                        Some(Reply::Reloaded(reply, summary)),
                    ))
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                    None
                }
            },
        }
    }

    /// The ids of live agents by name, the name of an agent with
    /// `replicas` standing for all its live instances (`worker` for
    /// `worker-0..N-1`); refuses unknown names and requests during shutdown.
    /// Every operator command (CLI, dashboard, top, a peer's routed
    /// command) resolves its names here.
    fn ids(&self, names: &[String]) -> Result<Vec<AgentId>, CommandError> {
        if self.lifecycle.shutting_down() {
            return Err(CommandError::ShuttingDown);
        }
        let named = |name: &String| match self.lifecycle.id(name) {
            Some(agent) => vec![agent],
            None => self.lifecycle.instances_of(name),
        };
        let unknown: Vec<String> = names
            .iter()
            .filter(|name| named(name).is_empty())
            .cloned()
            .collect();
        if !unknown.is_empty() || names.is_empty() {
            return Err(CommandError::UnknownAgents(unknown));
        }
        let mut ids: Vec<AgentId> = Vec::new();
        for agent in names.iter().flat_map(named) {
            if !ids.contains(&agent) {
                ids.push(agent);
            }
        }
        Ok(ids)
    }

    /// The names of `agents`, in the same order.
    fn names(&self, agents: &[AgentId]) -> Vec<String> {
        agents
            .iter()
            .map(|agent| self.lifecycle.agent_name(*agent).to_string())
            .collect()
    }

    /// Performs actions in order; returns the outcome when one of them ends
    /// the loop. Any signal but SIGKILL is followed by SIGCONT, so a stopped
    /// (SIGSTOPped) group can act on it; a failed signal is logged, not
    /// reported. Probe tasks run on the shutdown tracker under a per-agent
    /// token (a new watch cancels the agent's previous ones), and report back
    /// as events of their run.
    fn perform(&mut self, actions: Vec<Action>) -> Option<Outcome> {
        let mut outcome = None;
        for action in actions {
            match action {
                Action::Spawn { agent, run } => self.spawn_agent(agent, run),
                Action::Signal {
                    agent, pid, signal, ..
                } => {
                    if let Err(error) = self.spawner.signal_group(pid, signal) {
                        let name = &self.lifecycle.spec(agent).agent.name;
                        tracing::warn!(agent = %name, %error, "cannot signal");
                    }
                    // A stopped (SIGSTOPped, hung) group cannot act on a stop
                    // signal until it runs again; without this it would only
                    // die at the SIGKILL after its whole grace.
                    if signal != nix::sys::signal::Signal::SIGKILL {
                        let _ = self
                            .spawner
                            .signal_group(pid, nix::sys::signal::Signal::SIGCONT);
                    }
                }
                Action::WatchReadiness { agent, run } => {
                    let spec = self.lifecycle.spec(agent);
                    if let crate::manifest::ReadinessCheck::Probe(probe) =
                        &spec.agent.readiness.check
                    {
                        let probe = probe_target(probe, spec);
                        let readiness = spec.agent.readiness.clone();
                        // Only a process of ours has a tree to check.
                        let owner = (!spec.remote)
                            .then(|| self.spawned_pids.get(&agent).cloned())
                            .flatten();
                        let token = self.watcher_token(agent);
                        let events = self.event_sender.clone();
                        let blocked_events = self.event_sender.clone();
                        self.shutdown.tracker().spawn(health::watch_readiness(
                            probe,
                            readiness,
                            owner,
                            token,
                            move || {
                                let _ = events.send(Event::ReadinessPassed { agent, run });
                            },
                            move |reason| {
                                let _ = blocked_events.send(Event::ReadinessBlocked {
                                    agent,
                                    run,
                                    reason,
                                });
                            },
                        ));
                    }
                }
                Action::Diagnose { agent, run, pid } => {
                    let spec = self.lifecycle.spec(agent);
                    if let crate::manifest::ReadinessCheck::Probe(probe) =
                        &spec.agent.readiness.check
                    {
                        let probe = probe_target(probe, spec);
                        let events = self.event_sender.clone();
                        self.shutdown.tracker().spawn(async move {
                            let text = health::diagnose(pid, probe).await;
                            let _ = events.send(Event::Diagnosed { agent, run, text });
                        });
                    }
                }
                Action::WatchLiveness { agent, run } => {
                    let spec = self.lifecycle.spec(agent);
                    if let Some(liveness) = spec.agent.liveness.clone() {
                        let probe = probe_target(&liveness.probe, spec);
                        let token = self.watcher_token(agent);
                        let events = self.event_sender.clone();
                        self.shutdown.tracker().spawn(health::watch_liveness(
                            probe,
                            liveness,
                            token,
                            move |result| {
                                let _ = events.send(Event::LivenessProbed { agent, run, result });
                            },
                        ));
                    }
                }
                Action::CancelWatchers { agent } => {
                    if let Some(token) = self.watchers.remove(&agent) {
                        token.cancel();
                    }
                }
                Action::Exit(end) => outcome = Some(end),
            }
        }
        outcome
    }

    /// A fresh token for the agent's probe tasks (cancelling any older one).
    fn watcher_token(&mut self, agent: AgentId) -> CancellationToken {
        let token = self.token.child_token();
        if let Some(old) = self.watchers.insert(agent, token.clone()) {
            old.cancel();
        }
        token
    }

    /// Starts run `run` of `agent`: builds its command and environment, with
    /// the fabric, registers a fresh token whose variables go first (the
    /// manifest's `env` can override them), and hands the spawner a reporter
    /// that turns process events into loop events of this run, records the pid
    /// for the readiness probe and revokes the run's token when it exits.
    fn spawn_agent(&mut self, agent: AgentId, run: u64) {
        let mut spec = environment::spawn_spec(&self.lifecycle, agent, &self.config);
        let mut revoke = None;
        if let Some(registrar) = &self.fabric {
            let agent_spec = self.lifecycle.spec(agent);
            let variables = registrar.register(
                fabric::Registration {
                    name: agent_spec.agent.name.clone(),
                    agent,
                    run,
                    endpoint: environment::service_endpoint(agent_spec),
                },
                agent_spec.agent.heartbeat.interval,
            );
            // First, so the manifest's `env` can still override them.
            spec.env.splice(0..0, variables);
            revoke = Some((registrar.table().clone(), spec.name.clone()));
        }
        let events = self.event_sender.clone();
        let spawned_pid = Arc::new(OnceLock::new());
        self.spawned_pids.insert(agent, spawned_pid.clone());
        let report = Box::new(move |event: ProcessEvent| {
            if let ProcessEvent::Spawned { pid } = &event {
                let _ = spawned_pid.set(*pid);
            }
            // Its process is gone: nothing may speak for this run any more
            // (a later run keeps its own token).
            if let (ProcessEvent::Exited { .. }, Some((table, name))) = (&event, &revoke) {
                table.revoke(name, Some(run));
            }
            let event = match event {
                ProcessEvent::Spawned { pid } => Event::Spawned { agent, run, pid },
                ProcessEvent::SpawnFailed { error } => Event::SpawnFailed { agent, run, error },
                ProcessEvent::LastLine { line } => Event::LastLine { agent, run, line },
                ProcessEvent::Exited { termination } => Event::Exited {
                    agent,
                    run,
                    termination,
                },
            };
            let _ = events.send(event);
        });
        self.spawner.spawn(spec, report);
    }
}

/// For an agent of another host, probes aimed at a loopback or wildcard
/// address go to that host instead.
/// An address given by the manifest's `hosts:` is used as written (`cli::up`
/// aims the probes there), loopback included.
fn probe_target(probe: &crate::manifest::Probe, spec: &AgentSpec) -> crate::manifest::Probe {
    use crate::manifest::Probe;
    let written = match probe {
        Probe::Tcp { host, .. } | Probe::Zmq { host, .. } => *host == spec.agent.address,
        _ => false,
    };
    match spec.remote && !written {
        true => health::aimed_at(probe, &spec.agent.host),
        false => probe.clone(),
    }
}

/// Sleeps until `deadline`; without one, never wakes (a `select!` branch
/// that stays pending).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The whole run loop with a fake spawner and a paused clock.

    use std::sync::{Arc, Mutex};

    use nix::sys::signal::Signal;

    use super::lifecycle::tests::{agent, ms};
    use super::*;
    use crate::manifest::{Agent, RestartMode};
    use crate::process::SpawnSpec;
    use crate::process::{Reporter, SpawnError, Termination};

    /// What a fake process does on its own.
    #[derive(Clone, Copy)]
    enum Behaviour {
        /// Runs until signalled.
        Run,
        /// Exits with this code after this long.
        ExitAfter(Duration, i32),
        /// Ignores SIGTERM, dies on SIGKILL.
        IgnoreTerm,
    }

    /// What the fake spawner was asked to do, with the (paused) clock's time.
    #[derive(Default)]
    struct Journal {
        /// (agent, when) for every spawn.
        spawns: Vec<(String, Instant)>,
        /// (agent, signal, when) for every signal.
        signals: Vec<(String, Signal, Instant)>,
    }

    /// Processes that exist only as reporters; exits are timers on the (paused) clock.
    struct FakeSpawner {
        /// How the process of an agent (by name) behaves.
        behaviour: fn(&str) -> Behaviour,
        /// Shared with the test, which asserts on it.
        journal: Arc<Mutex<Journal>>,
        /// The last pid handed out; fake pids count up from 101.
        next_pid: u32,
        /// Fake processes not yet ended: name, behaviour and reporter by pid.
        live: HashMap<u32, (String, Behaviour, Arc<Reporter>)>,
    }

    impl Spawner for FakeSpawner {
        /// Journals the spawn, reports `Spawned` at once and, for
        /// [`Behaviour::ExitAfter`], `Exited` with its code after its delay.
        fn spawn(&mut self, spec: SpawnSpec, report: Reporter) {
            self.next_pid += 1;
            let pid = self.next_pid;
            self.journal
                .lock()
                .unwrap()
                .spawns
                .push((spec.name.clone(), Instant::now()));
            let behaviour = (self.behaviour)(&spec.name);
            let report = Arc::new(report);
            report(ProcessEvent::Spawned { pid });
            if let Behaviour::ExitAfter(after, code) = behaviour {
                let report = report.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    report(ProcessEvent::Exited {
                        termination: Termination::Code(code),
                    });
                });
            }
            self.live.insert(pid, (spec.name, behaviour, report));
        }

        /// Journals the signal; every signal but SIGCONT ends the process with
        /// `Signaled`, except SIGTERM and the like for [`Behaviour::IgnoreTerm`].
        /// Never fails.
        fn signal_group(&mut self, pid: u32, signal: Signal) -> Result<(), SpawnError> {
            if let Some((name, behaviour, report)) = self.live.get(&pid) {
                self.journal
                    .lock()
                    .unwrap()
                    .signals
                    .push((name.clone(), signal, Instant::now()));
                // SIGCONT never ends a process.
                let ignored = signal == Signal::SIGCONT
                    || (matches!(behaviour, Behaviour::IgnoreTerm) && signal != Signal::SIGKILL);
                if !ignored {
                    report(ProcessEvent::Exited {
                        termination: Termination::Signaled(signal as i32),
                    });
                    self.live.remove(&pid);
                }
            }
            Ok(())
        }
    }

    /// A one-for-one configuration of `agents` on this host, without logs,
    /// console or sampling.
    fn config(agents: Vec<Agent>) -> Config {
        Config {
            agents: agents
                .into_iter()
                .map(|agent| AgentSpec {
                    agent,
                    remote: false,
                })
                .collect(),
            strategy: Strategy::OneForOne,
            sequential: false,
            logs: None,
            console: None,
            port_offset: "0".into(),
            sample_interval: None,
            keep_going: false,
        }
    }

    /// A fake spawner whose processes behave as `behaviour` says, and its journal.
    fn fake(behaviour: fn(&str) -> Behaviour) -> (FakeSpawner, Arc<Mutex<Journal>>) {
        let journal = Arc::new(Mutex::new(Journal::default()));
        (
            FakeSpawner {
                behaviour,
                journal: journal.clone(),
                next_pid: 100,
                live: HashMap::new(),
            },
            journal,
        )
    }

    /// Awaits `future` for at most 600 s of the (paused, auto-advancing) test
    /// clock; panics naming `what` past that.
    async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(600), future)
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_follow_the_backoff_and_stop_at_the_intensity_limit() {
        let mut crashy = agent("crashy", &[]);
        crashy.restart.max_restarts = Some(5);
        crashy.restart.backoff.max = ms(1000);
        crashy.readiness.check = crate::manifest::ReadinessCheck::StartPeriod(ms(10));
        let (spawner, journal) = fake(|_| Behaviour::ExitAfter(ms(50), 1));
        let shutdown = Shutdown::new();
        let start = Instant::now();
        let (_handle, task) = spawn(config(vec![crashy]), spawner, &shutdown);
        let outcome = bounded("the supervisor to give up", task).await.unwrap();
        let failure = outcome.failure.expect("crashy exhausted its restarts");
        assert_eq!(failure.agent, "crashy");
        let spawns: Vec<Instant> = journal
            .lock()
            .unwrap()
            .spawns
            .iter()
            .map(|(_, at)| *at)
            .collect();
        assert_eq!(spawns.len(), 6, "one start and five restarts");
        assert!(spawns[0].duration_since(start) < ms(5));
        // Each gap is 50 ms of run time plus the backoff delay: 100, 200, 400, 800, 1000 (capped), +-20%.
        let expected = [100, 200, 400, 800, 1000];
        for (index, pair) in spawns.windows(2).enumerate() {
            let delay = pair[1].duration_since(pair[0]) - ms(50);
            let nominal = expected[index] as f64;
            let low = ms((nominal * 0.8) as u64 - 1);
            let high = ms(((nominal * 1.2) as u64).min(1000) + 1);
            assert!(
                low <= delay && delay <= high,
                "restart {index}: {delay:?} not in {low:?}..{high:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_then_forced_stop_in_reverse_order() {
        let mut db = agent("db", &[]);
        db.stop.grace = Duration::from_secs(3);
        let api = agent("api", &["db"]);
        let (spawner, journal) = fake(|name| {
            if name == "db" {
                Behaviour::IgnoreTerm
            } else {
                Behaviour::Run
            }
        });
        let shutdown = Shutdown::new();
        let (handle, task) = spawn(config(vec![db, api]), spawner, &shutdown);
        let mut status = handle.subscribe();
        bounded(
            "all ready",
            status.wait_for(|status| status.all_ready_after.is_some()),
        )
        .await
        .unwrap();
        let asked = Instant::now();
        shutdown.cancel();
        let outcome = bounded("the stop", task).await.unwrap();
        assert_eq!(outcome, Outcome::default());
        let signals: Vec<(String, Signal, Duration)> = journal
            .lock()
            .unwrap()
            .signals
            .iter()
            .map(|(name, signal, at)| (name.clone(), *signal, at.duration_since(asked)))
            .collect();
        let names: Vec<(&str, Signal)> = signals
            .iter()
            .map(|(name, signal, _)| (name.as_str(), *signal))
            .collect();
        assert_eq!(
            names,
            [
                ("api", Signal::SIGTERM),
                ("db", Signal::SIGTERM),
                // Sent with every stop signal, in case the group is stopped.
                ("db", Signal::SIGCONT),
                ("db", Signal::SIGKILL)
            ]
        );
        let grace = signals[3].2 - signals[1].2;
        assert!(
            grace >= Duration::from_secs(3) && grace < Duration::from_millis(3100),
            "{grace:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_that_finishes_ends_the_run_cleanly() {
        let mut job = agent("job", &[]);
        job.restart.mode = RestartMode::OnFailure;
        let (spawner, _) = fake(|_| Behaviour::ExitAfter(ms(500), 0));
        let shutdown = Shutdown::new();
        let (handle, task) = spawn(config(vec![job]), spawner, &shutdown);
        assert_eq!(bounded("the end", task).await.unwrap(), Outcome::default());
        assert!(handle.status().await.is_none());
    }
}
