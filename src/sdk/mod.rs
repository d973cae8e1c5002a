//! The agent SDK: what an agent process links to talk to its supervisor.
//! Blocking API, no async runtime required.
//!
//! With the cargo feature `async`, the calls that wait (for the supervisor's
//! answer, a reply or shutdown) also come as `async fn`s for agents running on
//! Tokio: `Agent::ready_async`, `Agent::ready_at_async`,
//! `Agent::resolve_async`, `Agent::wait_for_shutdown_async`,
//! `SocketPool::request_async` and `ShutdownSignal::wait_async` (documented
//! by `cargo doc --features async`). The other calls never block and are the
//! same in both worlds.
//!
//! ```no_run
//! use supervisor::sdk::{Agent, Severity};
//!
//! let agent = Agent::from_env_or_standalone("my-agent");
//! // ... bind sockets, load models ...
//! agent.ready()?;
//! while !agent.shutdown_requested() {
//!     // ... one unit of work ...
//!     agent.progress(Default::default());
//! #   break;
//! }
//! agent.report_error(Severity::Warning, "stopping with work queued").kind("shutdown").send();
//! # Ok::<(), supervisor::sdk::SdkError>(())
//! ```
//!
//! Calls to other agents through [`Agent::pool`] pass a circuit breaker per
//! target ([`Breakers`]; closed → open after repeated failures → half-open
//! after a pause → closed on a good trial); wrap other calls (a database, a
//! cache) in [`Agent::breakers`] too. Every heartbeat reports them, and
//! `supervisor status` shows the agent degraded while one is open.
//!
//! Owns the public agent API: reading the injected environment, READY,
//! progress payloads, error reports, RESOLVE, the shutdown signal, and the
//! re-exported [`SocketPool`]. Depends on `crate::transport` alone (the wire
//! protocol and the socket thread live there; see `docs/protocol.md`), never
//! on the supervisor, process or CLI modules, so it can become its own crate.

#[cfg(feature = "async")]
mod async_calls;
mod shutdown;

use std::time::Duration;

use serde_json::{Map, Value};

pub use crate::transport::breaker::{
    BreakerConfig, BreakerError, BreakerReport, BreakerState, Breakers,
};
pub use crate::transport::messages::{AgentState, HeartbeatPayload, Severity};
pub use crate::transport::pool::{PoolConfig, PoolStats, PooledSocket, SocketKind, SocketPool};
pub use crate::transport::{LinkStats, TransportError};
pub use shutdown::{ShutdownSignal, process_signal};

use crate::transport::agent_link::{AgentLink, AgentLinkHandle, LinkSettings};
use crate::transport::messages::{AgentMessage, ErrorFields, MessageKind, Reply, now_unix_millis};

/// The variable holding the supervisor's agent endpoint.
pub const ENDPOINT_VARIABLE: &str = "SUPERVISOR_ENDPOINT";
/// The variable holding this agent's name.
pub const NAME_VARIABLE: &str = "AGENT_NAME";
/// The variable holding this agent's secret token.
pub const TOKEN_VARIABLE: &str = "AGENT_TOKEN";
/// The variable holding the heartbeat interval in milliseconds (default 1000).
pub const HEARTBEAT_VARIABLE: &str = "AGENT_HEARTBEAT_INTERVAL_MS";
/// The variable holding `{"dependency": "endpoint", ...}` as JSON.
pub const DEPENDENCIES_VARIABLE: &str = "AGENT_DEPENDENCIES";

