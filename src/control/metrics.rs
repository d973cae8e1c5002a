//! The optional HTTP listener (`metrics: {listen: ...}` in the manifest):
//! `/metrics` in the Prometheus text format (built with prometheus-client
//! from the latest status snapshot at each scrape) and `/health` as JSON.
//!
//! Owns the listener task. Reads the supervisor's status channel and the
//! shared counters; changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::supervisor::{AgentState, StatusSnapshot};
use crate::transport::BreakerState;

/// What the handlers read.
#[derive(Clone)]
pub struct MetricsContext {
    /// The supervisor's published status; never written here.
    pub status: watch::Receiver<StatusSnapshot>,
    /// Control requests answered (incremented by the control server).
    pub control_requests: Arc<AtomicU64>,
}

/// Serves `/metrics` and `/health` on `listener` until `token` is cancelled.
pub async fn run(
    listener: tokio::net::TcpListener,
    context: MetricsContext,
    token: CancellationToken,
) {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(context);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(token.cancelled_owned())
        .await
    {
        tracing::warn!(%error, "metrics listener failed");
    }
}

/// `{agent="..."}`, and for an instance of an agent with `replicas`
/// `{agent="worker-2",replica_of="worker",replica="2"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct AgentLabel {
    agent: String,
    replica_of: Option<String>,
    replica: Option<u32>,
}

impl prometheus_client::encoding::EncodeLabelSet for AgentLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("agent", self.agent.as_str()).encode(encoder.encode_label())?;
        // Left out, not empty, for an agent that is no instance.
        if let (Some(of), Some(index)) = (&self.replica_of, self.replica) {
            ("replica_of", of.as_str()).encode(encoder.encode_label())?;
            ("replica", index.to_string().as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// `{agent="...",state="..."}`: one series per state, 1 for the current one.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    agent: String,
    state: String,
}

/// `{agent="...",cause="..."}`: restarts by cause.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    agent: String,
    cause: String,
}

/// `{agent="...",kind="...",target="..."}`: one reason an agent is
/// degraded (`agent_degraded_cause`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DegradedLabel {
    agent: String,
    /// `dependency`, `breaker`, `errors`.
    kind: String,
    target: String,
}

/// `{agent="...",target="...",state="..."}`: one circuit breaker's state
/// (`agent_breaker_state`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabel {
    agent: String,
    target: String,
    state: String,
}

/// `{agent="...",target="..."}`: one circuit breaker
/// (`agent_breaker_state_seconds`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    agent: String,
    target: String,
}

/// A gauge of seconds or percentages.
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// `GET /metrics`: the latest status snapshot in OpenMetrics text; 500
/// only if encoding fails.
async fn metrics(State(context): State<MetricsContext>) -> impl IntoResponse {
    let snapshot = context.status.borrow().clone();
    let requests = context.control_requests.load(Ordering::Relaxed);
    match encode(&snapshot, requests) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {error}\n"),
        ),
    }
}

