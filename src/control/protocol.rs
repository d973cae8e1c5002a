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

/// One request line, e.g. `{"command":"stop","agents":["api"]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Answers `{"ok":true,"pid":N}`: the supervisor is alive.
    Ping,
    /// Answers with `status`.
    Status,
    Start {
        agents: Vec<String>,
    },
    Stop {
        agents: Vec<String>,
    },
    Restart {
        agents: Vec<String>,
        #[serde(default)]
        with_dependents: bool,
    },
    /// Load and check the manifests again; apply them if they pass.
    Reload,
    /// Stop everything in reverse dependency order and exit; `force` kills.
    Down {
        #[serde(default)]
        force: bool,
        /// Also tell every peer host (peer link) to go down.
        #[serde(default)]
        all_hosts: bool,
    },
}

/// One response line. `ok: false` comes with `error` (and, for a refused
/// reload, every problem in `errors`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadView>,
}

impl Response {
    pub fn ok() -> Response {
        Response {
            ok: true,
            ..Response::default()
        }
    }

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
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
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
    pub supervisor_pid: u32,
    pub uptime_s: f64,
    /// When every agent was first ready (or settled), since the start.
    pub all_ready_s: Option<f64>,
    pub shutting_down: bool,
    pub reloads: u64,
    /// Why the last reload was refused (empty when it was applied).
    pub config_errors: Vec<String>,
    /// Agent output lines left off the console because it did not keep up
    /// (the log files have them); see `crate::process::console`.
    #[serde(default)]
    pub console_dropped_lines: u64,
    pub agents: Vec<AgentView>,
    /// With a peer link: this host, and each peer's link state, last seen,
    /// clock offset and buffer (its agents are rows of `agents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::link::LinkSnapshot>,
}

/// One agent in a [`StatusView`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub name: String,
    /// The manifest's `group:` (or the legacy group it was listed in).
    #[serde(default)]
    pub group: Option<String>,
    pub host: String,
    pub state: String,
    pub remote: bool,
    pub required: bool,
    /// Stopped by an operator; stays stopped until `start`.
    pub held: bool,
    pub pid: Option<u32>,
    /// Since the current process was spawned.
    pub uptime_s: Option<f64>,
    pub restarts: u32,
    pub restarts_by_cause: BTreeMap<String, u32>,
    /// The last exit, failure or restart reason.
    pub reason: Option<String>,
    /// Since the supervisor's start, when it was first ready.
    pub ready_at_s: Option<f64>,
    /// From its (last) spawn to ready.
    pub time_to_ready_s: Option<f64>,
    /// `null` until agents report heartbeats through the SDK.
    pub heartbeat_age_s: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub waiting_on: Vec<String>,
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
}

/// A port an agent's manifest entry uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredPort {
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
                self.agents.push(AgentView {
                    name: if clash { qualified } else { name },
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
                });
            }
        }
        self.link = Some(link);
    }

    pub fn from_snapshot(snapshot: &StatusSnapshot) -> StatusView {
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
                        .and_then(|pid| {
                            let tree = crate::process::tree::Tree::of_leader(pid)?;
                            Some(crate::process::escaped(&tree, pid))
                        })
                        .unwrap_or_default(),
                })
                .collect(),
            link: None,
        }
    }

    pub fn agent(&self, name: &str) -> Option<&AgentView> {
        self.agents.iter().find(|agent| agent.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_their_documented_form() {
        let parse = |text: &str| serde_json::from_str::<Request>(text);
        assert_eq!(parse(r#"{"command":"status"}"#).unwrap(), Request::Status);
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
