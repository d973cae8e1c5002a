//! The control protocol: one JSON object per line each way over
//! `control.sock`, a [`Request`] answered by exactly one [`Response`]; a
//! connection may carry several requests in turn. Documented for humans in
//! `docs/protocol.md` ("Control plane").
//!
//! Owns the wire types and the conversion of a
//! [`crate::supervisor::StatusSnapshot`] into [`StatusView`]; no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::supervisor::{ReloadSummary, StatusSnapshot};

/// Requests larger than this (bytes, newline included) are refused and the
/// connection closed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The shortest time between two answers to a `watch`.
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// One request line, e.g. `{"command":"stop","agents":["api"]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Answers `{"ok":true,"pid":N}`: the supervisor is alive.
    Ping,
    /// Answers with `status`.
    Status,
    /// Answers with `status` now and again after every change (at most once
    /// per [`WATCH_INTERVAL`]), on the same connection, until the client
    /// closes it. Leaves out `escaped_pids` (a `/proc` scan per agent) so a
    /// watcher costs the supervisor little. The dashboard uses it.
    Watch,
    /// The agents, and the stopped or failed dependencies they need, go
    /// back to pending and start in dependency order; dependents stopped
    /// only because a `stop` of them took them along come back too.
    Start {
        /// Agent names; an unknown one refuses the whole request.
        agents: Vec<String>,
    },
    /// The agents and every agent depending on them stop, dependents
    /// first, and stay stopped (`held`) until `start`.
    Stop {
        /// Agent names; an unknown one refuses the whole request.
        agents: Vec<String>,
    },
    /// Running agents are stopped and started again; agents that were not
    /// running are started.
    Restart {
        /// Agent names; an unknown one refuses the whole request.
        agents: Vec<String>,
        /// Also restart every transitive dependent (stopped leaves first,
        /// started in dependency order); default false: dependents keep
        /// running.
        #[serde(default)]
        with_dependents: bool,
    },
    /// Load and check the manifests again; apply them if they pass.
    Reload,
    /// Run `count` instances of the agent with `replicas` called `agent`:
    /// extra instances stop (highest index first), new ones start. Answers
    /// `reload` with the instances added and removed; refused for an agent
    /// without `replicas` or below its `min_ready`. Reloads keep the count
    /// until one changes the manifest's `replicas:` (docs/manifest.md).
    Scale {
        /// The agent as the manifest names it (`worker`).
        agent: String,
        /// How many instances to run.
        count: u32,
    },
    /// Stop everything in reverse dependency order and exit; `force` kills.
    Down {
        /// Skip the grace: SIGKILL at once (what a second SIGTERM does).
        #[serde(default)]
        force: bool,
        /// Also tell every peer host (peer link) to go down.
        #[serde(default)]
        all_hosts: bool,
    },
    /// Lines of another host's agent logs, read there and carried over the
    /// peer link (`logs` of a remote agent, or merged across hosts).
    /// Answers with `logs`; refused without a link or while `host` cannot
    /// be reached.
    PeerLogs {
        /// The peer host whose logs to read.
        host: String,
        /// What to read there (its own agent names).
        query: crate::link::logs::LogQuery,
    },
}

/// One response line. `ok: false` comes with `error` (and, for a refused
/// reload, every problem in `errors`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when `ok` is false (one line for a human).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A refused `reload`: every problem of the new manifests, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// The supervisor's pid (`ping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Every agent a `start`, `stop` or `restart` affects, in dependency
    /// order (the named ones, the dependencies started with them, the
    /// dependents stopped or brought back with them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// The answer to `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusView>,
    /// An applied `reload`: what it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadView>,
    /// The answer to `peer_logs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<crate::link::logs::LogPage>,
}

impl Response {
    /// `{"ok":true}` with nothing else.
    pub fn ok() -> Response {
        Response {
            ok: true,
            ..Response::default()
        }
    }

    /// `{"ok":false,"error":message}`.
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(message.into()),
            ..Response::default()
        }
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadView {
    /// Agents new in the manifests; started (as their dependencies allow).
    pub added: Vec<String>,
    /// Agents no longer in the manifests; stopped and forgotten.
    pub removed: Vec<String>,
    /// Agents whose definition changed; restarted with the new one.
    pub changed: Vec<String>,
    /// How many agents were left running as they were.
    pub unchanged: usize,
}

