//! The supervisor's side of the agent fabric: starts the agent endpoint and
//! the error bus ([`Fabric`], owned by `up`), registers a fresh token for
//! every run of every agent (`Registrar`, owned by the run loop), and runs
//! the bridge task that turns authenticated [`EndpointEvent`]s into loop
//! [`Event`]s and answers RESOLVE requests.
//!
//! Owns the sockets' lifetimes (through `transport`'s handles). The table
//! "agent name -> token, current run, endpoint" is the endpoint's
//! [`AgentTable`]: the registrar writes it, the endpoint checks tokens
//! against it and the bridge maps messages to runs and answers RESOLVE from
//! it. Does not own agent state: READY, heartbeats and errors become events that
//! `lifecycle::agent_reports` decides about; RESOLVE reads the published
//! [`StatusSnapshot`], so answers follow restarts and port changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::event::{AgentId, Event, StatusSnapshot};
use super::state::AgentState;
use crate::transport::{
    self, AgentEndpoint, AgentTable, EndpointConfig, EndpointEvent, EndpointHandle, ErrorBus,
    ErrorBusConfig, ErrorBusHandle, Resolution, TransportError,
};

/// Endpoint events queued between the endpoint thread and the bridge; beyond
/// this the endpoint drops heartbeats (counted) and answers READY `busy`.
const EVENT_CAPACITY: usize = 4096;

/// `<run-dir>/fabric.json`: where the endpoint and the error bus listen.
pub const DESCRIPTION_FILE: &str = "fabric.json";

/// Unix socket paths are limited to 107 bytes (`sun_path`).
fn fits_ipc(path: &Path) -> bool {
    path.as_os_str().len() < 100
}

/// Where the fabric listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricConfig {
    /// `errors.jsonl`, `errors.sock` and (by default) `agents.sock` go here.
    pub run_dir: PathBuf,
    /// Where agents connect, e.g. `tcp://0.0.0.0:7300` for agents on other
    /// hosts; `None`: `ipc://<run_dir>/agents.sock`.
    pub agent_endpoint: Option<String>,
    /// Where legacy `ERROR:` publishers connect (a SUB bind, e.g.
    /// `tcp://0.0.0.0:7150`); `None` turns legacy intake off.
    pub legacy_errors: Option<String>,
}

impl FabricConfig {
    /// The defaults for a run directory: ipc endpoints, no legacy port.
    pub fn in_run_dir(run_dir: &Path) -> FabricConfig {
        FabricConfig {
            run_dir: run_dir.to_path_buf(),
            agent_endpoint: None,
            legacy_errors: None,
        }
    }
}

/// The running endpoint and error bus threads. `up` holds it and calls
/// [`Fabric::stop`] after the supervisor ended.
#[derive(Debug)]
pub struct Fabric {
    endpoint: EndpointHandle,
    bus: ErrorBusHandle,
    /// The endpoint thread, then the error bus thread; joined by `stop`.
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What the run loop needs of the fabric; handed to
/// [`super::spawn_with_fabric`].
#[derive(Debug)]
pub struct FabricLink {
    endpoint: EndpointHandle,
    /// Sent to by the endpoint thread; read by the bridge task.
    events: mpsc::Receiver<EndpointEvent>,
    /// The run directory, given to agents as `SUPERVISOR_RUN_DIR`.
    run_dir: PathBuf,
}

impl Fabric {
    /// Opens `errors.jsonl`, binds the error bus PUB (and the legacy SUB)
    /// and the agent endpoint, and starts their threads.
    /// Where they listen is also written to `<run-dir>/fabric.json` (read
    /// by `supervisor errors --follow`). A run directory too long for a Unix
    /// socket path gets loopback `tcp://` endpoints instead.
    pub fn start(config: &FabricConfig) -> Result<(Fabric, FabricLink), TransportError> {
        let mut bus_config = ErrorBusConfig::in_run_dir(&config.run_dir);
        bus_config.legacy = config.legacy_errors.clone();
        if !fits_ipc(&config.run_dir.join("errors.sock")) {
            bus_config.publish = Some("tcp://127.0.0.1:*".into());
        }
        let (bus, bus_thread) = ErrorBus::spawn(&bus_config)?;
        let endpoint_config = match &config.agent_endpoint {
            Some(bind) => EndpointConfig::at(bind),
            None if !fits_ipc(&config.run_dir.join("agents.sock")) => {
                EndpointConfig::at("tcp://127.0.0.1:*")
            }
            None => EndpointConfig::in_run_dir(&config.run_dir),
        };
        let (sender, events) = mpsc::channel(EVENT_CAPACITY);
        let (endpoint, endpoint_thread) =
            match AgentEndpoint::spawn(&endpoint_config, sender, Some(bus.sink())) {
                Ok(pair) => pair,
                Err(error) => {
                    bus.stop();
                    let _ = bus_thread.join();
                    return Err(error);
                }
            };
        let description = serde_json::json!({
            "agents": endpoint.endpoint(),
            "errors": bus.publish_endpoint(),
            "legacy_errors": bus.legacy_endpoint(),
            "journal": bus_config.journal,
        });
        let path = config.run_dir.join(DESCRIPTION_FILE);
        if let Err(error) = crate::files::replace(&path, format!("{description:#}\n").as_bytes()) {
            tracing::warn!(path = %path.display(), %error, "cannot write the fabric description");
        }
        tracing::info!(
            agents = %endpoint.endpoint(),
            errors = bus.publish_endpoint().unwrap_or("-"),
            legacy = bus.legacy_endpoint().unwrap_or("-"),
            "agent fabric listening"
        );
        Ok((
            Fabric {
                endpoint: endpoint.clone(),
                bus,
                threads: vec![endpoint_thread, bus_thread],
            },
            FabricLink {
                endpoint,
                events,
                // Absolute: agents run in directories of their own.
                run_dir: std::path::absolute(&config.run_dir)
                    .unwrap_or_else(|_| config.run_dir.clone()),
            },
        ))
    }

