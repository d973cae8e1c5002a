//! `supervisor run-one NAME --config F`: the container entrypoint of an
//! exported agent (docs/kubernetes.md). Runs that one agent under the same
//! supervisor as `up` (agent endpoint, per-run token, READY, heartbeats,
//! error bus: `supervisor::spawn_with_fabric`), with its dependencies as
//! agents on other hosts (so RESOLVE and `<NAME>_ENDPOINT` name them), and
//! restarts nothing: when the agent ends, `run-one` ends with it and
//! Kubernetes restarts the container.
//!
//! Owns the in-pod glue: the `/readyz` and `/livez` endpoints kubelet
//! probes, the heartbeat verdict behind `/livez` (so kubelet, not this
//! process, decides to restart a hung agent), and printing every error the
//! agent reports as one JSON line on stdout. Does not own agent state (the
//! supervisor task) nor the transitions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::{mpsc, oneshot, watch};

use super::check::{load_as_written, print_problems};
use super::{Exit, ManifestArgs};
use crate::manifest::{ReadinessCheck, RestartMode};
use crate::process::keeper::Keeper;
use crate::process::{Console, ProcessSpawner, Termination};
use crate::shutdown::{Shutdown, Signals};
use crate::supervisor::{self, AgentSpec, AgentState, StatusSnapshot};
use crate::transport::{HeartbeatTracker, HeartbeatVerdict};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent to run (its name in the manifest).
    pub name: String,
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Serve `/readyz` and `/livez` on this port (0: any free port, logged).
    #[arg(long, default_value_t = crate::export::kubernetes::DEFAULT_HEALTH_PORT)]
    pub health_port: u16,
    /// The address `/readyz` and `/livez` listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub health_bind: std::net::IpAddr,
    /// Where the agent endpoint and error bus sockets go (default: a fresh
    /// directory under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The agent's program and arguments, instead of the manifest's `command`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What `/readyz` and `/livez` read.