impl From<ReloadSummary> for ReloadView {
    fn from(summary: ReloadSummary) -> ReloadView {
        ReloadView {
            added: summary.added,
            removed: summary.removed,
            changed: summary.changed,
            unchanged: summary.unchanged,
        }
    }
}

/// The supervisor and every agent, as `status --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The process id of the supervisor answering.
    pub supervisor_pid: u32,
    /// Seconds since the supervisor started.
    pub uptime_s: f64,
    /// When every agent was first ready (or settled), since the start.
    pub all_ready_s: Option<f64>,
    /// True once a shutdown (signal or `down`) has begun.
    pub shutting_down: bool,
    /// Reloads applied since the start.
    pub reloads: u64,
    /// Why the last reload was refused (empty when it was applied).
    pub config_errors: Vec<String>,
    /// Agent output lines left off the console because it did not keep up
    /// (the log files have them); see `crate::process::console`.
    #[serde(default)]
    pub console_dropped_lines: u64,
    /// Every agent of the manifests.
    pub agents: Vec<AgentView>,
    /// With a peer link: this host, and each peer's link state, last seen,
    /// clock offset and buffer (its agents are rows of `agents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::link::LinkSnapshot>,
}

/// One agent in a [`StatusView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// The agent's name.
    pub name: String,
    /// For an instance (`worker-2`) of an agent with `replicas`: that
    /// agent (`worker`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
    /// The instance's index (2 for `worker-2`), with `replica_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    /// The manifest's `group:` (or the legacy group it was listed in).
    #[serde(default)]
    pub group: Option<String>,
    /// The machine it runs on (`localhost` unless the manifest says).
    pub host: String,
    /// Its state in lowercase: `pending`, `blocked`, `starting`, `ready`,
    /// `backing-off`, `stopping`, `stopped`, `failed`, `idle`.
    pub state: String,
    /// Runs on another host: probed, never spawned by this supervisor.
    pub remote: bool,
    /// A required agent that cannot become ready fails `up`.
    pub required: bool,
    /// Stopped by an operator; stays stopped until `start`.
    pub held: bool,
    /// The process id of its current process; `None` when none runs.
    pub pid: Option<u32>,
    /// Since the current process was spawned.
    pub uptime_s: Option<f64>,
    /// Restarts since the supervisor started (all causes).
    pub restarts: u32,
    /// The same by cause: `exit`, `signal`, `liveness`, `memory`,
    /// `operator`, `reload`, `dependency`, `heartbeat`, `progress`, `error`.
    pub restarts_by_cause: BTreeMap<String, u32>,
    /// The last exit, failure or restart reason.
    pub reason: Option<String>,
    /// Since the supervisor's start, when it was first ready.
    pub ready_at_s: Option<f64>,
    /// From its (last) spawn to ready.
    pub time_to_ready_s: Option<f64>,
    /// `null` until agents report heartbeats through the SDK.
    pub heartbeat_age_s: Option<f64>,
    /// CPU use of its process tree, percent of one core (latest sample).
    pub cpu_percent: Option<f64>,
    /// Resident memory of its process tree in bytes (latest sample).
    pub rss_bytes: Option<u64>,
    /// `pending`: the dependencies it still waits for.
    pub waiting_on: Vec<String>,
    /// Every dependency the manifest gives it.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// The payload of its last SDK heartbeat (queue depth, in flight, ...).
    #[serde(default)]
    pub heartbeat: Option<crate::transport::HeartbeatPayload>,
    /// Why its `on_error` policy marked it degraded (until it restarts).
    #[serde(default)]
    pub degraded: Option<String>,
    /// Its processes that left its process group (daemons: `setsid`,
    /// `setpgid`), found through its cgroup or marker (`process::tree`);
    /// they are stopped and killed with it all the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escaped_pids: Vec<u32>,
    /// The ports the manifest gives it: `{port, field}`.
    #[serde(default)]
    pub ports: Vec<DeclaredPort>,
    /// `ok` or `degraded` while it is ready; `null` otherwise.
    #[serde(default)]
    pub health: Option<String>,
    /// Why it is degraded (see `crate::supervisor::degraded`); empty when
    /// healthy.
    #[serde(default)]
    pub degraded_by: Vec<CauseView>,
    /// The circuit breakers its SDK reports, with their live age.
    #[serde(default)]
    pub breakers: Vec<BreakerView>,
}