/// How long calls that wait for the supervisor (READY, RESOLVE) wait.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// A variable the supervisor injects is missing: the agent was not
    /// started by `supervisor up` (use [`Agent::standalone`] to run by hand).
    #[error(
        "`{variable}` is not set: this agent was not started by the supervisor \
         (run it with `supervisor up`, or use Agent::standalone / from_env_or_standalone)"
    )]
    NotSupervised {
        /// The first missing (or empty) variable, e.g. `SUPERVISOR_ENDPOINT`.
        variable: &'static str,
    },
    /// A variable is set but unusable.
    #[error("`{variable}`={value:?}: {reason}")]
    InvalidVariable {
        /// The variable's name, e.g. `AGENT_HEARTBEAT_INTERVAL_MS`.
        variable: &'static str,
        /// Its value as read, unchanged.
        value: String,
        /// Why it was refused, in words.
        reason: String,
    },
    /// RESOLVE: the supervisor does not know this agent.
    #[error("the supervisor knows no agent `{name}`")]
    NotFound {
        /// The agent name that was asked for.
        name: String,
    },
    /// The connection failed: the endpoint could not be reached, the
    /// supervisor did not answer within [`AgentSettings::call_timeout`], or it
    /// rejected the message (bad token, unknown agent, "busy" past the
    /// timeout). See [`TransportError`] for the cases.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Everything [`Agent::connect`] needs; [`Agent::from_env`] fills it from
/// the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// This agent's name as the manifest spells it (`AGENT_NAME`); the
    /// supervisor rejects messages under a name it did not start.
    pub name: String,
    /// The supervisor's agent endpoint (`SUPERVISOR_ENDPOINT`), a ZeroMQ
    /// address such as `ipc:///run/sv/agents.sock` or `tcp://127.0.0.1:5555`.
    pub endpoint: String,
    /// The per-agent secret (`AGENT_TOKEN`) sent with every message; a new
    /// one is issued on each start, so a stale process cannot speak for a
    /// restarted agent.
    pub token: String,
    /// Time between heartbeats (`AGENT_HEARTBEAT_INTERVAL_MS`, default 1 s,
    /// never zero). The supervisor's `heartbeat.timeout` should be a few
    /// intervals long.
    pub heartbeat_interval: Duration,
    /// How long READY and RESOLVE wait for the supervisor (5 s from
    /// [`AgentSettings::from_env`]).
    pub call_timeout: Duration,
}

impl AgentSettings {
    /// Reads `SUPERVISOR_ENDPOINT`, `AGENT_NAME`, `AGENT_TOKEN` and
    /// `AGENT_HEARTBEAT_INTERVAL_MS`.
    ///
    /// # Errors
    ///
    /// [`SdkError::NotSupervised`] if one of the first three is unset or
    /// empty; [`SdkError::InvalidVariable`] if the heartbeat interval is not
    /// a whole number of milliseconds of at least 1. Does not connect.
    ///
    /// ```
    /// match supervisor::sdk::AgentSettings::from_env() {
    ///     Ok(settings) => println!("supervised as {}", settings.name),
    ///     Err(error) => println!("{error}"),
    /// }
    /// ```
    pub fn from_env() -> Result<AgentSettings, SdkError> {
        let required = |variable: &'static str| {
            std::env::var(variable)
                .ok()
                .filter(|value| !value.is_empty())
                .ok_or(SdkError::NotSupervised { variable })
        };
        let endpoint = required(ENDPOINT_VARIABLE)?;
        let name = required(NAME_VARIABLE)?;
        let token = required(TOKEN_VARIABLE)?;
        let heartbeat_interval = match std::env::var(HEARTBEAT_VARIABLE) {
            Ok(value) => {
                let millis: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| SdkError::InvalidVariable {
                        variable: HEARTBEAT_VARIABLE,
                        value: value.clone(),
                        reason: "expected milliseconds as a whole number".into(),
                    })?;
                if millis == 0 {
                    return Err(SdkError::InvalidVariable {
                        variable: HEARTBEAT_VARIABLE,
                        value,
                        reason: "must be at least 1".into(),
                    });
                }
                Duration::from_millis(millis)
            }
            Err(_) => Duration::from_secs(1),
        };
        Ok(AgentSettings {
            name,
            endpoint,
            token,
            heartbeat_interval,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        })
    }
}

/// Where another agent is, as [`Agent::resolve`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The agent that was asked for.
    pub name: String,
    /// Where to connect; `None` if it has no endpoint.
    pub endpoint: Option<String>,
    /// Its state now (`Unknown` in standalone mode).
    pub state: AgentState,
}

