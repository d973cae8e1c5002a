//! The environment of an agent's run: what the supervisor injects
//! (`AGENT_NAME`, `PORT_OFFSET`, `REPLICA` and `REPLICAS` of an instance, `AGENT_PORT`, `AGENT_HEALTH_PORT`, each
//! dependency's `<NAME>_ENDPOINT` and `AGENT_DEPENDENCIES`, `AGENT_CONFIG_*`
//! from `config`), then the manifest's own `env`, which overrides them; and
//! where dependents reach an agent.
//!
//! Owns the names and values of injected variables (documented in
//! `docs/protocol.md`). Does not own the per-run fabric variables
//! (`SUPERVISOR_ENDPOINT`, the token: [`super::fabric`]) or spawning
//! ([`crate::process`]).

use super::Config;
use super::event::AgentId;
use super::lifecycle::{AgentSpec, Lifecycle};
use crate::manifest::Agent;
use crate::process::{LogTarget, SpawnSpec};

/// The address other agents use to reach `agent` (resolved by the loader:
/// loopback for this host's agents, else the agent's host).
fn endpoint_host(spec: &AgentSpec) -> String {
    if spec.remote && matches!(spec.agent.address.as_str(), "127.0.0.1" | "localhost" | "") {
        return spec.agent.host.clone();
    }
    spec.agent.address.clone()
}

/// Where dependents reach `spec` according to the manifest
/// (`tcp://host:port`); `None` when it has no `port` (then dependents get no
/// `<NAME>_ENDPOINT` for it).
pub(super) fn service_endpoint(spec: &AgentSpec) -> Option<String> {
    spec.agent
        .port
        .map(|port| format!("tcp://{}:{port}", endpoint_host(spec)))
}

/// The command, environment and log target of one run. Injected variables
/// come first so the manifest's `env` can override them (the spawner sets
/// them in order, so a later duplicate wins). `AGENT_DEPENDENCIES` is a JSON
/// object `{name: endpoint}` of the dependencies that have a port (`{}`
/// without any); the log goes to `<logs>/<name>.log` when `config.logs` is set.
pub(super) fn spawn_spec(lifecycle: &Lifecycle, agent: AgentId, config: &Config) -> SpawnSpec {
    let spec: &Agent = &lifecycle.spec(agent).agent;
    let mut env = vec![
        ("AGENT_NAME".to_string(), spec.name.clone()),
        ("PORT_OFFSET".to_string(), config.port_offset.clone()),
    ];
    if let Some(replica) = &spec.replica {
        env.push(("REPLICA".into(), replica.index.to_string()));
        // The count as the instance starts (`scale` does not restart the others).
        let count = lifecycle.instances_of(&replica.of).len();
        env.push(("REPLICAS".into(), count.to_string()));
    }
    if let Some(port) = spec.port {
        env.push(("AGENT_PORT".into(), port.to_string()));
    }
    if let Some(port) = spec.health_check_port {
        env.push(("AGENT_HEALTH_PORT".into(), port.to_string()));
        if spec.legacy {
            env.push(("HEALTH_CHECK_PORT".into(), port.to_string()));
        }
    }
    let mut endpoints = serde_json::Map::new();
    for dependency in lifecycle.dependencies(agent) {
        let dependency = lifecycle.spec(*dependency);
        if let Some(port) = dependency.agent.port {
            let endpoint = format!("tcp://{}:{port}", endpoint_host(dependency));
            env.push((
                format!(
                    "{}_ENDPOINT",
                    crate::manifest::variable_name(crate::manifest::names::plain(
                        &dependency.agent.name,
                    ))
                ),
                endpoint.clone(),
            ));
            endpoints.insert(dependency.agent.name.clone(), endpoint.into());
        }
    }
    env.push((
        "AGENT_DEPENDENCIES".into(),
        serde_json::Value::Object(endpoints).to_string(),
    ));
    // As the legacy launcher did: `config: {zmq_port: 5713}` -> AGENT_CONFIG_ZMQ_PORT=5713
    // (strings as written, anything else as compact JSON).
    for (key, value) in &spec.config {
        let text = match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        env.push((
            format!("AGENT_CONFIG_{}", crate::manifest::variable_name(key)),
            text,
        ));
    }
    env.extend(
        spec.env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    SpawnSpec {
        name: spec.name.clone(),
        argv: spec.command.clone(),
        shell: spec.shell,
        cwd: spec.cwd.clone(),
        env,
        log: config
            .logs
            .as_ref()
            .map(|dir| LogTarget::new(dir.join(format!("{}.log", spec.name)))),
        console: config.console.clone(),
    }
}
