//! Aggregated health: which running agents are `degraded`, and why. An
//! agent is degraded while
//!
//! - a dependency it needs (the manifest's `dependencies`) is not ready:
//!   crashed and backing off, stopped, failed, restarting;
//! - one of its circuit breakers (reported in its SDK heartbeats) is open
//!   or half-open: it cannot reach that target right now;
//! - its `on_error` policy marked it degraded (until its next restart);
//! - a dependency it needs is ready but degraded itself (kind `upstream`):
//!   degradation propagates along the dependency graph, and the cause names
//!   the dependency and the root cause further down (``dependency
//!   `backend` is degraded (dependency `redis` is backing-off)``).
//!
//! An `idle` dependency (stopped by `idle_stop`, started again on demand) is
//! not down: it degrades nobody.
//!
//! Derived from a [`StatusSnapshot`] when it is built (the graph is in each
//! agent's `dependencies`, the breakers in its last heartbeat); it is not a
//! lifecycle state: a degraded agent is still `ready` and nothing is
//! restarted for it.
//!
//! Owns the rule and the wording of the causes. Does not own agent state
//! (`lifecycle`), breaker state (`transport::breaker`, in the agent), or
//! how status and metrics lay it out (`cli::status`, `control::metrics`).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::event::{AgentStatus, StatusSnapshot};
use super::state::AgentState;
use crate::transport::BreakerState;

/// One reason an agent is degraded.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// A dependency it needs is not ready.
    DependencyDown {
        dependency: String,
        state: AgentState,
    },
    /// Its circuit breaker to `target` is open or half-open, since `since`
    /// (the heartbeat's time less the breaker's reported time in state).
    BreakerOpen {
        target: String,
        state: BreakerState,
        since: Instant,
    },
    /// Its `on_error` policy marked it degraded.
    ErrorPolicy { reason: String },
    /// A dependency it needs is degraded; `root` is the first cause of
    /// that, found at agent `root_agent` (the dependency itself, or an agent
    /// further down its dependencies).
    Upstream {
        dependency: String,
        root_agent: String,
        root: Box<Cause>,
    },
}

impl Cause {
    /// A short machine name: `dependency`, `breaker`, `errors`.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::DependencyDown { .. } => "dependency",
            Cause::BreakerOpen { .. } => "breaker",
            Cause::ErrorPolicy { .. } => "errors",
            Cause::Upstream { .. } => "upstream",
        }
    }

    /// The dependency or breaker target it names (empty for `errors`).
    pub fn target(&self) -> &str {
        match self {
            Cause::DependencyDown { dependency, .. } | Cause::Upstream { dependency, .. } => {
                dependency
            }
            Cause::BreakerOpen { target, .. } => target,
            Cause::ErrorPolicy { .. } => "",
        }
    }

    /// The cause in words at `now`: ``dependency `redis` is backing-off``,
    /// ``breaker to `postgres` open for 12 s``.
    pub fn describe(&self, now: Instant) -> String {
        match self {
            Cause::DependencyDown { dependency, state } => {
                format!("dependency `{dependency}` is {}", state.as_str())
            }
            Cause::BreakerOpen {
                target,
                state,
                since,
            } => format!(
                "breaker to `{target}` {} for {}",
                state.as_str(),
                whole_seconds(now.saturating_duration_since(*since))
            ),
            Cause::ErrorPolicy { reason } => format!("error policy: {reason}"),
            Cause::Upstream {
                dependency,
                root_agent,
                root,
            } if dependency == root_agent => {
                format!(
                    "dependency `{dependency}` is degraded ({})",
                    root.describe(now)
                )
            }
            Cause::Upstream {
                dependency,
                root_agent,
                root,
            } => format!(
                "dependency `{dependency}` is degraded (`{root_agent}`: {})",
                root.describe(now)
            ),
        }
    }
}

fn whole_seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs())
}

/// Fills every agent's `degraded_by` in `snapshot`. Only running agents
/// (`ready`) can be degraded; during shutdown nothing is (everything is
/// going down on purpose).
pub fn derive(snapshot: &mut StatusSnapshot) {
    let states: HashMap<String, AgentState> = snapshot
        .agents
        .iter()
        .map(|agent| (agent.name.clone(), agent.state))
        .collect();
    for agent in &mut snapshot.agents {
        agent.degraded_by = if snapshot.shutting_down || agent.state != AgentState::Ready {
            Vec::new()
        } else {
            causes(agent, &states)
        };
    }
    propagate(snapshot);
}