    pub fn endpoint(&self) -> &EndpointHandle {
        &self.endpoint
    }

    pub fn error_bus(&self) -> &ErrorBusHandle {
        &self.bus
    }

    /// Stops the endpoint (no more agent messages), then the bus (after it
    /// wrote everything queued), and joins both threads off the runtime.
    pub async fn stop(self) {
        self.endpoint.stop();
        self.bus.stop();
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        if tokio::time::timeout(Duration::from_secs(5), joined)
            .await
            .is_err()
        {
            tracing::warn!("the agent fabric threads did not stop within 5s");
        }
    }
}

/// One run of one agent, about to be spawned.
#[derive(Debug)]
pub(super) struct Registration {
    pub name: String,
    pub agent: AgentId,
    pub run: u64,
    /// From the manifest (`tcp://address:port`), if it has a port.
    pub endpoint: Option<String>,
}

/// The run loop's side: registers each run's token before the spawn.
#[derive(Debug)]
pub(super) struct Registrar {
    endpoint: EndpointHandle,
    /// Given to agents as `SUPERVISOR_RUN_DIR` (for data of their own).
    run_dir: PathBuf,
}

impl Registrar {
    /// A fresh token for this run, accepted by the endpoint from now on (a
    /// message of an older process of the agent is rejected); returns the
    /// variables to give the process.
    pub fn register(
        &self,
        registration: Registration,
        interval: Duration,
    ) -> Vec<(String, String)> {
        let token = transport::generate_token();
        self.endpoint.table().register_run(
            &registration.name,
            &token,
            registration.agent,
            registration.run,
            registration.endpoint,
        );
        // The names of docs/protocol.md, section 1.
        vec![
            (
                "SUPERVISOR_ENDPOINT".to_string(),
                self.endpoint.endpoint().to_string(),
            ),
            ("AGENT_TOKEN".to_string(), token),
            (
                "AGENT_HEARTBEAT_INTERVAL_MS".to_string(),
                interval.as_millis().max(1).to_string(),
            ),
            (
                "SUPERVISOR_RUN_DIR".to_string(),
                self.run_dir.display().to_string(),
            ),
        ]
    }

    /// The table, to revoke a run's token once its process exited.
    pub fn table(&self) -> &AgentTable {
        self.endpoint.table()
    }
}

/// Starts the bridge task on `tracker`; returns the loop's registrar.
/// `known` names every agent of the manifest with where it serves, so
/// RESOLVE finds agents that have not run yet (or run on another host).
pub(super) fn start_bridge(
    link: FabricLink,
    known: HashMap<String, Option<String>>,
    events: mpsc::UnboundedSender<Event>,
    status: watch::Receiver<StatusSnapshot>,
    token: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Registrar {
    let table = link.endpoint.table().clone();
    for (name, endpoint) in known {
        table.declare(&name, endpoint);
    }
    tracker.spawn(run(
        Bridge {
            table,
            events,
            status,
        },
        link.events,
        token,
    ));
    Registrar {
        endpoint: link.endpoint,
        run_dir: link.run_dir,
    }
}

struct Bridge {
    /// Which run an agent's message belongs to; where agents serve.
    table: AgentTable,
    /// The loop's inbox; the loop holds a sender too, so it stays open.
    events: mpsc::UnboundedSender<Event>,
    /// The published status, for RESOLVE.
    status: watch::Receiver<StatusSnapshot>,
}

/// Forwards endpoint events until the token is cancelled or the endpoint
/// stopped.
async fn run(
    mut bridge: Bridge,
    mut endpoint_events: mpsc::Receiver<EndpointEvent>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            event = endpoint_events.recv() => match event {
                Some(event) => bridge.forward(event),
                None => return,
            },
            _ = token.cancelled() => return,
        }
    }
}

impl Bridge {
    fn current(&self, name: &str) -> Option<(AgentId, u64)> {
        self.table.run_of(name)
    }