/// One reason an agent is degraded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CauseView {
    /// `dependency`, `breaker` or `errors`.
    pub kind: String,
    /// The dependency or breaker target named (empty for `errors`).
    pub target: String,
    /// In words: ``dependency `redis` is backing-off``.
    pub message: String,
}

/// One circuit breaker of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerView {
    /// What the breaker guards, as the agent's SDK names it (e.g. a
    /// dependency or a URL).
    pub target: String,
    /// `closed`, `open`, `half-open`.
    pub state: String,
    /// How long it has been in that state, now.
    pub for_s: f64,
    /// Failures counted in its current window.
    pub failures: u32,
}

/// A port an agent's manifest entry uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredPort {
    /// The port number.
    pub port: u16,
    /// `port`, `health_check_port`, `config.zmq_port`, `health_check_port (implicit: port+1)`, ...
    pub field: String,
}

impl StatusView {
    /// Adds the agents the peers reported as rows (host = the peer): an
    /// agent of another host awaited here is replaced by its owner's report;
    /// the per-peer agent lists are then left out of `link`.
    pub fn join(&mut self, mut link: crate::link::LinkSnapshot) {
        for peer in &mut link.peers {
            for (name, agent) in std::mem::take(&mut peer.agents) {
                let qualified = format!("{}/{name}", peer.host);
                self.agents
                    .retain(|row| !(row.remote && (row.name == name || row.name == qualified)));
                let clash = self.agents.iter().any(|row| row.name == name);
                // The index is not sent; the agent it is an instance of is.
                self.agents.push(AgentView {
                    name: if clash { qualified } else { name },
                    replica_of: agent.replica_of,
                    replica: None,
                    group: None,
                    host: peer.host.clone(),
                    state: agent.state,
                    remote: true,
                    required: false,
                    held: false,
                    pid: agent.pid,
                    uptime_s: None,
                    restarts: 0,
                    restarts_by_cause: BTreeMap::new(),
                    reason: agent.reason,
                    ready_at_s: None,
                    time_to_ready_s: None,
                    heartbeat_age_s: None,
                    cpu_percent: None,
                    rss_bytes: None,
                    waiting_on: Vec::new(),
                    heartbeat: None,
                    degraded: None,
                    escaped_pids: Vec::new(),
                    ports: Vec::new(),
                    dependencies: Vec::new(),
                    health: None,
                    degraded_by: Vec::new(),
                    breakers: Vec::new(),
                });
            }
        }
        self.link = Some(link);
    }

    /// The view of `snapshot` now: durations become seconds relative to
    /// this call, and each agent's escaped processes are looked up (reads
    /// `/proc` or its cgroup, so not free for many agents).
    pub fn from_snapshot(snapshot: &StatusSnapshot) -> StatusView {
        StatusView::build(snapshot, true)
    }

    /// [`StatusView::from_snapshot`] without `escaped_pids` (no `/proc` scan).
    pub fn from_snapshot_brief(snapshot: &StatusSnapshot) -> StatusView {
        StatusView::build(snapshot, false)
    }

