//! What follows an exit nobody asked for (or a kill as hung): the restart
//! policy and backoff of [`crate::supervisor::restart`] decide between
//! `BackingOff`, `Stopped` and `Failed`; the strategy decides what a restart
//! does to the others; a required agent that fails stops everything.
//!
//! Part of [`super::Lifecycle`]; pure like it.

use std::time::Duration;

use tokio::time::Instant;

use super::{Lifecycle, Mode, Phase, StopIntent, format_duration};
use crate::manifest::{GiveUp, Strategy};
use crate::process::Termination;
use crate::supervisor::event::{Action, AgentId, Failure};
use crate::supervisor::restart::{Decision, wait_before_restart};

impl Lifecycle {
    /// Applies the restart policy to an exit after a run of `uptime`.
    /// `failed` forces the exit to count as a failure (killed as hung).
    #[allow(clippy::too_many_arguments)] // the exit's facts, passed through from on_exit
    pub(super) fn decide_restart(
        &mut self,
        agent: AgentId,
        termination: Termination,
        failed: bool,
        reason: String,
        cause: &'static str,
        uptime: Duration,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.mode != Mode::Running {
            self.transition(agent, Phase::Stopped);
            return;
        }
        let jitter = self.jitter.sample();
        let record = &mut self.agents[agent];
        let policy = record.spec.agent.restart.clone();
        match record
            .restarts
            .on_exit(&policy, termination, failed, uptime, now, jitter)
        {
            // Not ready in time and not to be restarted: it cannot run.
            Decision::Done if cause == "readiness" => self.fail(agent, reason, actions),
            Decision::Done => {
                tracing::info!(
                    agent = record.name(),
                    "{reason}; not restarted (restart policy)"
                );
                record.reason = Some(reason);
                self.transition(agent, Phase::Stopped);
            }
            Decision::Restart { delay } => {
                let wait = wait_before_restart(delay, uptime).max(policy.delay);
                if wait.is_zero() {
                    tracing::warn!(
                        agent = record.name(),
                        "{reason}; restarting now (ran {}, longer than its backoff step)",
                        format_duration(uptime)
                    );
                } else {
                    tracing::warn!(
                        agent = record.name(),
                        "{reason}; restarting in {}",
                        format_duration(wait)
                    );
                }
                record.reason = Some(reason);
                record.count_restart(cause);
                self.transition(agent, Phase::BackingOff { until: now + wait });
                self.apply_strategy(agent);
            }
            // The policy's words, with the exit told as ours: why it was
            // killed, or what it said last.
            Decision::GiveUp { reason: given } => {
                let reason = given.replacen(&termination.to_string(), &reason, 1);
                self.fail(agent, reason, actions)
            }
        }
    }

    /// What a restart of `agent` does to the others.
    fn apply_strategy(&mut self, agent: AgentId) {
        let affected: Vec<AgentId> = match self.strategy {
            Strategy::OneForOne => {
                for dependent in &self.agents[agent].dependents {
                    let record = &self.agents[*dependent];
                    if record.alive() {
                        tracing::warn!(
                            agent = record.name(),
                            "dependency `{}` is down",
                            self.agents[agent].name()
                        );
                    }
                }
                Vec::new()
            }
            Strategy::RestForOne => self.transitive_dependents(agent),
            Strategy::OneForAll => (0..self.agents.len())
                .filter(|other| *other != agent)
                .collect(),
        };
        for other in affected {
            let phase = &mut self.agents[other].phase;
            if phase.running_unstopped() {
                phase.set_stop(StopIntent::Requeue);
            }
        }
    }

    fn transitive_dependents(&self, agent: AgentId) -> Vec<AgentId> {
        let mut found = vec![false; self.agents.len()];
        let mut stack = vec![agent];
        while let Some(next) = stack.pop() {
            for dependent in &self.agents[next].dependents {
                if !found[*dependent] {
                    found[*dependent] = true;
                    stack.push(*dependent);
                }
            }
        }
        (0..self.agents.len()).filter(|id| found[*id]).collect()
    }

    /// `agent` failed for good; a required one stops everything (unless
    /// `--keep-going`).
    pub(super) fn fail(&mut self, agent: AgentId, reason: String, actions: &mut Vec<Action>) {
        self.transition(agent, Phase::Failed);
        let record = &mut self.agents[agent];
        record.reason = Some(reason.clone());
        let required =
            record.spec.agent.required && record.spec.agent.restart.on_give_up == GiveUp::Shutdown;
        if required && self.keep_going {
            tracing::error!(
                agent = record.name(),
                "required agent failed: {reason}; the others keep running (--keep-going)"
            );
        } else if required && self.mode == Mode::Running {
            tracing::error!(
                agent = record.name(),
                "required agent failed: {reason}; stopping everything"
            );
            let failure = Failure {
                agent: record.name().to_string(),
                reason,
            };
            self.shutdown(Some(failure), false, actions);
        } else {
            tracing::error!(
                agent = record.name(),
                "agent failed: {reason}; its dependents will not start"
            );
        }
    }
}