/// This agent's connection to its supervisor.
///
/// Supervised (from [`Agent::from_env`] / [`Agent::connect`]): a background
/// thread says HELLO, sends a heartbeat every interval with the latest
/// [`Agent::progress`] payload, and carries READY, errors and RESOLVE.
/// Standalone ([`Agent::standalone`]): the same calls log and succeed.
/// Dropping the agent stops the thread after flushing queued messages.
#[derive(Debug)]
pub struct Agent {
    /// This agent's name (`AGENT_NAME`).
    name: String,
    /// `None` in standalone mode.
    link: Option<Link>,
    /// The process-wide signal SIGTERM/SIGINT set.
    shutdown: ShutdownSignal,
    /// Client sockets for talking to other agents ([`Agent::pool`]).
    pool: SocketPool,
    /// How long READY and RESOLVE wait for the supervisor.
    call_timeout: Duration,
}

/// The supervised half of an [`Agent`]: the link thread and its handle.
#[derive(Debug)]
struct Link {
    /// Talks to the link thread; dropping the agent stops it.
    handle: AgentLinkHandle,
    /// Joined on drop so queued errors are flushed before the process exits.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Connects using the variables the supervisor injects. Fails with
    /// [`SdkError::NotSupervised`] naming the missing variable otherwise.
    ///
    /// ```no_run
    /// let agent = supervisor::sdk::Agent::from_env()?;
    /// agent.ready()?;
    /// # Ok::<(), supervisor::sdk::SdkError>(())
    /// ```
    pub fn from_env() -> Result<Agent, SdkError> {
        Agent::connect(AgentSettings::from_env()?)
    }

    /// [`Agent::from_env`] when supervised, else [`Agent::standalone`] under
    /// `AGENT_NAME` or `default_name` (with a log line saying so). Fails
    /// only on a broken environment, never on a missing one.
    ///
    /// ```
    /// let agent = supervisor::sdk::Agent::from_env_or_standalone("demo");
    /// println!("running as {}", agent.name());
    /// ```
    pub fn from_env_or_standalone(default_name: &str) -> Agent {
        match Agent::from_env() {
            Ok(agent) => agent,
            Err(error) => {
                let name =
                    std::env::var(NAME_VARIABLE).unwrap_or_else(|_| default_name.to_string());
                tracing::info!(%error, "running standalone");
                Agent::standalone(&name)
            }
        }
    }

    /// Connects with explicit settings (tests, or agents configured otherwise).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use supervisor::sdk::{Agent, AgentSettings};
    /// let agent = Agent::connect(AgentSettings {
    ///     name: "worker".into(),
    ///     endpoint: "ipc:///run/sv/agents.sock".into(),
    ///     token: "secret".into(),
    ///     heartbeat_interval: Duration::from_secs(1),
    ///     call_timeout: Duration::from_secs(5),
    /// })?;
    /// # Ok::<(), supervisor::sdk::SdkError>(())
    /// ```
    pub fn connect(settings: AgentSettings) -> Result<Agent, SdkError> {
        Agent::connect_with_pool(settings, SocketPool::new())
    }

    /// [`Agent::connect`] with a pool of your own configuration (e.g. other
    /// circuit breaker thresholds: [`PoolConfig::breaker`]); heartbeats
    /// carry that pool's breakers.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use supervisor::sdk::{Agent, AgentSettings, BreakerConfig, PoolConfig, SocketPool};
    /// let pool = SocketPool::with_config(PoolConfig {
    ///     breaker: Some(BreakerConfig { failure_threshold: 3, ..BreakerConfig::default() }),
    ///     ..PoolConfig::default()
    /// });
    /// let agent = Agent::connect_with_pool(AgentSettings::from_env()?, pool)?;
    /// # Ok::<(), supervisor::sdk::SdkError>(())
    /// ```
    pub fn connect_with_pool(settings: AgentSettings, pool: SocketPool) -> Result<Agent, SdkError> {
        let (handle, thread) = AgentLink::spawn(
            LinkSettings {
                endpoint: settings.endpoint,
                agent: settings.name.clone(),
                token: settings.token,
                heartbeat_interval: settings.heartbeat_interval,
                sdk: concat!("rust/", env!("CARGO_PKG_VERSION")).to_string(),
            },
            Some(pool.breakers().clone()),
        )?;
        // A request through the pool that goes unanswered resolves its
        // target again: that starts an agent stopped as idle (the reply is
        // not awaited; the pool's retries reach the agent once it listens).
        let waker = handle.clone();
        let asking = settings.name.clone();
        pool.on_unanswered(move |name| {
            let mut message = AgentMessage::new(MessageKind::Resolve, &asking, "", 0);
            message.name = Some(name.to_string());
            let _ = waker.post(message);
        });
        Ok(Agent {
            name: settings.name,
            link: Some(Link {
                handle,
                thread: Some(thread),
            }),
            shutdown: process_signal(),
            pool,
            call_timeout: settings.call_timeout,
        })
    }

