//! Ordered stop: shutdown (graceful, then forced by a second request), the
//! operator's `stop` (dependents first, held until started again), and the
//! stop wave that signals every agent whose stop is decided, dependents
//! before dependencies: an agent stopped for shutdown, a strategy, an
//! operator or a reload waits until none of its dependents is alive; one
//! killed as hung or never ready is SIGKILLed at once. The configured signal
//! comes first, SIGKILL after its grace (`transitions.rs` fires that timer).
//!
//! Part of [`super::Lifecycle`]; pure like it.

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Lifecycle, Mode, Phase, StopIntent};
use crate::supervisor::event::{Action, AgentId, Failure};

impl Lifecycle {
    /// `ShutdownRequested` (or a required agent failed): every agent stops,
    /// in reverse dependency order; a second, forced request kills at once.
    pub(super) fn shutdown(
        &mut self,
        failure: Option<Failure>,
        force: bool,
        actions: &mut Vec<Action>,
    ) {
        if self.failure.is_none() {
            self.failure = failure;
        }
        if let Mode::ShuttingDown { forced } = self.mode {
            if force && !forced {
                self.mode = Mode::ShuttingDown { forced: true };
                tracing::warn!("second stop request: killing every agent now");
                for (agent, record) in self.agents.iter_mut().enumerate() {
                    if let Phase::Stopping {
                        process, kill_at, ..
                    } = &mut record.phase
                        && let Some(pid) = process.pid
                    {
                        *kill_at = None;
                        actions.push(Action::Signal {
                            agent,
                            run: record.run,
                            pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                }
            }
            return;
        }
        self.mode = Mode::ShuttingDown { forced: force };
        for agent in 0..self.agents.len() {
            let record = &mut self.agents[agent];
            let (remote, run) = (record.spec.remote, record.run);
            match &mut record.phase {
                Phase::Pending | Phase::Blocked | Phase::BackingOff { .. } | Phase::Idle => {
                    self.transition(agent, Phase::Stopped);
                }
                Phase::Starting { .. } | Phase::Ready { .. } if remote => {
                    actions.push(Action::CancelWatchers { agent });
                    self.transition(agent, Phase::Stopped);
                }
                Phase::Starting { stop, .. } | Phase::Ready { stop, .. } => {
                    actions.push(Action::CancelWatchers { agent });
                    *stop = Some(StopIntent::Shutdown);
                }
                Phase::Stopping {
                    process,
                    intent,
                    kill_at,
                } => {
                    actions.push(Action::CancelWatchers { agent });
                    *intent = StopIntent::Shutdown;
                    if force && let Some(pid) = process.pid {
                        *kill_at = None;
                        actions.push(Action::Signal {
                            agent,
                            run,
                            pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                }
                Phase::Stopped | Phase::Failed => {}
            }
        }
    }

    /// What `StopRequested` for `agents` stops: they and every agent that
    /// depends on them, in dependency order.
    pub fn stop_targets(&self, agents: &[AgentId]) -> Vec<AgentId> {
        self.closure(agents, |record| &record.dependents)
    }

    /// `StopRequested`: the [`Self::stop_targets`] stop (dependents first)
    /// and are held until started again.
    pub(super) fn operator_stop(&mut self, agents: &[AgentId], actions: &mut Vec<Action>) {
        for agent in self.stop_targets(agents) {
            let record = &mut self.agents[agent];
            if !record.held {
                record.held_for_dependency = !agents.contains(&agent);
            } else if agents.contains(&agent) {
                record.held_for_dependency = false;
            }
            record.held = true;
            let remote = record.spec.remote;
            match &mut record.phase {
                Phase::Pending | Phase::Blocked | Phase::BackingOff { .. } | Phase::Idle => {
                    record.reason = Some("stopped by operator".into());
                    self.transition(agent, Phase::Stopped);
                }
                Phase::Starting { .. } | Phase::Ready { .. } if remote => {
                    actions.push(Action::CancelWatchers { agent });
                    record.reason = Some("stopped by operator".into());
                    self.transition(agent, Phase::Stopped);
                }
                phase @ (Phase::Starting { .. } | Phase::Ready { .. } | Phase::Stopping { .. }) => {
                    actions.push(Action::CancelWatchers { agent });
                    phase.set_stop(StopIntent::Operator);
                }
                Phase::Stopped | Phase::Failed => {}
            }
        }
    }

    /// Signals every agent whose stop is due, dependents before dependencies.
    pub(super) fn stop_wave(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let forced = self.mode == Mode::ShuttingDown { forced: true };
        for index in (0..self.order.len()).rev() {
            let agent = self.order[index];
            let record = &self.agents[agent];
            let (Phase::Starting {
                process,
                stop: Some(intent),
                ..
            }
            | Phase::Ready {
                process,
                stop: Some(intent),
                ..
            }) = &record.phase
            else {
                continue;
            };
            if record.spec.remote {
                self.transition(agent, Phase::Stopped);
                continue;
            }
            // A spawn in flight: signalled once its pid is known.
            let Some(pid) = process.pid else { continue };
            if intent.waits_for_dependents()
                && record
                    .dependents
                    .iter()
                    .any(|dependent| self.agents[*dependent].alive())
            {
                continue;
            }
            let (signal, kill_at) = match intent {
                _ if forced => (Signal::SIGKILL, None),
                StopIntent::Restart { .. } => (Signal::SIGKILL, None),
                _ => (
                    record.spec.agent.stop.signal,
                    Some(now + record.spec.agent.stop.grace),
                ),
            };
            tracing::info!(agent = record.name(), "stopping with {}", signal.as_str());
            let run = record.run;
            let stopping = Phase::Stopping {
                process: process.clone(),
                intent: intent.clone(),
                kill_at,
            };
            self.transition(agent, stopping);
            actions.push(Action::CancelWatchers { agent });
            actions.push(Action::Signal {
                agent,
                run,
                pid,
                signal,
            });
        }
    }
}