    /// The view of `snapshot` as of now (uptimes and ages are computed against
    /// the current time); with `escaped`, each agent's `escaped_pids` is filled
    /// by scanning its process tree.
    fn build(snapshot: &StatusSnapshot, escaped: bool) -> StatusView {
        let now = tokio::time::Instant::now();
        let seconds = |duration: Option<std::time::Duration>| duration.map(|d| d.as_secs_f64());
        StatusView {
            supervisor_pid: std::process::id(),
            uptime_s: now.duration_since(snapshot.started).as_secs_f64(),
            all_ready_s: seconds(snapshot.all_ready_after),
            shutting_down: snapshot.shutting_down,
            reloads: snapshot.reloads,
            console_dropped_lines: crate::process::console::dropped_lines(),
            config_errors: snapshot.config_errors.clone(),
            agents: snapshot
                .agents
                .iter()
                .map(|agent| AgentView {
                    name: agent.name.clone(),
                    replica_of: agent.replica.as_ref().map(|(of, _)| of.clone()),
                    replica: agent.replica.as_ref().map(|(_, index)| *index),
                    group: agent.group.clone(),
                    host: agent.host.clone(),
                    state: agent.state.as_str().to_string(),
                    remote: agent.remote,
                    required: agent.required,
                    held: agent.held,
                    pid: agent.pid,
                    uptime_s: agent
                        .running_since
                        .map(|since| now.duration_since(since).as_secs_f64()),
                    restarts: agent.restarts,
                    restarts_by_cause: agent
                        .restarts_by_cause
                        .iter()
                        .map(|(cause, count)| (cause.to_string(), *count))
                        .collect(),
                    reason: agent.reason.clone(),
                    ready_at_s: seconds(agent.ready_at),
                    time_to_ready_s: seconds(agent.time_to_ready),
                    heartbeat_age_s: agent
                        .heartbeat_at
                        .map(|at| now.saturating_duration_since(at).as_secs_f64())
                        .or(seconds(agent.heartbeat_age)),
                    cpu_percent: agent.cpu_percent,
                    rss_bytes: agent.rss_bytes,
                    waiting_on: agent.waiting_on.clone(),
                    dependencies: agent.dependencies.clone(),
                    heartbeat: agent.heartbeat.clone(),
                    degraded: agent.degraded.clone(),
                    ports: agent
                        .ports
                        .iter()
                        .map(|(port, field)| DeclaredPort {
                            port: *port,
                            field: field.clone(),
                        })
                        .collect(),
                    escaped_pids: agent
                        .pid
                        .filter(|_| escaped)
                        .and_then(|pid| {
                            let tree = crate::process::tree::Tree::of_leader(pid)?;
                            Some(crate::process::escaped(&tree, pid))
                        })
                        .unwrap_or_default(),
                    health: (agent.state == crate::supervisor::AgentState::Ready).then(|| {
                        match agent.degraded_by.is_empty() {
                            true => "ok".to_string(),
                            false => "degraded".to_string(),
                        }
                    }),
                    degraded_by: agent
                        .degraded_by
                        .iter()
                        .map(|cause| CauseView {
                            kind: cause.kind().to_string(),
                            target: cause.target().to_string(),
                            message: cause.describe(now),
                        })
                        .collect(),
                    breakers: breakers(agent, now),
                })
                .collect(),
            link: None,
        }
    }

    /// The agent called `name`, if any.
    pub fn agent(&self, name: &str) -> Option<&AgentView> {
        self.agents.iter().find(|agent| agent.name == name)
    }
}

/// The breakers of `agent`'s last heartbeat, aged to `now`.
fn breakers(agent: &crate::supervisor::AgentStatus, now: tokio::time::Instant) -> Vec<BreakerView> {
    let (Some(payload), Some(at)) = (&agent.heartbeat, agent.heartbeat_at) else {
        return Vec::new();
    };
    let since_beat = now.saturating_duration_since(at);
    payload
        .breakers
        .iter()
        .map(|breaker| BreakerView {
            target: breaker.target.clone(),
            state: breaker.state.as_str().to_string(),
            for_s: (std::time::Duration::from_millis(breaker.for_ms) + since_beat).as_secs_f64(),
            failures: breaker.failures,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_their_documented_form() {
        let parse = |text: &str| serde_json::from_str::<Request>(text);
        assert_eq!(parse(r#"{"command":"status"}"#).unwrap(), Request::Status);
        assert_eq!(parse(r#"{"command":"watch"}"#).unwrap(), Request::Watch);
        assert_eq!(
            parse(r#"{"command":"restart","agents":["a"]}"#).unwrap(),
            Request::Restart {
                agents: vec!["a".into()],
                with_dependents: false
            }
        );
        assert_eq!(
            parse(r#"{"command":"down"}"#).unwrap(),
            Request::Down {
                force: false,
                all_hosts: false
            }
        );
        assert!(parse(r#"{"command":"explode"}"#).is_err());
        assert!(parse(r#"{"command":"stop","agents":["a"],"extra":1}"#).is_err());
        let line = serde_json::to_string(&Response::ok()).unwrap();
        assert_eq!(line, r#"{"ok":true}"#);
    }
}
