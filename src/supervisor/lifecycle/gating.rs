//! Dependency gating: a `Pending` agent starts the moment every one of its
//! dependencies is `Ready` and not about to stop (in the start order of
//! [`crate::plan::start_order`]; with `sequential`, one at a time), and is
//! `Blocked` when one of them failed, was blocked or stopped for good.
//! Also the operator's `start` and `restart`, which bring agents back to
//! `Pending` (with what they need), the all-ready moment and the end of
//! the run.
//!
//! Part of [`super::Lifecycle`]; pure like it.

use tokio::time::Instant;

use super::{Lifecycle, Mode, Phase, Record, StopIntent};
use crate::supervisor::event::{Action, AgentId, Outcome};
use crate::supervisor::state::AgentState;

static NO_AGENTS: Vec<AgentId> = Vec::new();

impl Lifecycle {
    /// Every dependency is ready and not about to be stopped (for a
    /// replicated one, `min_ready` of its instances).
    pub(super) fn dependencies_ready(&self, agent: AgentId) -> bool {
        self.agents[agent].needs.iter().all(|need| {
            need.agents
                .iter()
                .filter(|dependency| {
                    matches!(
                        self.agents[**dependency].phase,
                        Phase::Ready { stop: None, .. }
                    )
                })
                .count()
                >= need.min_ready
        })
    }

    /// A dependency of `agent` that is gone for good (failed, blocked or
    /// stopped), so too few of what it needs can become ready.
    fn blocker(&self, agent: AgentId) -> Option<AgentId> {
        let gone = |dependency: &AgentId| {
            matches!(
                self.agents[*dependency].phase,
                Phase::Failed | Phase::Blocked | Phase::Stopped
            )
        };
        self.agents[agent].needs.iter().find_map(|need| {
            let possible = need.agents.iter().filter(|id| !gone(id)).count();
            (possible < need.min_ready)
                .then(|| need.agents.iter().copied().find(gone))
                .flatten()
        })
    }

    /// Everything that follows from the current states: block, start, stop,
    /// detect all-ready and the end.
    pub(super) fn progress(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.mode == Mode::Running {
            self.block_and_start(now, actions);
        }
        self.stop_wave(now, actions);
        if self.all_ready_after.is_none() && self.mode == Mode::Running {
            let settled = self.agents.iter().all(|record| {
                record.retired
                    || record.first_ready.is_some()
                    || matches!(
                        record.phase,
                        Phase::Failed | Phase::Blocked | Phase::Stopped
                    )
            });
            if settled {
                self.all_ready_after = Some(now.duration_since(self.started));
            }
        }
        let done = match self.mode {
            Mode::ShuttingDown { .. } => self.agents.iter().all(|record| record.state().is_final()),
            // Agents held by an operator wait for the operator.
            Mode::Running => self.agents.iter().all(|record| {
                !record.held
                    && matches!(
                        record.phase,
                        Phase::Stopped | Phase::Failed | Phase::Blocked
                    )
            }),
        };
        if done && !self.finished {
            self.finished = true;
            actions.push(Action::Exit(Outcome {
                failure: self.failure.clone(),
            }));
        }
    }

    /// Blocks the pending agents whose dependency is gone for good, then
    /// starts those whose dependencies are all ready: in launch order
    /// (longest chain of dependents first), or one at a time in start
    /// order when sequential.
    fn block_and_start(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.wake_needed_dependencies();
        for index in 0..self.order.len() {
            let agent = self.order[index];
            if !matches!(self.agents[agent].phase, Phase::Pending) {
                continue;
            }
            if let Some(blocker) = self.blocker(agent) {
                let reason = format!(
                    "dependency `{}` is {}",
                    self.agents[blocker].name(),
                    self.agents[blocker].state()
                );
                tracing::warn!(agent = self.agents[agent].name(), "not started: {reason}");
                self.agents[agent].reason = Some(reason);
                self.transition(agent, Phase::Blocked);
            }
        }
        for index in 0..self.launch_order.len() {
            let agent = self.launch_order[index];
            if self.sequential
                && self
                    .agents
                    .iter()
                    .any(|record| record.state() == AgentState::Starting)
            {
                break;
            }
            if matches!(self.agents[agent].phase, Phase::Pending) && self.dependencies_ready(agent)
            {
                self.start(agent, now, actions);
            }
        }
    }

