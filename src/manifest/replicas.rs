//! Replicas: the instances `NAME-0 … NAME-(N-1)` of an agent with
//! `replicas: N`.
//!
//! Owns the one expansion of an agent into its instances: the instance's
//! name, its ports (`port: 9100+` gives instance i 9100+i, probes aimed at
//! the agent's port follow), `${REPLICA}` in its command and environment
//! replaced by its index. The validated [`Manifest`] keeps one [`Agent`]
//! with [`Agent::replicas`] (so `check` and the Kubernetes export see the
//! agent as written); `plan` and `up` see the instances, and `scale` makes
//! more from [`Replica::template`]. Does not own the `REPLICA` and
//! `REPLICAS` variables of a run (`crate::supervisor::environment`), nor
//! which instances a dependency waits for (`crate::supervisor::lifecycle`).

use super::model::{Agent, Manifest, PortUse, Probe, ReadinessCheck, Replica};

/// The most instances one agent may have.
pub const MAX_REPLICAS: u32 = 1000;

/// Written in `command`, `args` or `env`, replaced by the instance's index
/// (left as written by `${VAR}` expansion).
pub const REPLICA_VARIABLE: &str = "${REPLICA}";

/// The name of instance `index` of `agent`: `worker-2`.
pub fn instance_name(agent: &str, index: u32) -> String {
    format!("{agent}-{index}")
}

/// Every agent of `agents` as it runs: an agent with `replicas` becomes its
/// instances, the others stay as they are.
pub fn expand(agents: &[Agent]) -> Vec<Agent> {
    agents.iter().flat_map(instances).collect()
}

/// A manifest whose replicated agents are replaced by their instances
/// (what `plan` shows).
pub fn expand_manifest(manifest: &Manifest) -> Manifest {
    Manifest {
        agents: expand(&manifest.agents),
        ..manifest.clone()
    }
}

/// The instances of `agent` (itself alone when it has no `replicas`).
pub fn instances(agent: &Agent) -> Vec<Agent> {
    match &agent.replicas {
        None => vec![agent.clone()],
        Some(replicas) => (0..replicas.count)
            .map(|index| instance(agent, index))
            .collect(),
    }
}

/// Instance `index` of `template` (an agent with `replicas`, as written).
pub fn instance(template: &Agent, index: u32) -> Agent {
    let mut agent = template.clone();
    agent.name = instance_name(&template.name, index);
    agent.replica = Some(Replica {
        of: template.name.clone(),
        index,
        template: Box::new(template.clone()),
    });
    let Some(replicas) = &template.replicas else {
        return agent;
    };
    let offset = u16::try_from(index).unwrap_or(u16::MAX);
    let shift = |port: u16| port.saturating_add(offset);
    let base_port = template.port;
    let base_health = template.health_check_port;
    // Probes aimed at a ranged port follow it to the instance's port.
    let follow = |port: &mut u16| {
        if (replicas.port_range && Some(*port) == base_port)
            || (replicas.health_range && Some(*port) == base_health)
        {
            *port = shift(*port);
        }
    };
    if replicas.port_range {
        agent.port = template.port.map(shift);
    }
    if replicas.health_range {
        agent.health_check_port = template.health_check_port.map(shift);
    }
    // `ports` lists every instance's port of a range (see `validate`): an
    // instance has its own, shifted from instance 0's (`scale` may make
    // instances beyond the count written).
    let first = format!(" ({}, from ", instance_name(&template.name, 0));
    let ranged = |use_: &PortUse| use_.field.contains(" from ") && use_.field.ends_with("+)");
    let own: Vec<PortUse> = template
        .ports
        .iter()
        .filter_map(|use_| {
            let (field, _) = use_.field.split_once(&first)?;
            Some(PortUse {
                port: use_.port.saturating_add(offset),
                field: field.to_string(),
                ..use_.clone()
            })
        })
        .collect();
    agent.ports.retain(|use_| !ranged(use_));
    agent.ports.extend(own);
    let probes = match &mut agent.readiness.check {
        ReadinessCheck::Probe(probe) => Some(probe),
        _ => None,
    }
    .into_iter()
    .chain(agent.liveness.as_mut().map(|liveness| &mut liveness.probe));
    for probe in probes {
        match probe {
            Probe::Tcp { port, .. } | Probe::Zmq { port, .. } => follow(port),
            Probe::Http { url } => {
                for base in [base_port, base_health].into_iter().flatten() {
                    let written = format!(":{base}/");
                    if url.contains(&written) || url.ends_with(&format!(":{base}")) {
                        let mut port = base;
                        follow(&mut port);
                        *url = url.replacen(&format!(":{base}"), &format!(":{port}"), 1);
                        break;
                    }
                }
            }
            Probe::Exec { command } => replace_index(command.iter_mut(), index),
        }
    }
    replace_index(agent.command.iter_mut(), index);
    replace_index(agent.env.values_mut(), index);
    agent
}

