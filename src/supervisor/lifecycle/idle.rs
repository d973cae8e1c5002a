//! `idle_stop`: an SDK agent whose heartbeats report no work for that long
//! is stopped gracefully (its stop signal and grace) and becomes `Idle`; it
//! is started again on demand: a RESOLVE of it (`Event::WakeRequested`),
//! `supervisor start`, or a pending dependent that needs it.
//!
//! "No work" (docs/protocol.md, *Idle*): the heartbeat payload says
//! `in_flight: 0`, `queue_depth` is absent or 0, and `last_progress_ms` has
//! not changed; the idle clock restarts whenever one of these stops holding.
//! A heartbeat without a payload, or a payload without `in_flight`, is never
//! idle: an agent that does not say it has no work is never stopped for it.
//!
//! Owns the idle clock of a run ([`IdleWatch`], kept in its `Process`), the
//! decision to stop an idle agent and the wake. Does not own the stop itself
//! (the stop wave of `stopping.rs` signals it like any other stop; an idle
//! stop does not wait for dependents, which keep running) nor where its exit
//! leads (`transitions.rs`: `Stopping` -> `Idle`, no restart, no crash).
//!
//! Part of [`super::Lifecycle`]; pure like it.

use tokio::time::Instant;

use super::{Lifecycle, Mode, Phase, StopIntent, format_duration};
use crate::supervisor::event::{Action, AgentId, HeartbeatPayload};

/// Since when the heartbeats of one run have reported no work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct IdleWatch {
    /// The first heartbeat of the current no-work stretch; `None` while busy.
    since: Option<Instant>,
    /// The `last_progress_ms` of the previous heartbeat.
    marker: Option<u64>,
}

impl IdleWatch {
    /// Records a heartbeat received at `now`.
    pub(super) fn record(&mut self, now: Instant, payload: Option<&HeartbeatPayload>) {
        let no_work = payload.is_some_and(|payload| {
            payload.in_flight == Some(0) && payload.queue_depth.unwrap_or(0) == 0
        });
        let marker = payload.and_then(|payload| payload.last_progress_ms);
        if !no_work {
            self.since = None;
        } else if self.since.is_none() || marker != self.marker {
            self.since = Some(now);
        }
        self.marker = marker;
    }

    /// Since when it has had no work, if it has none now.
    pub(super) fn since(&self) -> Option<Instant> {
        self.since
    }
}

impl Lifecycle {
    /// Feeds a heartbeat of the current run to its idle clock (agents with
    /// `idle_stop` only).
    pub(super) fn record_idle(
        &mut self,
        agent: AgentId,
        payload: Option<&HeartbeatPayload>,
        now: Instant,
    ) {
        let record = &mut self.agents[agent];
        if record.spec.agent.idle_stop.is_none() {
            return;
        }
        if let Some(process) = record.phase.process_mut() {
            process.idle.record(now, payload);
        }
    }

    /// When `agent` is due for its idle stop: ready, not being stopped, and
    /// without work since `idle_stop` ago (or longer).
    fn idle_due(&self, agent: AgentId) -> Option<Instant> {
        let record = &self.agents[agent];
        let idle_stop = record.spec.agent.idle_stop?;
        match &record.phase {
            Phase::Ready {
                process,
                stop: None,
                ..
            } if !record.spec.remote && self.mode == Mode::Running => {
                process.idle.since().map(|since| since + idle_stop)
            }
            _ => None,
        }
    }

    /// The earliest idle stop the loop must wake up for.
    pub(super) fn idle_deadline(&self) -> Option<Instant> {
        (0..self.agents.len())
            .filter_map(|agent| self.idle_due(agent))
            .min()
    }

    /// On a deadline: every agent idle for its `idle_stop` is stopped
    /// gracefully, alone (its dependents keep running).
    pub(super) fn check_idle(&mut self, now: Instant, actions: &mut Vec<Action>) {
        for agent in 0..self.agents.len() {
            let Some(due) = self.idle_due(agent) else {
                continue;
            };
            if due > now {
                continue;
            }
            let record = &mut self.agents[agent];
            let idle_stop = record.spec.agent.idle_stop.unwrap_or_default();
            let reason = format!("idle: no work for {}", format_duration(idle_stop));
            tracing::info!(agent = record.name(), "{reason}; stopping it");
            record.phase.set_stop(StopIntent::Idle { reason });
            actions.push(Action::CancelWatchers { agent });
        }
    }

    /// `WakeRequested` (a RESOLVE of `agent`) or a dependent that needs it:
    /// an idle agent goes back to `Pending` and starts once its
    /// dependencies are ready. Anything else is left alone. Whether it woke.
    pub(super) fn wake(&mut self, agent: AgentId, why: &str) -> bool {
        if self.mode != Mode::Running || !matches!(self.agents[agent].phase, Phase::Idle) {
            return false;
        }
        let record = &mut self.agents[agent];
        tracing::info!(agent = record.name(), "waking: {why}");
        record.reason = Some(format!("started on demand: {why}"));
        self.transition(agent, Phase::Pending).is_some()
    }

    /// Wakes the idle dependencies of pending agents (an agent that restarts
    /// needs them), dependents first so a chain of idle agents wakes in one
    /// pass.
    pub(super) fn wake_needed_dependencies(&mut self) {
        for index in (0..self.order.len()).rev() {
            let agent = self.order[index];
            if !matches!(self.agents[agent].phase, Phase::Pending) || self.agents[agent].held {
                continue;
            }
            for position in 0..self.agents[agent].dependencies.len() {
                let dependency = self.agents[agent].dependencies[position];
                if matches!(self.agents[dependency].phase, Phase::Idle) {
                    let why = format!("`{}` needs it", self.agents[agent].name());
                    self.wake(dependency, &why);
                }
            }
        }
    }
}
