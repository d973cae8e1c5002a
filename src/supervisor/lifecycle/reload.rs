//! A reload: the difference between the running configuration and a new
//! one. Added agents start in dependency order; removed ones stop (after
//! their dependents) and are retired, kept in the table under their id but
//! hidden from the status; changed ones restart alone with the new
//! definition; the rest are untouched (their spec is swapped for the new,
//! equal one). An agent changed when its [`definition`] differs.
//! `scale` is a reload made here from the running configuration
//! ([`Lifecycle::scaled`]): instances beyond the new count are removed
//! (stopped highest index first, see `relink`), new ones added. The count
//! is then the operator's: a reload of the manifests keeps it while the
//! agent's `replicas:` there is the one it was when the operator scaled
//! (whatever else changed); a reload that changes `replicas:` applies the
//! manifest's count, and the operator's is forgotten.
//!
//! Part of [`super::Lifecycle`]; pure like it.

use super::{AgentSpec, Lifecycle, Phase, Record, StopIntent};
use crate::manifest::Agent;
use crate::supervisor::event::{Action, AgentId, CommandError, Reload, ReloadSummary};

impl Lifecycle {
    /// The running configuration with `count` instances of the agent with
    /// `replicas` called `of`: what `scale` applies as a reload. Refused for
    /// an agent without `replicas`, a count of 0 (or more than the most
    /// allowed), and a count below its `min_ready` (its dependents would
    /// wait for instances that no longer run).
    pub fn scaled(&self, of: &str, count: u32) -> Result<Reload, CommandError> {
        let refuse = |why: String| Err(CommandError::Refused(why));
        if self.shutting_down() {
            return Err(CommandError::ShuttingDown);
        }
        let instances = self.instances_of(of);
        let Some(first) = instances.first() else {
            return match self.id(of) {
                Some(_) => refuse(format!(
                    "agent `{of}` has no `replicas:` in its manifest, so it has no instances to scale"
                )),
                None => Err(CommandError::UnknownAgents(vec![of.to_string()])),
            };
        };
        let replica = self.agents[*first]
            .spec
            .agent
            .replica
            .as_ref()
            .expect("instances_of returns instances");
        let min_ready = replica
            .template
            .replicas
            .as_ref()
            .map_or(1, |replicas| replicas.min_ready);
        let most = crate::manifest::replicas::MAX_REPLICAS;
        if count == 0 || count > most {
            return refuse(format!(
                "{count} is not a number of instances (1 to {most})"
            ));
        }
        if count < min_ready {
            return refuse(format!(
                "`{of}` needs at least {min_ready} ready instances (`min_ready: {min_ready}`); scaling it to {count} would leave its dependents waiting"
            ));
        }
        Ok(Reload {
            agents: std::sync::Arc::new(with_count(self.live_specs(), of, count)),
            strategy: self.strategy,
            scaled: Some(of.to_string()),
        })
    }

    /// `reload` as it applies: a reload of the manifests with the operator's
    /// count of every agent it scaled whose `replicas:` is still the one
    /// written when it was scaled (and whose `min_ready` that count meets);
    /// `None` when that changes nothing.
    fn with_operator_counts(&self, reload: &Reload) -> Option<Reload> {
        if reload.scaled.is_some() {
            return None;
        }
        let mut agents: Option<Vec<AgentSpec>> = None;
        for (of, scaled) in &self.scaled {
            let Some(written) = written_replicas(&reload.agents, of) else {
                continue;
            };
            if written.count != scaled.written
                || written.count == scaled.count
                || written.min_ready > scaled.count
            {
                continue;
            }
            let specs = agents.take().unwrap_or_else(|| reload.agents.to_vec());
            agents = Some(with_count(specs, of, scaled.count));
        }
        agents.map(|agents| Reload {
            agents: std::sync::Arc::new(agents),
            strategy: reload.strategy,
            scaled: None,
        })
    }