/// The OpenMetrics text for one snapshot (a fresh registry per scrape: the
/// snapshot is the source of truth, nothing is kept between scrapes).
///
/// Every name is prefixed `supervisor_`, and counters get OpenMetrics'
/// `_total` suffix (docs/protocol.md lists them). Per agent (label `agent`):
/// `agent_up`, `agent_state` (one series per [`AgentState`]),
/// `agent_restarts` (by `cause`), `agent_ready_seconds`,
/// `agent_rss_bytes`, `agent_cpu_percent`, `agent_heartbeat_age_seconds`
/// (each only once known), `agent_degraded`, `agent_degraded_cause`
/// (`kind`, `target`), `agent_breaker_state` (`target`, `state`) and
/// `agent_breaker_state_seconds` (`target`). For the supervisor:
/// `start_duration_seconds`, `reloads`, `config_refused`,
/// `control_requests` (`control_requests` is the count passed in),
/// `console_dropped_lines`, `cpu_limit_warnings`. Fails only if the text
/// cannot be written.
pub fn encode(snapshot: &StatusSnapshot, control_requests: u64) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("supervisor");
    let up = Family::<AgentLabel, Gauge>::default();
    let state = Family::<StateLabel, Gauge>::default();
    let restarts = Family::<CauseLabel, Counter>::default();
    let ready = Family::<AgentLabel, FloatGauge>::default();
    let rss = Family::<AgentLabel, Gauge>::default();
    let cpu = Family::<AgentLabel, FloatGauge>::default();
    let heartbeat = Family::<AgentLabel, FloatGauge>::default();
    let degraded = Family::<AgentLabel, Gauge>::default();
    let degraded_by = Family::<DegradedLabel, Gauge>::default();
    let breaker_state = Family::<BreakerLabel, Gauge>::default();
    let breaker_seconds = Family::<TargetLabel, FloatGauge>::default();
    let now = tokio::time::Instant::now();
    for agent in &snapshot.agents {
        let label = AgentLabel {
            agent: agent.name.clone(),
            replica_of: agent.replica.as_ref().map(|(of, _)| of.clone()),
            replica: agent.replica.as_ref().map(|(_, index)| *index),
        };
        up.get_or_create(&label)
            .set(i64::from(agent.state == AgentState::Ready));
        for each in AgentState::ALL {
            state
                .get_or_create(&StateLabel {
                    agent: agent.name.clone(),
                    state: each.as_str().to_string(),
                })
                .set(i64::from(each == agent.state));
        }
        for (cause, count) in &agent.restarts_by_cause {
            restarts
                .get_or_create(&CauseLabel {
                    agent: agent.name.clone(),
                    cause: cause.to_string(),
                })
                .inc_by(u64::from(*count));
        }
        if let Some(took) = agent.time_to_ready {
            ready.get_or_create(&label).set(took.as_secs_f64());
        }
        if let Some(bytes) = agent.rss_bytes {
            rss.get_or_create(&label)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(percent) = agent.cpu_percent {
            cpu.get_or_create(&label).set(percent);
        }
        // From the time of the last heartbeat, not the snapshot's age: the
        // snapshot may be up to a second old while only heartbeats arrive.
        let age = agent
            .heartbeat_at
            .map(|at| tokio::time::Instant::now().saturating_duration_since(at))
            .or(agent.heartbeat_age);
        if let Some(age) = age {
            heartbeat.get_or_create(&label).set(age.as_secs_f64());
        }
        degraded
            .get_or_create(&label)
            .set(i64::from(!agent.degraded_by.is_empty()));
        for cause in &agent.degraded_by {
            degraded_by
                .get_or_create(&DegradedLabel {
                    agent: agent.name.clone(),
                    kind: cause.kind().to_string(),
                    target: cause.target().to_string(),
                })
                .set(1);
        }
        if let (Some(payload), Some(at)) = (&agent.heartbeat, agent.heartbeat_at) {
            for breaker in &payload.breakers {
                for each in [
                    BreakerState::Closed,
                    BreakerState::Open,
                    BreakerState::HalfOpen,
                ] {
                    breaker_state
                        .get_or_create(&BreakerLabel {
                            agent: agent.name.clone(),
                            target: breaker.target.clone(),
                            state: each.as_str().to_string(),
                        })
                        .set(i64::from(each == breaker.state));
                }
                let in_state = std::time::Duration::from_millis(breaker.for_ms)
                    + now.saturating_duration_since(at);
                breaker_seconds
                    .get_or_create(&TargetLabel {
                        agent: agent.name.clone(),
                        target: breaker.target.clone(),
                    })
                    .set(in_state.as_secs_f64());
            }
        }
    }
    registry.register("agent_up", "1 when the agent is ready", up);
    registry.register("agent_state", "1 for the agent's current state", state);
    registry.register("agent_restarts", "Restarts of the agent by cause", restarts);
    registry.register(
        "agent_ready_seconds",
        "From the agent's last spawn to ready",
        ready,
    );
    registry.register(
        "agent_rss_bytes",
        "Resident memory of the agent's process tree",
        rss,
    );
    registry.register(
        "agent_cpu_percent",
        "CPU of the agent's process tree, percent of one core",
        cpu,
    );
    registry.register(
        "agent_heartbeat_age_seconds",
        "Age of the agent's last SDK heartbeat",
        heartbeat,
    );
    registry.register(
        "agent_degraded",
        "1 when the agent is ready but degraded (a dependency down, a breaker open, its error policy)",
        degraded,
    );
    registry.register(
        "agent_degraded_cause",
        "1 for each reason the agent is degraded: kind dependency, breaker or errors, and the target named",
        degraded_by,
    );
    registry.register(
        "agent_breaker_state",
        "1 for the current state of each circuit breaker the agent's SDK reports",
        breaker_state,
    );
    registry.register(
        "agent_breaker_state_seconds",
        "How long each circuit breaker of the agent has been in its current state",
        breaker_seconds,
    );
    let start = FloatGauge::default();
    if let Some(all_ready) = snapshot.all_ready_after {
        start.set(all_ready.as_secs_f64());
    }
    registry.register(
        "start_duration_seconds",
        "From the supervisor's start to every agent ready (0 until then)",
        start,
    );
    let reloads = Counter::<u64>::default();
    reloads.inc_by(snapshot.reloads);
    registry.register("reloads", "Configurations applied since the start", reloads);
    let refused = Gauge::<i64>::default();
    refused.set(i64::from(!snapshot.config_errors.is_empty()));
    registry.register(
        "config_refused",
        "1 when the last reload was refused (the old configuration runs)",
        refused,
    );
    let requests = Counter::<u64>::default();
    requests.inc_by(control_requests);
    registry.register(
        "control_requests",
        "Control socket requests answered",
        requests,
    );
    let dropped = Counter::<u64>::default();
    dropped.inc_by(crate::process::console::dropped_lines());
    registry.register(
        "console_dropped_lines",
        "Agent output lines left off a console that did not keep up (the logs have them)",
        dropped,
    );
    let warnings = Counter::<u64>::default();
    warnings.inc_by(snapshot.cpu_warnings);
    registry.register("cpu_limit_warnings", "CPU limit warnings logged", warnings);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// `GET /health`: `stopping` (503) during shutdown, else 200 with
/// `degraded` when an agent failed or is degraded, `ok` when all are
/// ready, `starting` otherwise; the JSON body (also naming the failed and
/// degraded agents with their causes) is in docs/protocol.md.
async fn health(State(context): State<MetricsContext>) -> impl IntoResponse {
    let snapshot = context.status.borrow().clone();
    let ready = snapshot.ready_count();
    let failed: Vec<&str> = snapshot
        .agents
        .iter()
        .filter(|agent| agent.state == AgentState::Failed)
        .map(|agent| agent.name.as_str())
        .collect();
    let degraded: serde_json::Map<String, serde_json::Value> = snapshot
        .agents
        .iter()
        .filter(|agent| !agent.degraded_by.is_empty())
        .map(|agent| {
            let now = tokio::time::Instant::now();
            let causes: Vec<String> = agent
                .degraded_by
                .iter()
                .map(|cause| cause.describe(now))
                .collect();
            (agent.name.clone(), causes.into())
        })
        .collect();
    let status = if snapshot.shutting_down {
        "stopping"
    } else if !failed.is_empty() || !degraded.is_empty() {
        "degraded"
    } else if ready == snapshot.agents.len() {
        "ok"
    } else {
        "starting"
    };
    let code = match status {
        "stopping" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    let body = serde_json::json!({
        "status": status,
        "pid": std::process::id(),
        "agents": snapshot.agents.len(),
        "ready": ready,
        "failed": failed,
        "degraded": degraded,
        "all_ready_s": snapshot.all_ready_after.map(|d| d.as_secs_f64()),
        "config_errors": snapshot.config_errors,
    });
    (code, axum::Json(body))
}