#[derive(Clone)]
struct Health {
    /// Published by the supervisor task after every change.
    status: watch::Receiver<StatusSnapshot>,
    /// Read by `watch_heartbeats`, which answers each request with the
    /// heartbeat verdict now (`None` while heartbeats are not watched);
    /// closed when it ended.
    heartbeats: mpsc::Sender<oneshot::Sender<Option<HeartbeatVerdict>>>,
    name: String,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let report = match load_as_written(
        &args.manifests.config_args()?,
        &args.manifests.load_options(),
    )? {
        Ok(report) => report,
        Err(exit) => return Ok(exit),
    };
    if report.has_errors() {
        print_problems(&report.problems);
        return Ok(Exit::Problems);
    }
    let manifest = report.manifest;
    let Some(agent) = manifest.agent(&args.name) else {
        let names: Vec<&str> = manifest
            .agents
            .iter()
            .map(|agent| agent.name.as_str())
            .collect();
        eprintln!(
            "error: no agent `{}` in the manifests (agents: {})",
            args.name,
            names.join(", ")
        );
        return Ok(Exit::Usage);
    };
    let mut target = agent.clone();
    // Kubernetes restarts the container; the supervisor must not restart
    // the agent, kill it for missed heartbeats (kubelet does that through
    // `/livez`), probe its liveness (a kubelet probe) or watch memory
    // (`resources.limits`).
    let heartbeat = target.heartbeat.clone();
    target.restart.mode = RestartMode::Never;
    target.restart.max_restarts = Some(0);
    target.liveness = None;
    target.limits = None;
    target.heartbeat.misses = u32::MAX;
    target.heartbeat.progress_timeout = None;
    target.required = true;
    if !args.command.is_empty() {
        target.command = args.command.clone();
    }
    // A pod of a StatefulSet runs one instance of an agent with `replicas`:
    // the one its ordinal names (`worker-2` -> instance 2: its port from
    // the range, `${REPLICA}` and `REPLICA`). It keeps the agent's name.
    if target.replicas.is_some() {
        let Some(index) = pod_ordinal() else {
            eprintln!(
                "error: agent `{}` has `replicas`: run-one takes the instance from the pod's name, but neither POD_NAME nor HOSTNAME ends in `-ORDINAL`",
                args.name
            );
            return Ok(Exit::Usage);
        };
        tracing::info!(agent = %args.name, replica = index, "instance from the pod's ordinal");
        target = crate::manifest::replicas::instance(&target, index);
        target.name = args.name.clone();
    }
    let watch_from_spawn = target.readiness.check == ReadinessCheck::Sdk;
    let mut agents = vec![AgentSpec {
        agent: target,
        remote: false,
    }];
    for dependency in &agent.dependencies {
        if let Some(found) = manifest.agent(&dependency.name)
            && found.enabled
        {
            let mut remote = found.clone();
            remote.dependencies.clear();
            agents.push(AgentSpec {
                agent: remote,
                remote: true,
            });
        }
    }
    let run_dir = match &args.run_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("supervisor-run-one-{}", std::process::id())),
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("creating the run directory {}", run_dir.display()))?;
    let config = supervisor::Config {
        agents,
        strategy: crate::manifest::Strategy::OneForOne,
        sequential: false,
        logs: None,
        console: Some(Console {
            width: args.name.len(),
            color: false,
        }),
        port_offset: std::env::var("PORT_OFFSET").unwrap_or_else(|_| "0".into()),
        sample_interval: None,
        keep_going: false,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("supervisor")
        .build()
        .context("starting the async runtime")?;
    let exit = runtime.block_on(supervise(
        config,
        &args,
        &run_dir,
        heartbeat,
        watch_from_spawn,
    ))?;
    if args.run_dir.is_none() {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(exit)
}

/// The ordinal at the end of the pod's name (`worker-2` -> 2): from
/// `POD_NAME` (the downward API variable the export sets), else `HOSTNAME`
/// (a StatefulSet pod's host name is its name).
fn pod_ordinal() -> Option<u32> {
    ["POD_NAME", "HOSTNAME"].iter().find_map(|variable| {
        let name = std::env::var(variable).ok()?;
        let (_, ordinal) = name.rsplit_once('-')?;
        ordinal.parse().ok()
    })
}

/// What `run-one` exits with (docs/kubernetes.md): the agent's own exit
/// status when it ended on its own (its code, or 128 + the signal that
/// killed it, as a shell reports it), so the container's exit is the
/// agent's; else 1 when it failed (it could not start, or was not ready in
/// time and was stopped), 0 after a stop (SIGTERM from kubelet).
fn exit_of(own_exit: Option<Termination>, failed: bool) -> Exit {
    match own_exit {
        Some(Termination::Code(code)) => Exit::Agent(u8::try_from(code).unwrap_or(1)),
        Some(Termination::Signaled(signal)) => {
            Exit::Agent(u8::try_from(128 + signal).unwrap_or(u8::MAX))
        }
        None if failed => Exit::Problems,
        None => Exit::Ok,
    }
}

/// Runs the agent until it ends or a signal stops it; the exit code
/// ([`exit_of`]).
async fn supervise(
    config: supervisor::Config,
    args: &Args,
    run_dir: &std::path::Path,
    heartbeat: crate::manifest::Heartbeat,
    watch_from_spawn: bool,
) -> anyhow::Result<Exit> {
    let shutdown = Shutdown::new();
    let signals = Signals::listen().context("installing the signal handlers")?;
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::new(args.health_bind, args.health_port))
            .await
            .with_context(|| format!("binding /readyz and /livez on port {}", args.health_port))?;
    let bound = listener
        .local_addr()
        .context("reading the health address")?;
    tracing::info!(agent = %args.name, "readyz and livez on http://{bound}");
    let keeper = std::env::current_exe()
        .and_then(|program| Keeper::start(&program))
        .context("starting the keeper process")?;
    let spawner = ProcessSpawner::start_with_keeper(Some(keeper.link()))
        .context("starting the process spawner")?;
    let (fabric, fabric_link) =
        supervisor::fabric::Fabric::start(&supervisor::fabric::FabricConfig::in_run_dir(run_dir))
            .context("starting the agent endpoint and error bus")?;
    // Subscribed before the agent starts, so its first error is not missed.
    let printer = print_errors(fabric.error_bus().subscribe(), shutdown.token().clone())
        .context("starting the error printer")?;
    let (handle, task) =
        supervisor::spawn_with_fabric(config, spawner, &shutdown, Some(fabric_link));
    let (livez_requests, requests) = mpsc::channel(16);
    shutdown.tracker().spawn(watch_heartbeats(
        handle.clone(),
        args.name.clone(),
        heartbeat,
        watch_from_spawn,
        requests,
        shutdown.token().clone(),
    ));
    let health = Health {
        status: handle.subscribe(),
        heartbeats: livez_requests,
        name: args.name.clone(),
    };
    let app = axum::Router::new()
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .with_state(health);
    let token = shutdown.token().clone();
    shutdown.tracker().spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
        {
            tracing::warn!(%error, "the readyz/livez server stopped");
        }
    });
    let force = handle.clone();
    let signals = tokio::spawn(signals.watch(
        shutdown.token().clone(),
        move || force.try_shutdown(true),
        || tracing::info!("SIGHUP ignored: run-one does not reload"),
    ));
    let outcome = task.await.context("the supervisor task panicked")?;
    signals.abort();
    let last = handle.subscribe().borrow().clone();
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not finish within 5s");
    }
    let _ = tokio::task::spawn_blocking(move || printer.join()).await;
    fabric.stop().await;
    let agent = last.agents.iter().find(|agent| agent.name == args.name);
    if let Some(agent) = agent {
        tracing::info!(agent = %args.name, state = ?agent.state, reason = agent.reason.as_deref().unwrap_or("-"), "run-one ends");
    }
    let failed =
        outcome.failure.is_some() || agent.is_some_and(|agent| agent.state == AgentState::Failed);
    Ok(exit_of(agent.and_then(|agent| agent.own_exit), failed))
}