    /// An agent run by hand: no supervisor, every call logs and succeeds,
    /// [`Agent::resolve`] reads `<NAME>_ENDPOINT` / `AGENT_DEPENDENCIES`.
    ///
    /// ```
    /// let agent = supervisor::sdk::Agent::standalone("demo");
    /// assert!(!agent.is_supervised());
    /// agent.ready().unwrap();
    /// ```
    pub fn standalone(name: &str) -> Agent {
        Agent {
            name: name.to_string(),
            link: None,
            shutdown: process_signal(),
            pool: SocketPool::new(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// This agent's name.
    ///
    /// ```
    /// assert_eq!(supervisor::sdk::Agent::standalone("demo").name(), "demo");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when connected to a supervisor.
    ///
    /// ```
    /// assert!(!supervisor::sdk::Agent::standalone("demo").is_supervised());
    /// ```
    pub fn is_supervised(&self) -> bool {
        self.link.is_some()
    }

    /// Tells the supervisor this agent is ready (for `readiness: sdk`) and
    /// waits for the acknowledgement, retrying while the supervisor is busy.
    ///
    /// ```no_run
    /// let agent = supervisor::sdk::Agent::from_env()?;
    /// agent.ready()?;
    /// # Ok::<(), supervisor::sdk::SdkError>(())
    /// ```
    pub fn ready(&self) -> Result<(), SdkError> {
        self.report_ready(None)
    }

    /// Like [`Agent::ready`], also telling the supervisor where this agent
    /// serves: [`Agent::resolve`] in other agents then answers `endpoint`
    /// (useful after binding port 0, so a restart may change the port).
    ///
    /// ```no_run
    /// let agent = supervisor::sdk::Agent::from_env()?;
    /// agent.ready_at("tcp://127.0.0.1:41234")?;
    /// # Ok::<(), supervisor::sdk::SdkError>(())
    /// ```
    pub fn ready_at(&self, endpoint: &str) -> Result<(), SdkError> {
        self.report_ready(Some(endpoint))
    }

    /// READY (with `endpoint`, if any), retried every
    /// `READY_RETRY_PAUSE` while the supervisor answers `busy`, until the
    /// call timeout.
    fn report_ready(&self, endpoint: Option<&str>) -> Result<(), SdkError> {
        let Some(link) = &self.link else {
            tracing::info!(agent = %self.name, ?endpoint, "standalone: ready");
            return Ok(());
        };
        let deadline = std::time::Instant::now() + self.call_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let outcome = link.handle.call(
                self.ready_message(endpoint),
                remaining.max(Duration::from_millis(1)),
            );
            match outcome {
                Ok(_) => return Ok(()),
                Err(error) if is_busy(&error) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(READY_RETRY_PAUSE);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The READY message (envelope filled in by the link thread).
    fn ready_message(&self, endpoint: Option<&str>) -> AgentMessage {
        let mut message = AgentMessage::new(MessageKind::Ready, &self.name, "", 0);
        message.endpoint = endpoint.map(str::to_string);
        message
    }

    /// Attaches a progress payload to every following heartbeat. When
    /// `last_progress_ms` is unset it is set to now: calling `progress` is
    /// what counts as progress for `heartbeat.progress_timeout`.
    ///
    /// ```
    /// use supervisor::sdk::{Agent, HeartbeatPayload};
    /// let agent = Agent::standalone("demo");
    /// agent.progress(HeartbeatPayload { queue_depth: Some(12), in_flight: Some(2), ..Default::default() });
    /// ```
    pub fn progress(&self, mut payload: HeartbeatPayload) {
        if payload.last_progress_ms.is_none() {
            payload.last_progress_ms = Some(now_unix_millis());
        }
        match &self.link {
            Some(link) => link.handle.set_payload(payload),
            None => tracing::debug!(agent = %self.name, ?payload, "standalone: progress"),
        }
    }

    /// Reports `in_flight` pieces of work being processed now (and none
    /// queued), as a progress payload (replacing the previous one, like
    /// [`Agent::progress`]). With `idle_stop` in the manifest, an agent
    /// whose heartbeats say `busy(0)` (see [`Agent::idle`]) for that long,
    /// without new progress, is stopped and started again on demand
    /// (docs/protocol.md, *Idle*).
    ///
    /// ```
    /// let agent = supervisor::sdk::Agent::standalone("demo");
    /// agent.busy(3);
    /// ```
    pub fn busy(&self, in_flight: u64) {
        self.progress(HeartbeatPayload {
            in_flight: Some(in_flight),
            ..HeartbeatPayload::default()
        });
    }

    /// Reports no work: `busy(0)`. Call it when the last piece of work is
    /// done; the idle clock of `idle_stop` starts then.
    ///
    /// ```
    /// let agent = supervisor::sdk::Agent::standalone("demo");
    /// agent.idle();
    /// ```
    pub fn idle(&self) {
        self.busy(0);
    }

    /// Starts an error report; finish it with [`ErrorReport::send`].
    ///
    /// ```
    /// use supervisor::sdk::{Agent, Severity};
    /// let agent = Agent::standalone("demo");
    /// agent
    ///     .report_error(Severity::Error, "database unreachable")
    ///     .kind("database")
    ///     .context("host", "db-1")
    ///     .correlation_id("request-42")
    ///     .send();
    /// ```
    pub fn report_error(&self, severity: Severity, message: &str) -> ErrorReport<'_> {
        ErrorReport {
            agent: self,
            fields: ErrorFields {
                severity,
                message: message.to_string(),
                kind: String::new(),
                context: Map::new(),
                timestamp: Some(crate::transport::messages::now_rfc3339()),
                correlation_id: None,
            },
        }
    }

    /// Asks the supervisor where agent `name` is and in which state; correct
    /// after restarts and port changes.
    ///
    /// ```no_run
    /// let agent = supervisor::sdk::Agent::from_env()?;
    /// let service = agent.resolve("echo-service")?;
    /// println!("{:?} is {:?}", service.endpoint, service.state);
    /// # Ok::<(), supervisor::sdk::SdkError>(())
    /// ```
    pub fn resolve(&self, name: &str) -> Result<Resolved, SdkError> {
        let Some(link) = &self.link else {
            return resolve_from_env(name).map(|found| self.remember(found));
        };
        let reply = link
            .handle
            .call(self.resolve_message(name), self.call_timeout)?;
        resolved(name, reply).map(|found| self.remember(found))
    }

    /// Every instance of agent `name`: for an agent with `replicas`
    /// (`worker`), `worker-0 … worker-(N-1)` with their endpoints and
    /// states, by index; for a plain agent, itself alone. Standalone (no
    /// supervisor), what [`Agent::resolve`] finds from the environment.
    ///
    /// ```no_run
    /// let agent = supervisor::sdk::Agent::from_env()?;
    /// for worker in agent.resolve_all("worker")? {
    ///     println!("{} at {:?} is {:?}", worker.name, worker.endpoint, worker.state);
    /// }
    /// # Ok::<(), supervisor::sdk::SdkError>(())
    /// ```
    pub fn resolve_all(&self, name: &str) -> Result<Vec<Resolved>, SdkError> {
        let Some(link) = &self.link else {
            return resolve_from_env(name).map(|found| vec![self.remember(found)]);
        };
        let reply = link
            .handle
            .call(self.resolve_message(name), self.call_timeout)?;
        let instances = reply.instances.clone();
        let found = resolved(name, reply)?;
        Ok(match instances {
            None => vec![self.remember(found)],
            Some(instances) => instances
                .into_iter()
                .map(|instance| {
                    self.remember(Resolved {
                        name: instance.name,
                        endpoint: instance.endpoint,
                        state: instance.state,
                    })
                })
                .collect(),
        })
    }

    /// Names the resolved endpoint in the pool, so the breaker of requests
    /// to it is reported as the agent's name.
    fn remember(&self, found: Resolved) -> Resolved {
        if let Some(endpoint) = &found.endpoint {
            self.pool.name_endpoint(endpoint, &found.name);
        }
        found
    }

    /// The RESOLVE message for `name`.
    fn resolve_message(&self, name: &str) -> AgentMessage {
        let mut message = AgentMessage::new(MessageKind::Resolve, &self.name, "", 0);
        message.name = Some(name.to_string());
        message
    }

    /// True once SIGTERM/SIGINT arrived (or [`ShutdownSignal::request`] was
    /// called): finish in-flight work and exit within the grace period.
    ///
    /// ```
    /// let agent = supervisor::sdk::Agent::standalone("demo");
    /// if agent.shutdown_requested() {
    ///     return;
    /// }
    /// ```
    pub fn shutdown_requested(&self) -> bool {
        shutdown::signal_arrived() || self.shutdown.is_requested()
    }

    /// Blocks until shutdown is requested or `timeout` passes; returns whether
    /// it was requested. Use as an interruptible sleep.
    ///
    /// ```
    /// let agent = supervisor::sdk::Agent::standalone("demo");
    /// let stop = agent.wait_for_shutdown(Some(std::time::Duration::from_millis(1)));
    /// # let _ = stop;
    /// ```
    pub fn wait_for_shutdown(&self, timeout: Option<Duration>) -> bool {
        self.shutdown.wait(timeout)
    }

    /// The shutdown signal, to hand to worker threads.
    ///
    /// ```
    /// let agent = supervisor::sdk::Agent::standalone("demo");
    /// let signal = agent.shutdown_signal();
    /// std::thread::spawn(move || while !signal.is_requested() { /* work */ break; });
    /// ```
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shutdown.clone()
    }

    /// The agent's socket pool (shared by clones of it).
    ///
    /// ```no_run
    /// let agent = supervisor::sdk::Agent::from_env()?;
    /// let endpoint = agent.resolve("echo")?.endpoint.unwrap_or_default();
    /// let reply = agent.pool().request(&endpoint, b"ping", std::time::Duration::from_secs(1), 3)?;
    /// # drop(reply);
    /// # Ok::<(), supervisor::sdk::SdkError>(())
    /// ```
    pub fn pool(&self) -> &SocketPool {
        &self.pool
    }

    /// This agent's circuit breakers (those of its pool): wrap calls that do
    /// not go through the pool in them; every heartbeat reports them.
    ///
    /// ```
    /// use supervisor::sdk::{Agent, BreakerError};
    /// let agent = Agent::standalone("demo");
    /// let rows = agent.breakers().call("postgres", || Ok::<u32, String>(3));
    /// assert!(matches!(rows, Ok(3)));
    /// # let _: Option<BreakerError<String>> = None;
    /// ```
    pub fn breakers(&self) -> &Breakers {
        self.pool.breakers()
    }

    /// Counters of the connection (heartbeats sent, rejections); `None`
    /// standalone.
    ///
    /// ```
    /// assert!(supervisor::sdk::Agent::standalone("demo").link_stats().is_none());
    /// ```
    pub fn link_stats(&self) -> Option<LinkStats> {
        self.link.as_ref().map(|link| link.handle.stats())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(link) = &mut self.link {
            link.handle.stop();
            if let Some(thread) = link.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Pause before READY is sent again after the supervisor answered "busy".
const READY_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The supervisor answered "busy": READY may be retried.
fn is_busy(error: &TransportError) -> bool {
    matches!(error, TransportError::Rejected { reason, .. } if reason == "busy")
}

/// The answer to RESOLVE `name`.
fn resolved(name: &str, reply: Reply) -> Result<Resolved, SdkError> {
    if reply.found != Some(true) {
        return Err(SdkError::NotFound {
            name: name.to_string(),
        });
    }
    Ok(Resolved {
        name: name.to_string(),
        endpoint: reply.endpoint,
        state: reply.state.unwrap_or(AgentState::Unknown),
    })
}

/// Standalone RESOLVE: `<NAME>_ENDPOINT`, else `AGENT_DEPENDENCIES`.
fn resolve_from_env(name: &str) -> Result<Resolved, SdkError> {
    let variable: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let endpoint = std::env::var(format!("{variable}_ENDPOINT"))
        .ok()
        .or_else(|| {
            let dependencies = std::env::var(DEPENDENCIES_VARIABLE).ok()?;
            let map: Map<String, Value> = serde_json::from_str(&dependencies).ok()?;
            map.get(name)?.as_str().map(str::to_string)
        });
    match endpoint {
        Some(endpoint) => Ok(Resolved {
            name: name.to_string(),
            endpoint: Some(endpoint),
            state: AgentState::Unknown,
        }),
        None => Err(SdkError::NotFound {
            name: name.to_string(),
        }),
    }
}

/// An error report being built; nothing is sent until [`ErrorReport::send`].
///
/// ```
/// use supervisor::sdk::{Agent, Severity};
/// let agent = Agent::standalone("demo");
/// agent.report_error(Severity::Fatal, "cannot continue").send();
/// ```
#[derive(Debug)]
#[must_use = "an error report is sent only by .send()"]
pub struct ErrorReport<'agent> {
    /// Sends it, or logs it when standalone.
    agent: &'agent Agent,
    /// The report as built so far.
    fields: ErrorFields,
}

impl ErrorReport<'_> {
    /// A short machine-readable category (`timeout`, `database`, ...).
    ///
    /// ```
    /// # let agent = supervisor::sdk::Agent::standalone("demo");
    /// agent.report_error(supervisor::sdk::Severity::Error, "slow").kind("timeout").send();
    /// ```
    pub fn kind(mut self, kind: &str) -> Self {
        self.fields.kind = kind.to_string();
        self
    }

    /// Adds one context entry (any JSON value).
    ///
    /// ```
    /// # let agent = supervisor::sdk::Agent::standalone("demo");
    /// agent.report_error(supervisor::sdk::Severity::Info, "retry").context("attempt", 3).send();
    /// ```
    pub fn context(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.context.insert(key.to_string(), value.into());
        self
    }

    /// Ties the error to a request or job across agents.
    ///
    /// ```
    /// # let agent = supervisor::sdk::Agent::standalone("demo");
    /// agent.report_error(supervisor::sdk::Severity::Error, "failed").correlation_id("job-7").send();
    /// ```
    pub fn correlation_id(mut self, id: &str) -> Self {
        self.fields.correlation_id = Some(id.to_string());
        self
    }

    /// Queues the report for the supervisor (it is sent in order with this
    /// agent's other errors and flushed before the agent is dropped).
    /// Returns false only if the connection thread has stopped.
    ///
    /// ```
    /// # let agent = supervisor::sdk::Agent::standalone("demo");
    /// assert!(agent.report_error(supervisor::sdk::Severity::Debug, "hello").send());
    /// ```
    pub fn send(self) -> bool {
        let Some(link) = &self.agent.link else {
            tracing::warn!(
                agent = %self.agent.name,
                severity = %self.fields.severity,
                kind = %self.fields.kind,
                "standalone: error: {}",
                self.fields.message
            );
            return true;
        };
        let mut message = AgentMessage::new(MessageKind::Error, &self.agent.name, "", 0);
        message.error = Some(self.fields);
        link.handle.post(message).is_ok()
    }
}