    /// Remembers the operator's counts after `reload` (as written, before
    /// [`Self::with_operator_counts`]): a `scale` records its count; a reload
    /// of the manifests forgets the count of every agent whose `replicas:`
    /// it changed (or removed).
    fn remember_counts(&mut self, reload: &Reload) {
        match &reload.scaled {
            Some(of) => {
                let Some(count) = written_replicas(&reload.agents, of).map(|now| now.count) else {
                    return;
                };
                let written = match self.scaled.get(of) {
                    Some(scaled) => scaled.written,
                    None => match written_replicas(&self.live_specs(), of) {
                        Some(before) => before.count,
                        None => return,
                    },
                };
                self.scaled
                    .insert(of.clone(), super::Scaled { written, count });
            }
            None => self.scaled.retain(|of, scaled| {
                written_replicas(&reload.agents, of).map(|written| written.count)
                    == Some(scaled.written)
            }),
        }
    }

    /// What applying `reload` would change; pure, changes nothing.
    pub fn reload_summary(&self, reload: &Reload) -> ReloadSummary {
        let kept = self.with_operator_counts(reload);
        let reload = kept.as_ref().unwrap_or(reload);
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
        let kept = self.with_operator_counts(&reload);
        self.remember_counts(&reload);
        let reload = kept.unwrap_or(reload);
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

/// `agents` with `count` instances of the agent with `replicas` called `of`
/// (its instances there give the template): instances beyond `count` are
/// left out, missing ones made, and every instance's template says `count`.
/// Unchanged when `agents` has no instance of `of`.
fn with_count(mut agents: Vec<AgentSpec>, of: &str, count: u32) -> Vec<AgentSpec> {
    let is_instance = |spec: &AgentSpec| {
        spec.agent
            .replica
            .as_ref()
            .is_some_and(|replica| replica.of == of)
    };
    let Some(first) = agents.iter().find(|spec| is_instance(spec)) else {
        return agents;
    };
    let remote = first.remote;
    let mut template = (*first
        .agent
        .replica
        .as_ref()
        .expect("found as an instance")
        .template)
        .clone();
    if let Some(replicas) = &mut template.replicas {
        replicas.count = count;
    }
    agents.retain(|spec| {
        spec.agent
            .replica
            .as_ref()
            .is_none_or(|replica| replica.of != of || replica.index < count)
    });
    for spec in &mut agents {
        if let Some(replica) = &mut spec.agent.replica
            && replica.of == of
        {
            *replica.template = template.clone();
            spec.agent.replicas.clone_from(&template.replicas);
        }
    }
    let present = |index: u32, agents: &[AgentSpec]| {
        agents.iter().any(|spec| {
            spec.agent
                .replica
                .as_ref()
                .is_some_and(|replica| replica.of == of && replica.index == index)
        })
    };
    for index in 0..count {
        if !present(index, &agents) {
            agents.push(AgentSpec {
                agent: crate::manifest::replicas::instance(&template, index),
                remote,
            });
        }
    }
    agents
}

/// The `replicas:` of the agent `of` as its instances in `agents` carry it
/// (the manifest's, or the count of a `scale`).
fn written_replicas(agents: &[AgentSpec], of: &str) -> Option<crate::manifest::Replicas> {
    agents.iter().find_map(|spec| {
        let replica = spec.agent.replica.as_ref()?;
        (replica.of == of)
            .then(|| replica.template.replicas.clone())
            .flatten()
    })
}

/// An agent's definition without where it was written: a reload restarts an
/// agent only when this differs (moving an entry in the file is no change).
pub(super) fn definition(spec: &AgentSpec) -> (Agent, bool) {
    let mut agent = spec.agent.clone();
    agent.location = Default::default();
    // Only `export kubernetes` reads it: changing it changes no process.
    agent.image = None;
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
    // An instance is unchanged by a new count of instances (`scale`):
    // only the ones added or removed start or stop.
    if let Some(replica) = &mut agent.replica {
        let mut template = definition(&AgentSpec {
            agent: (*replica.template).clone(),
            remote: spec.remote,
        })
        .0;
        // Lists every instance's port; the instance's own are compared above.
        template.ports.clear();
        *replica.template = template;
    }
    if let Some(replicas) = &mut agent.replicas {
        replicas.count = 0;
        replicas.min_ready = 0;
        replicas.location = Default::default();
    }
    (agent, spec.remote)
}