/// Prints every error record on the bus as one JSON line on stdout, on its
/// own thread, until `token` is cancelled and the bus is quiet.
fn print_errors(
    records: std::sync::mpsc::Receiver<crate::transport::ErrorRecord>,
    token: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use std::sync::mpsc::RecvTimeoutError;
    std::thread::Builder::new()
        .name("error-printer".into())
        .spawn(move || {
            // Once cancelled it still reads until the bus has been quiet
            // for one wait: an error sent just before the agent died must
            // not be lost to the shutdown.
            loop {
                match records.recv_timeout(Duration::from_millis(200)) {
                    Ok(record) => {
                        if let Ok(line) = serde_json::to_string(&record) {
                            crate::process::console::sink_of(
                                crate::process::console::Stream::Stdout,
                            )
                            .push(format!("{line}\n").into_bytes(), 1);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) if token.is_cancelled() => return,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })
}

/// Owns the [`HeartbeatTracker`] of the agent's current run. Fed by every
/// published status, and on each `/livez` request by a fresh one from the
/// supervisor task (published snapshots lag heartbeats by up to a second),
/// then answers with the verdict at that moment.
async fn watch_heartbeats(
    handle: supervisor::SupervisorHandle,
    name: String,
    heartbeat: crate::manifest::Heartbeat,
    watch_from_spawn: bool,
    mut requests: mpsc::Receiver<oneshot::Sender<Option<HeartbeatVerdict>>>,
    token: tokio_util::sync::CancellationToken,
) {
    let mut status = handle.subscribe();
    let mut watcher = Watcher {
        name,
        heartbeat,
        watch_from_spawn,
        run: None,
        last_beat: None,
        tracker: None,
    };
    loop {
        tokio::select! {
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = status.borrow_and_update().clone();
                watcher.update(&snapshot);
            }
            Some(reply) = requests.recv() => {
                if let Some(snapshot) = handle.status().await {
                    watcher.update(&snapshot);
                }
                let verdict = watcher.tracker.as_ref().map(|tracker| tracker.check(std::time::Instant::now()));
                let _ = reply.send(verdict);
            }
            _ = token.cancelled() => return,
        }
    }
}

struct Watcher {
    name: String,
    heartbeat: crate::manifest::Heartbeat,
    /// `readiness: sdk`: heartbeats are due from the spawn; else from the first one.
    watch_from_spawn: bool,
    /// When the current run was spawned.
    run: Option<tokio::time::Instant>,
    last_beat: Option<tokio::time::Instant>,
    tracker: Option<HeartbeatTracker>,
}

impl Watcher {
    fn update(&mut self, snapshot: &StatusSnapshot) {
        let Some(agent) = snapshot.agents.iter().find(|agent| agent.name == self.name) else {
            return;
        };
        let new_tracker = |started: tokio::time::Instant| {
            HeartbeatTracker::new(
                self.heartbeat.interval,
                self.heartbeat.misses,
                self.heartbeat.progress_timeout,
                started.into_std(),
            )
        };
        if agent.running_since != self.run {
            self.run = agent.running_since;
            self.last_beat = None;
            self.tracker = match self.run {
                Some(since) if self.watch_from_spawn => Some(new_tracker(since)),
                _ => None,
            };
        }
        if let Some(at) = agent.heartbeat_at
            && self.last_beat != Some(at)
            && self.run.is_some()
        {
            self.last_beat = Some(at);
            self.tracker
                .get_or_insert_with(|| new_tracker(at))
                .record(at.into_std(), agent.heartbeat.as_ref());
        }
    }
}

async fn readyz(State(health): State<Health>) -> (StatusCode, String) {
    let snapshot = health.status.borrow().clone();
    match snapshot
        .agents
        .iter()
        .find(|agent| agent.name == health.name)
    {
        Some(agent) if agent.state == AgentState::Ready && !snapshot.shutting_down => {
            (StatusCode::OK, "ready\n".into())
        }
        Some(agent) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{}{}\n",
                agent.state.as_str(),
                agent
                    .reason
                    .as_deref()
                    .map(|reason| format!(": {reason}"))
                    .unwrap_or_default()
            ),
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "unknown agent\n".into()),
    }
}

async fn livez(State(health): State<Health>) -> (StatusCode, String) {
    let (reply, answer) = oneshot::channel();
    if health.heartbeats.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    let Ok(verdict) = answer.await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    };
    match verdict {
        None | Some(HeartbeatVerdict::Alive) => (StatusCode::OK, "alive\n".into()),
        Some(HeartbeatVerdict::HeartbeatsMissed { missed, silent_for }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "missed {missed} heartbeats (silent {})\n",
                supervisor::format_duration(silent_for)
            ),
        ),
        Some(HeartbeatVerdict::ProgressStalled { stalled_for }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no progress for {}\n",
                supervisor::format_duration(stalled_for)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_is_the_agents_own_when_it_ended_by_itself() {
        assert_eq!(exit_of(Some(Termination::Code(7)), true), Exit::Agent(7));
        assert_eq!(exit_of(Some(Termination::Code(0)), false), Exit::Agent(0));
        assert_eq!(
            exit_of(Some(Termination::Signaled(9)), true),
            Exit::Agent(137)
        );
        assert_eq!(exit_of(None, true), Exit::Problems);
        assert_eq!(exit_of(None, false), Exit::Ok);
        assert_eq!(Exit::Agent(137).code(), 137);
    }
}