/// Adds an `upstream` cause to every ready agent with a degraded ready
/// dependency, dependencies first (so a chain propagates to its end).
fn propagate(snapshot: &mut StatusSnapshot) {
    let index: HashMap<String, usize> = snapshot
        .agents
        .iter()
        .enumerate()
        .map(|(position, agent)| (agent.name.clone(), position))
        .collect();
    // 0: not visited, 1: on the stack (a cycle, which `check` rejects,
    // is cut there), 2: done.
    let mut visited = vec![0u8; snapshot.agents.len()];
    for position in 0..snapshot.agents.len() {
        visit(position, &index, &mut visited, &mut snapshot.agents);
    }
}

fn visit(
    position: usize,
    index: &HashMap<String, usize>,
    visited: &mut [u8],
    agents: &mut [AgentStatus],
) {
    if visited[position] != 0 {
        return;
    }
    visited[position] = 1;
    let dependencies: Vec<usize> = agents[position]
        .dependencies
        .iter()
        .filter_map(|name| index.get(name).copied())
        .collect();
    for dependency in &dependencies {
        visit(*dependency, index, visited, agents);
    }
    visited[position] = 2;
    if agents[position].state != AgentState::Ready {
        return;
    }
    let mut found = Vec::new();
    for dependency in dependencies {
        let upstream = &agents[dependency];
        // Only a ready dependency spreads its degradation (one that is down
        // is already a cause of its own kind), and only its first cause.
        let Some(first) = upstream.degraded_by.first() else {
            continue;
        };
        if upstream.state != AgentState::Ready {
            continue;
        }
        let (root_agent, root) = match first {
            Cause::Upstream {
                root_agent, root, ..
            } => (root_agent.clone(), root.clone()),
            other => (upstream.name.clone(), Box::new(other.clone())),
        };
        found.push(Cause::Upstream {
            dependency: upstream.name.clone(),
            root_agent,
            root,
        });
    }
    agents[position].degraded_by.extend(found);
}

