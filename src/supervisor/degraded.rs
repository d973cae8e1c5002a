//! Aggregated health: which running agents are `degraded`, and why. An
//! agent is degraded while
//!
//! - a dependency it needs (the manifest's `dependencies`) is not ready:
//!   crashed and backing off, stopped, failed, restarting;
//! - one of its circuit breakers (reported in its SDK heartbeats) is open
//!   or half-open: it cannot reach that target right now;
//! - its `on_error` policy marked it degraded (until its next restart).
//!
//! Derived from a [`StatusSnapshot`] when it is built (the graph is in each
//! agent's `dependencies`, the breakers in its last heartbeat); it is not a
//! lifecycle state: a degraded agent is still `ready` and nothing is
//! restarted for it.
//!
//! Owns the rule and the wording of the causes. Does not own agent state
//! (`lifecycle`), breaker state (`transport::breaker`, in the agent), or
//! how status and metrics lay it out (`cli::status`, `control::metrics`).

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
}

impl Cause {
    /// A short machine name: `dependency`, `breaker`, `errors`.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::DependencyDown { .. } => "dependency",
            Cause::BreakerOpen { .. } => "breaker",
            Cause::ErrorPolicy { .. } => "errors",
        }
    }

    /// The dependency or breaker target it names (empty for `errors`).
    pub fn target(&self) -> &str {
        match self {
            Cause::DependencyDown { dependency, .. } => dependency,
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
    let states: std::collections::HashMap<String, AgentState> = snapshot
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
}

fn causes(
    agent: &AgentStatus,
    states: &std::collections::HashMap<String, AgentState>,
) -> Vec<Cause> {
    let mut found = Vec::new();
    for dependency in &agent.dependencies {
        match states.get(dependency) {
            Some(AgentState::Ready) | None => {}
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
        assert!(
            status.agents[3].degraded_by.is_empty(),
            "a dependency that is ready but degraded itself does not spread"
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
}
