//! Agent names across hosts: an agent's name is unique on its host, and
//! where two hosts each run an agent of the same name (one copy per machine),
//! both are called `HOST/NAME` in the graph. Dependencies resolve on their
//! own host first.
//!
//! Owns: the graph name of every agent and the resolution of every written
//! dependency to a graph name, done once after all files are read (so
//! `check`, `plan` and `up` see one consistent graph), and the reverse step
//! for one host's run ([`localize`]). Does not own: reporting names that
//! stay unknown or repeat on one host (`crate::check`).

use std::collections::{BTreeSet, HashMap};

use super::model::{Agent, Manifest};

/// Splits `HOST/NAME`; `None` for a plain name.
pub fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once('/')
}

/// `NAME` of `HOST/NAME`; a plain name as it is. What an agent of this
/// host calls another host's agent (its `NAME_ENDPOINT` variable, `resolve`).
pub fn plain(name: &str) -> &str {
    split(name).map_or(name, |(_, name)| name)
}

/// The name an agent defined on `host` as `name` is known by, where
/// `repeated` are the names defined on more than one host.
fn graph_name(host: &str, name: &str, repeated: &BTreeSet<String>) -> String {
    if repeated.contains(name) {
        format!("{host}/{name}")
    } else {
        name.to_string()
    }
}

/// Gives each agent its graph name and resolves every dependency:
///
/// - `NAME` written by an agent of host `H`: `H`'s own `NAME` if `H` defines
///   one, else the only other host's `NAME`, else an agent declared under
///   `hosts.X.agents` (the only one so named), else it stays as written
///   (`check` reports it unknown; defined on several other hosts: ambiguous,
///   also reported).
/// - `HOST/NAME`: that host's agent, defined or declared; else as written.
///
/// Declared agents that a loaded manifest defines are dropped (the
/// definition wins).
pub fn qualify(manifest: &mut Manifest) {
    let mut hosts_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    for agent in &manifest.agents {
        hosts_of
            .entry(agent.name.clone())
            .or_default()
            .insert(agent.host.clone());
    }
    manifest.declared.retain(|declared| {
        split(&declared.name).is_none_or(|(host, name)| {
            !hosts_of.get(name).is_some_and(|hosts| hosts.contains(host))
        })
    });
    let repeated: BTreeSet<String> = hosts_of
        .iter()
        .filter(|(_, hosts)| hosts.len() > 1)
        .map(|(name, _)| name.clone())
        .collect();
    let declared: Vec<String> = manifest
        .declared
        .iter()
        .map(|agent| agent.name.clone())
        .collect();
    let resolve = |own_host: &str, written: &str| -> String {
        if let Some((host, name)) = split(written) {
            return match hosts_of.get(name) {
                Some(hosts) if hosts.contains(host) => graph_name(host, name, &repeated),
                _ => written.to_string(),
            };
        }
        match hosts_of.get(written) {
            Some(hosts) if hosts.contains(own_host) => graph_name(own_host, written, &repeated),
            Some(hosts) if hosts.len() == 1 => written.to_string(),
            Some(_) => written.to_string(),
            None => {
                let mut found = declared
                    .iter()
                    .filter(|name| split(name).is_some_and(|(_, name)| name == written));
                match (found.next(), found.next()) {
                    (Some(only), None) => only.clone(),
                    _ => written.to_string(),
                }
            }
        }
    };
    for agent in &mut manifest.agents {
        for dependency in &mut agent.dependencies {
            dependency.name = resolve(&agent.host, &dependency.name);
        }
    }
    for agent in &mut manifest.agents {
        if repeated.contains(&agent.name) {
            agent.name = format!("{}/{}", agent.host, agent.name);
        }
    }
}