    fn forward(&mut self, event: EndpointEvent) {
        let event = match event {
            EndpointEvent::ReportedReady { agent } => {
                let Some((agent, run)) = self.current(&agent) else {
                    return;
                };
                Event::ReportedReady { agent, run }
            }
            EndpointEvent::HeartbeatReceived { agent, payload, .. } => {
                let Some((agent, run)) = self.current(&agent) else {
                    return;
                };
                Event::HeartbeatReceived {
                    agent,
                    run,
                    payload,
                }
            }
            EndpointEvent::ErrorReported { record } => {
                let Some((agent, run)) = self.current(&record.agent) else {
                    return;
                };
                Event::ErrorReported {
                    agent,
                    run,
                    severity: record.severity,
                    message: record.message,
                }
            }
            EndpointEvent::Advertised { agent, endpoint } => {
                if self.table.advertise(&agent, &endpoint) {
                    tracing::info!(%agent, %endpoint, "serves on");
                }
                return;
            }
            EndpointEvent::ResolveRequested { agent, name, reply } => {
                let resolution = self.resolve(&name, &agent);
                tracing::debug!(%agent, %name, ?resolution, "resolve");
                match resolution {
                    Some(resolution) => reply.answer(resolution),
                    None => drop(reply), // answers "not found"
                }
                return;
            }
            EndpointEvent::Connected { agent, pid } => {
                tracing::debug!(%agent, ?pid, "agent connected");
                return;
            }
            EndpointEvent::Rejected { agent, reason } => {
                tracing::debug!(?agent, ?reason, "agent message rejected");
                return;
            }
        };
        let _ = self.events.send(event);
    }

    /// Where `name` is and its state now; `None` when nobody knows it. An
    /// `Idle` agent is woken (`Event::WakeRequested`, asked by `by`) and
    /// answered `starting` with its manifest endpoint, so the caller
    /// resolves again until `ready` (a READY endpoint of the idle run is
    /// not answered: the new run may serve elsewhere).
    fn resolve(&self, name: &str, by: &str) -> Option<Resolution> {
        // An agent of another host awaited here as `HOST/NAME` is found by
        // its plain name too (unless this host has its own `NAME`).
        let table = self.table.read();
        let name = if table.contains_key(name) {
            name
        } else {
            table
                .keys()
                .find(|key| {
                    crate::manifest::names::split(key).is_some_and(|(_, plain)| plain == name)
                })
                .map_or(name, String::as_str)
        };
        let endpoint = |name: &str| {
            table
                .get(name)
                .and_then(|entry| entry.advertised.clone().or(entry.endpoint.clone()))
        };
        let status = self.status.borrow();
        let core_state = status
            .agents
            .iter()
            .find(|agent| agent.name == name)
            .map(|agent| agent.state);
        let shutting_down = status.shutting_down;
        // An agent with `replicas` is its instances, by index.
        let mut instances: Vec<(u32, transport::Instance)> = status
            .agents
            .iter()
            .filter_map(|agent| {
                let (of, index) = agent.replica.as_ref()?;
                (of == name).then(|| {
                    (
                        *index,
                        transport::Instance {
                            name: agent.name.clone(),
                            endpoint: endpoint(&agent.name),
                            state: protocol_state(agent.state),
                        },
                    )
                })
            })
            .collect();
        drop(status);
        instances.sort_by_key(|(index, _)| *index);
        let instances: Vec<transport::Instance> = instances
            .into_iter()
            .map(|(_, instance)| instance)
            .collect();
        let entry = table.get(name);
        if core_state == Some(AgentState::Idle)
            && !shutting_down
            && let Some((agent, _)) = entry.and_then(|entry| entry.run)
        {
            let _ = self.events.send(Event::WakeRequested {
                agent,
                by: by.to_string(),
            });
            // Where the idle run served is stale until the new run's READY.
            return Some(Resolution {
                endpoint: entry.and_then(|entry| entry.endpoint.clone()),
                state: transport::AgentState::Starting,
                instances: Vec::new(),
            });
        }
        let state = core_state.map(protocol_state);
        if state.is_none() && entry.is_none() {
            let first = instances
                .iter()
                .find(|instance| instance.state == transport::AgentState::Ready)
                .or(instances.first())?;
            return Some(Resolution {
                endpoint: first.endpoint.clone(),
                state: first.state,
                instances,
            });
        }
        Some(Resolution {
            endpoint: endpoint(name),
            state: state.unwrap_or(transport::AgentState::Unknown),
            instances: Vec::new(),
        })
    }
}

/// The wire name of a state (`blocked` is reported as `pending`, `idle` as
/// `stopped`: RESOLVE wakes an idle agent and answers `starting` instead).
fn protocol_state(state: AgentState) -> transport::AgentState {
    match state {
        AgentState::Pending | AgentState::Blocked => transport::AgentState::Pending,
        AgentState::Starting => transport::AgentState::Starting,
        AgentState::Ready => transport::AgentState::Ready,
        AgentState::BackingOff => transport::AgentState::BackingOff,
        AgentState::Stopping => transport::AgentState::Stopping,
        AgentState::Stopped | AgentState::Idle => transport::AgentState::Stopped,
        AgentState::Failed => transport::AgentState::Failed,
    }
}