fn causes(agent: &AgentStatus, states: &HashMap<String, AgentState>) -> Vec<Cause> {
    let mut found = Vec::new();
    for dependency in &agent.dependencies {
        match states.get(dependency) {
            Some(AgentState::Ready | AgentState::Idle) | None => {}
            Some(state) => found.push(Cause::DependencyDown {
                dependency: dependency.clone(),
                state: *state,
            }),
        }
    }
    if let (Some(payload), Some(at)) = (&agent.heartbeat, agent.heartbeat_at) {
        for breaker in &payload.breakers {
            if matches!(breaker.state, BreakerState::Open | BreakerState::HalfOpen) {
                let in_state = Duration::from_millis(breaker.for_ms);
                found.push(Cause::BreakerOpen {
                    target: breaker.target.clone(),
                    state: breaker.state,
                    since: at.checked_sub(in_state).unwrap_or(at),
                });
            }
        }
    }
    if let Some(reason) = &agent.degraded {
        found.push(Cause::ErrorPolicy {
            reason: reason.clone(),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::transport::{BreakerReport, HeartbeatPayload};

    fn agent(name: &str, state: AgentState, dependencies: &[&str]) -> AgentStatus {
        AgentStatus {
            replica: None,
            name: name.into(),
            group: None,
            state,
            remote: false,
            required: true,
            pid: None,
            run: 0,
            own_exit: None,
            restarts: 0,
            ready_at: None,
            time_to_ready: None,
            waiting_on: Vec::new(),
            reason: None,
            host: "localhost".into(),
            running_since: None,
            heartbeat_age: None,
            cpu_percent: None,
            rss_bytes: None,
            restarts_by_cause: BTreeMap::new(),
            held: false,
            heartbeat: None,
            heartbeat_at: None,
            degraded: None,
            ports: Vec::new(),
            dependencies: dependencies.iter().map(|name| name.to_string()).collect(),
            degraded_by: Vec::new(),
        }
    }

    fn snapshot(agents: Vec<AgentStatus>) -> StatusSnapshot {
        StatusSnapshot {
            started: Instant::now(),
            agents,
            all_ready_after: None,
            shutting_down: false,
            reloads: 0,
            config_errors: Vec::new(),
            cpu_warnings: 0,
        }
    }

    #[test]
    fn a_dependency_down_degrades_its_running_dependents_only() {
        let mut status = snapshot(vec![
            agent("redis", AgentState::BackingOff, &[]),
            agent("backend", AgentState::Ready, &["redis"]),
            agent("worker", AgentState::Pending, &["redis"]),
            agent("gateway", AgentState::Ready, &["backend"]),
        ]);
        derive(&mut status);
        let now = Instant::now();
        let described: Vec<String> = status.agents[1]
            .degraded_by
            .iter()
            .map(|cause| cause.describe(now))
            .collect();
        assert_eq!(described, ["dependency `redis` is backing-off"]);
        assert!(status.agents[2].degraded_by.is_empty(), "not running");
        assert_eq!(
            status.agents[3]
                .degraded_by
                .iter()
                .map(|cause| (cause.kind(), cause.target(), cause.describe(now)))
                .collect::<Vec<_>>(),
            [(
                "upstream",
                "backend",
                "dependency `backend` is degraded (dependency `redis` is backing-off)".to_string()
            )],
            "a ready but degraded dependency spreads, naming the root cause"
        );
        status.shutting_down = true;
        derive(&mut status);
        assert!(status.agents[1].degraded_by.is_empty());
    }

    #[test]
    fn open_and_half_open_breakers_degrade_with_their_age() {
        let mut memory = agent("memory", AgentState::Ready, &[]);
        let beat = Instant::now();
        memory.heartbeat_at = Some(beat);
        memory.heartbeat = Some(HeartbeatPayload {
            breakers: vec![
                BreakerReport {
                    target: "postgres".into(),
                    state: BreakerState::Open,
                    for_ms: 12_400,
                    failures: 0,
                },
                BreakerReport {
                    target: "cache".into(),
                    state: BreakerState::Closed,
                    for_ms: 50_000,
                    failures: 1,
                },
            ],
            ..HeartbeatPayload::default()
        });
        memory.degraded = Some("3 errors within 10s".into());
        let mut status = snapshot(vec![memory]);
        derive(&mut status);
        let causes = &status.agents[0].degraded_by;
        assert_eq!(causes.len(), 2);
        assert_eq!(
            causes[0].describe(beat + Duration::from_secs(2)),
            "breaker to `postgres` open for 14 s"
        );
        assert_eq!(
            (causes[0].kind(), causes[0].target()),
            ("breaker", "postgres")
        );
        assert_eq!(causes[1].kind(), "errors");
    }

    #[test]
    fn degradation_propagates_down_a_chain_naming_the_root_agent_and_cause() {
        // redis (down) <- backend <- api <- gateway; cache idle <- search.
        let mut status = snapshot(vec![
            agent("gateway", AgentState::Ready, &["api"]),
            agent("api", AgentState::Ready, &["backend"]),
            agent("backend", AgentState::Ready, &["redis"]),
            agent("redis", AgentState::Failed, &[]),
            agent("cache", AgentState::Idle, &[]),
            agent("search", AgentState::Ready, &["cache"]),
            agent("healthy", AgentState::Ready, &[]),
            agent("client", AgentState::Ready, &["healthy", "search"]),
        ]);
        derive(&mut status);
        let now = Instant::now();
        let described = |status: &StatusSnapshot, position: usize| -> Vec<String> {
            status.agents[position]
                .degraded_by
                .iter()
                .map(|cause| cause.describe(now))
                .collect()
        };
        assert_eq!(described(&status, 2), ["dependency `redis` is failed"]);
        assert_eq!(
            described(&status, 1),
            ["dependency `backend` is degraded (dependency `redis` is failed)"]
        );
        assert_eq!(
            described(&status, 0),
            ["dependency `api` is degraded (`backend`: dependency `redis` is failed)"]
        );
        assert_eq!(status.agents[0].degraded_by[0].kind(), "upstream");
        assert_eq!(status.agents[0].degraded_by[0].target(), "api");
        // An idle dependency is not down, and nothing spreads from it.
        for position in [4, 5, 6, 7] {
            assert!(
                described(&status, position).is_empty(),
                "{}",
                status.agents[position].name
            );
        }
        // A dependency that is down itself is a `dependency` cause, not an
        // `upstream` one, even when it was degraded before.
        status.agents[1].state = AgentState::BackingOff;
        derive(&mut status);
        assert_eq!(described(&status, 0), ["dependency `api` is backing-off"]);
    }

    #[test]
    fn a_dependency_cycle_does_not_loop() {
        let mut status = snapshot(vec![
            agent("a", AgentState::Ready, &["b"]),
            agent("b", AgentState::Ready, &["a", "down"]),
            agent("down", AgentState::Stopped, &[]),
        ]);
        derive(&mut status);
        assert_eq!(status.agents[1].degraded_by.len(), 1);
        assert_eq!(status.agents[0].degraded_by[0].kind(), "upstream");
    }
}