/// For one host's run: its own agents (`local`) lose their `HOST/` prefix,
/// in their names and in every dependency on them, so the processes, logs
/// and variables of this host use the names its manifest wrote. Agents of
/// other hosts keep their graph names.
pub fn localize(agents: &mut [Agent], local: impl Fn(&Agent) -> bool) {
    let mut renamed: HashMap<String, String> = HashMap::new();
    for agent in agents.iter_mut() {
        if !local(agent) {
            continue;
        }
        if let Some((_, name)) = split(&agent.name) {
            let name = name.to_string();
            renamed.insert(std::mem::replace(&mut agent.name, name.clone()), name);
        }
    }
    for agent in agents.iter_mut() {
        for dependency in &mut agent.dependencies {
            if let Some(name) = renamed.get(&dependency.name) {
                dependency.name = name.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ConfigArg, LoadOptions, load};

    fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.display().to_string()
    }

    fn two_hosts(main: &str, pc2: &str) -> Manifest {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(dir.path(), "main.yaml", main);
        let pc2 = write(dir.path(), "pc2.yaml", pc2);
        let options = LoadOptions {
            environment: Some(HashMap::new()),
            ..LoadOptions::default()
        };
        load(
            &[
                ConfigArg::parse(&format!("{main}@mainpc")),
                ConfigArg::parse(&format!("{pc2}@pc2")),
            ],
            &options,
        )
        .expect("load")
        .manifest
    }

    fn dependencies<'a>(manifest: &'a Manifest, name: &str) -> Vec<&'a str> {
        manifest
            .agent(name)
            .unwrap_or_else(|| panic!("no agent {name}"))
            .dependencies
            .iter()
            .map(|dependency| dependency.name.as_str())
            .collect()
    }

    #[test]
    fn a_name_on_two_hosts_is_host_slash_name_and_resolves_on_its_own_host_first() {
        let manifest = two_hosts(
            "version: 1\nagents:\n  Hub: {command: [\"true\"]}\n  Tts: {command: [\"true\"], dependencies: [Hub]}\n",
            "version: 1\nagents:\n  Hub: {command: [\"true\"]}\n  Relay: {command: [\"true\"], dependencies: [Hub, Tts]}\n  Far: {command: [\"true\"], dependencies: [mainpc/Hub]}\n",
        );
        let names: Vec<&str> = manifest.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["mainpc/Hub", "Tts", "pc2/Hub", "Relay", "Far"]);
        assert_eq!(dependencies(&manifest, "Tts"), ["mainpc/Hub"]);
        assert_eq!(dependencies(&manifest, "Relay"), ["pc2/Hub", "Tts"]);
        assert_eq!(dependencies(&manifest, "Far"), ["mainpc/Hub"]);
    }

    #[test]
    fn a_declared_agent_of_another_host_resolves_by_name_and_a_definition_wins() {
        let pc2 = "version: 1\nhosts:\n  mainpc:\n    address: 10.0.0.1\n    agents:\n      Tts: {tcp: 5562}\nagents:\n  Relay: {command: [\"true\"], dependencies: [Tts]}\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "pc2.yaml", pc2);
        let options = LoadOptions {
            environment: Some(HashMap::new()),
            ..LoadOptions::default()
        };
        let alone = load(&[ConfigArg::parse(&format!("{path}@pc2"))], &options)
            .expect("load")
            .manifest;
        assert_eq!(dependencies(&alone, "Relay"), ["mainpc/Tts"]);
        let declared = &alone.declared[0];
        assert_eq!(declared.name, "mainpc/Tts");
        assert_eq!(declared.address, "10.0.0.1");
        assert_eq!(
            declared.readiness.check,
            crate::manifest::ReadinessCheck::Probe(crate::manifest::Probe::Tcp {
                host: "10.0.0.1".into(),
                port: 5562
            })
        );
        let both = two_hosts("version: 1\nagents:\n  Tts: {command: [\"true\"]}\n", pc2);
        assert!(both.declared.is_empty(), "{:?}", both.declared);
        assert_eq!(dependencies(&both, "Relay"), ["Tts"]);
    }

    #[test]
    fn localize_drops_this_hosts_prefix_in_names_and_dependencies() {
        let manifest = two_hosts(
            "version: 1\nagents:\n  Hub: {command: [\"true\"]}\n",
            "version: 1\nagents:\n  Hub: {command: [\"true\"]}\n  Relay: {command: [\"true\"], dependencies: [Hub, mainpc/Hub]}\n",
        );
        let mut agents = manifest.agents.clone();
        localize(&mut agents, |agent| agent.host == "pc2");
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["mainpc/Hub", "Hub", "Relay"]);
        let relay: Vec<&str> = agents[2]
            .dependencies
            .iter()
            .map(|dependency| dependency.name.as_str())
            .collect();
        assert_eq!(relay, ["Hub", "mainpc/Hub"]);
    }
}