    /// `roots` and everything reachable through `next` (dependencies or
    /// dependents), in start order.
    pub(super) fn closure(
        &self,
        roots: &[AgentId],
        next: impl Fn(&Record) -> &Vec<AgentId>,
    ) -> Vec<AgentId> {
        let mut found = vec![false; self.agents.len()];
        let mut stack = roots.to_vec();
        for root in roots {
            found[*root] = true;
        }
        while let Some(agent) = stack.pop() {
            for other in next(&self.agents[agent]) {
                if !found[*other] {
                    found[*other] = true;
                    stack.push(*other);
                }
            }
        }
        self.order
            .iter()
            .copied()
            .filter(|agent| found[*agent])
            .collect()
    }

    /// What `StartRequested` for `agents` starts, in dependency order: the
    /// agents, the dependencies they need, and the dependents that were
    /// stopped only because of them (and need nothing else that is held).
    pub fn start_targets(&self, agents: &[AgentId]) -> Vec<AgentId> {
        let mut chosen = vec![false; self.agents.len()];
        for agent in self.closure(agents, |record| &record.dependencies) {
            chosen[agent] = true;
        }
        for agent in self.closure(agents, |record| &record.dependents) {
            let record = &self.agents[agent];
            if !chosen[agent]
                && record.held_for_dependency
                && record
                    .dependencies
                    .iter()
                    .all(|dependency| chosen[*dependency] || !self.agents[*dependency].held)
            {
                chosen[agent] = true;
            }
        }
        self.order
            .iter()
            .copied()
            .filter(|agent| chosen[*agent])
            .collect()
    }

    /// What `RestartRequested` replaces: the agents (and with
    /// `with_dependents` every agent depending on them), in dependency order.
    pub fn restart_targets(&self, agents: &[AgentId], with_dependents: bool) -> Vec<AgentId> {
        match with_dependents {
            true => self.closure(agents, |record| &record.dependents),
            false => self.closure(agents, |_| &NO_AGENTS),
        }
    }

    /// `StartRequested`: the [`Self::start_targets`] go back to `Pending`
    /// (from `Stopped`, `Failed` or `Blocked`, with a fresh restart budget)
    /// and start in dependency order; dependents that were blocked for want
    /// of them are unblocked.
    pub(super) fn operator_start(&mut self, agents: &[AgentId]) {
        for agent in self.start_targets(agents) {
            let record = &mut self.agents[agent];
            record.held = false;
            record.held_for_dependency = false;
            match &mut record.phase {
                Phase::Stopped | Phase::Failed | Phase::Blocked | Phase::Idle => {
                    record.restarts.forgive();
                    record.reason = Some("started by operator".into());
                    self.transition(agent, Phase::Pending);
                }
                Phase::Stopping { intent, .. } if *intent == StopIntent::Operator => {
                    *intent = StopIntent::Replace {
                        reason: "started by operator".into(),
                        cause: "operator",
                        after_dependents: false,
                    };
                }
                _ => {}
            }
        }
        for agent in self.closure(agents, |record| &record.dependents) {
            let record = &mut self.agents[agent];
            if matches!(record.phase, Phase::Blocked) && !record.held {
                record.reason = None;
                self.transition(agent, Phase::Pending);
            }
        }
    }

    /// `RestartRequested`: running agents are stopped and go back to
    /// `Pending`; agents that are not running are started.
    pub(super) fn operator_restart(
        &mut self,
        agents: &[AgentId],
        with_dependents: bool,
        actions: &mut Vec<Action>,
    ) {
        let targets = self.restart_targets(agents, with_dependents);
        for agent in targets {
            let record = &mut self.agents[agent];
            record.held = false;
            record.held_for_dependency = false;
            let replace = StopIntent::Replace {
                reason: "restarted by operator".into(),
                cause: "operator",
                after_dependents: with_dependents,
            };
            let remote = record.spec.remote;
            match &mut record.phase {
                Phase::Starting { .. } | Phase::Ready { .. } if remote => {}
                Phase::Starting { stop, .. } | Phase::Ready { stop, .. } => {
                    actions.push(Action::CancelWatchers { agent });
                    *stop = Some(replace);
                }
                Phase::Stopping { intent, .. } if *intent == StopIntent::Operator => {
                    *intent = replace;
                }
                Phase::BackingOff { .. } => {
                    self.transition(agent, Phase::Pending);
                }
                Phase::Stopped | Phase::Failed | Phase::Blocked | Phase::Idle => {
                    record.restarts.forgive();
                    record.reason = Some("started by operator".into());
                    self.transition(agent, Phase::Pending);
                }
                Phase::Pending | Phase::Stopping { .. } => {}
            }
        }
        self.operator_start(agents);
    }
}
