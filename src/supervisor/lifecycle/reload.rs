//! A reload: the difference between the running configuration and a new
//! one. Added agents start in dependency order; removed ones stop (after
//! their dependents) and are retired, kept in the table under their id but
//! hidden from the status; changed ones restart alone with the new
//! definition; the rest are untouched (their spec is swapped for the new,
//! equal one). An agent changed when its [`definition`] differs.
//!
//! Part of [`super::Lifecycle`]; pure like it.

use super::{AgentSpec, Lifecycle, Phase, Record, StopIntent};
use crate::manifest::Agent;
use crate::supervisor::event::{Action, AgentId, Reload, ReloadSummary};

impl Lifecycle {
    /// What applying `reload` would change; pure, changes nothing.
    pub fn reload_summary(&self, reload: &Reload) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        for spec in reload.agents.iter() {
            match self.id(&spec.agent.name) {
                None => summary.added.push(spec.agent.name.clone()),
                Some(agent) if definition(&self.agents[agent].spec) != definition(spec) => {
                    summary.changed.push(spec.agent.name.clone())
                }
                Some(_) => summary.unchanged += 1,
            }
        }
        for record in self.agents.iter().filter(|record| !record.retired) {
            if !reload
                .agents
                .iter()
                .any(|spec| spec.agent.name == record.name())
            {
                summary.removed.push(record.name().to_string());
            }
        }
        summary
    }

    /// `ReloadRequested`: applies the difference (see the module doc).
    pub(super) fn reload(&mut self, reload: Reload, actions: &mut Vec<Action>) {
        let summary = self.reload_summary(&reload);
        tracing::info!("reloading: {summary}");
        self.strategy = reload.strategy;
        for agent in 0..self.agents.len() {
            if self.agents[agent].retired {
                continue;
            }
            let name = self.agents[agent].name().to_string();
            match reload.agents.iter().find(|spec| spec.agent.name == name) {
                None => self.retire(agent, actions),
                Some(spec) if definition(spec) != definition(&self.agents[agent].spec) => {
                    self.agents[agent].spec = spec.clone();
                    self.replace_changed(agent, actions);
                }
                Some(spec) => self.agents[agent].spec = spec.clone(),
            }
        }
        for spec in reload.agents.iter() {
            if self.id(&spec.agent.name).is_none() {
                self.agents.push(Record::new(spec.clone()));
            }
        }
        self.relink();
        self.reloads += 1;
        self.config_errors.clear();
    }

    /// A removed agent: stopped (dependents first) and hidden for good.
    fn retire(&mut self, agent: AgentId, actions: &mut Vec<Action>) {
        let record = &mut self.agents[agent];
        record.retired = true;
        record.held = false;
        let remote = record.spec.remote;
        match &mut record.phase {
            Phase::Pending | Phase::Blocked | Phase::BackingOff { .. } | Phase::Idle => {
                self.transition(agent, Phase::Stopped);
            }
            Phase::Starting { .. } | Phase::Ready { .. } if remote => {
                actions.push(Action::CancelWatchers { agent });
                self.transition(agent, Phase::Stopped);
            }
            phase @ (Phase::Starting { .. } | Phase::Ready { .. } | Phase::Stopping { .. }) => {
                actions.push(Action::CancelWatchers { agent });
                phase.set_stop(StopIntent::Retire);
            }
            Phase::Stopped | Phase::Failed => {}
        }
    }

    /// An agent whose definition changed: restarted with the new one, alone.
    /// Agents an operator stopped stay stopped.
    fn replace_changed(&mut self, agent: AgentId, actions: &mut Vec<Action>) {
        let record = &mut self.agents[agent];
        let replace = StopIntent::Replace {
            reason: "definition changed (reload)".into(),
            cause: "reload",
            after_dependents: false,
        };
        let (remote, held) = (record.spec.remote, record.held);
        match &mut record.phase {
            Phase::Starting { .. } | Phase::Ready { .. } if remote => {
                actions.push(Action::CancelWatchers { agent });
                self.transition(agent, Phase::Stopped);
                self.transition(agent, Phase::Pending);
            }
            Phase::Starting { stop, .. } | Phase::Ready { stop, .. } => {
                actions.push(Action::CancelWatchers { agent });
                *stop = Some(replace);
            }
            Phase::Stopping { intent, .. } if *intent != StopIntent::Operator => {
                *intent = replace;
            }
            Phase::BackingOff { .. } | Phase::Blocked | Phase::Failed => {
                record.restarts.forgive();
                self.transition(agent, Phase::Pending);
            }
            Phase::Stopped if !held => {
                self.transition(agent, Phase::Pending);
            }
            // An idle agent starts with its new definition when woken.
            Phase::Stopped | Phase::Stopping { .. } | Phase::Pending | Phase::Idle => {}
        }
    }
}

/// An agent's definition without where it was written: a reload restarts an
/// agent only when this differs (moving an entry in the file is no change).
pub(super) fn definition(spec: &AgentSpec) -> (Agent, bool) {
    let mut agent = spec.agent.clone();
    agent.location = Default::default();
    for dependency in &mut agent.dependencies {
        dependency.location = Default::default();
    }
    for port in &mut agent.ports {
        port.location = Default::default();
        port.span = None;
    }
    if let Some(script) = &mut agent.script {
        script.location = Default::default();
    }
    (agent, spec.remote)
}