/// `${REPLICA}` -> `index` in every one of `texts`.
fn replace_index<'a>(texts: impl Iterator<Item = &'a mut String>, index: u32) {
    for text in texts {
        if text.contains(REPLICA_VARIABLE) {
            *text = text.replace(REPLICA_VARIABLE, &index.to_string());
        }
    }
}

/// Whether `agent` writes `${REPLICA}` (in its command, environment or an
/// exec probe), so its instances differ by more than their ports.
pub fn uses_index(agent: &Agent) -> bool {
    let exec = match &agent.readiness.check {
        ReadinessCheck::Probe(Probe::Exec { command }) => Some(command),
        _ => None,
    };
    agent
        .command
        .iter()
        .chain(agent.env.values())
        .chain(exec.into_iter().flatten())
        .any(|text| text.contains(REPLICA_VARIABLE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ProblemKind;
    use crate::manifest::test_support::load_text as load;

    #[test]
    fn instances_get_names_ports_probes_and_their_index() {
        let loaded = load(
            "version: 1\nagents:\n  worker:\n    command: [\"./w\", \"--id\", \"${REPLICA}\"]\n    env: {SLOT: \"slot-${REPLICA}\"}\n    port: 9100+\n    readiness: {tcp: 9100}\n    replicas: 3\n    min_ready: 2\n  api:\n    command: [\"./api\"]\n    port: 9200\n    dependencies: [worker]\n",
        );
        assert!(
            loaded.problems.iter().all(|problem| !problem.is_error()),
            "{:?}",
            loaded.problems
        );
        let worker = loaded.manifest.agent("worker").expect("worker is loaded");
        let replicas = worker.replicas.as_ref().expect("replicas were written");
        assert_eq!((replicas.count, replicas.min_ready), (3, 2));
        let ports: Vec<u16> = worker.ports.iter().map(|use_| use_.port).collect();
        assert_eq!(ports, [9100, 9101, 9102]);
        let agents = expand(&loaded.manifest.agents);
        let names: Vec<&str> = agents.iter().map(|agent| agent.name.as_str()).collect();
        assert_eq!(names, ["worker-0", "worker-1", "worker-2", "api"]);
        let second = &agents[1];
        assert_eq!(second.port, Some(9101));
        assert_eq!(second.command[1..], ["--id".to_string(), "1".to_string()]);
        assert_eq!(second.env["SLOT"], "slot-1");
        assert_eq!(
            second.readiness.check,
            ReadinessCheck::Probe(Probe::Tcp {
                host: "127.0.0.1".into(),
                port: 9101
            })
        );
        assert_eq!(
            second
                .ports
                .iter()
                .map(|use_| use_.port)
                .collect::<Vec<_>>(),
            [9101]
        );
        let replica = second.replica.as_ref().expect("an instance");
        assert_eq!((replica.of.as_str(), replica.index), ("worker", 1));
        // A further instance (what `scale` makes) from the template.
        assert_eq!(instance(&replica.template, 7).port, Some(9107));
        assert!(uses_index(worker));
        assert_eq!(agents[3], loaded.manifest.agents[1]);
    }

    #[test]
    fn bad_counts_fixed_ports_and_stray_ranges_are_located_errors() {
        let cases = [
            (
                "replicas: 0\n    port: 9100+\n",
                "agents.w.replicas: 0 is not a number",
                5,
            ),
            (
                "replicas: 3\n    port: 9100\n",
                "9100 is one port for 3 instances",
                6,
            ),
            (
                "replicas: 2\n    min_ready: 3\n",
                "agents.w.min_ready: 3 is not between 1 and `replicas` (2)",
                6,
            ),
            ("min_ready: 1\n", "`min_ready` needs `replicas`", 5),
            (
                "port: 9100+\n",
                "`9100+` is a port range, for an agent with `replicas`",
                5,
            ),
            (
                "replicas: 2\n    port: 65535+\n",
                "the range 65535+ of 2 instances goes past port 65535",
                6,
            ),
            (
                "env: {ID: \"${REPLICA}\"}\n",
                "`${REPLICA}` is the instance index of an agent with `replicas`",
                5,
            ),
        ];
        for (fields, message, line) in cases {
            let text = format!("version: 1\nagents:\n  w:\n    command: [\"true\"]\n    {fields}");
            let problems = match crate::manifest::load_str(
                std::path::Path::new("test.yaml"),
                &text,
                &crate::manifest::LoadOptions {
                    environment: Some(Default::default()),
                    ..Default::default()
                },
            ) {
                Ok(loaded) => loaded.problems,
                Err(error) => error.problems,
            };
            let found = problems
                .iter()
                .find(|problem| problem.message.contains(message))
                .unwrap_or_else(|| panic!("no `{message}` for {fields:?}: {problems:?}"));
            assert!(found.is_error(), "{found:?}");
            assert_eq!(found.line, Some(line), "{found:?}");
            assert!(matches!(found.kind, ProblemKind::InvalidValue), "{found:?}");
        }
    }
}
