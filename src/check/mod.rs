//! Every pre-flight check over a loaded manifest: duplicate agents, unknown
//! dependencies, dependency cycles, port conflicts per host, ports out of
//! range or already bound here, required agents depending on optional ones,
//! scripts, programs and working directories missing here.
//!
//! Owns the finding of problems and of replacement ports; printing is the
//! CLI's job, rewriting files is `fix.rs`, and which ports this machine's
//! sockets hold is `bound.rs`.

pub mod bound;
mod files;
pub mod fix;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;

use crate::manifest::yaml::did_you_mean;
use crate::manifest::{
    self, Agent, ConfigArg, LoadOptions, Manifest, ManifestError, PortKind, Problem, ProblemKind,
    User,
};
use crate::plan::{find_cycles, format_cycle};
use bound::BoundPorts;

/// What to check besides the manifest itself.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Look for ports of this machine's agents that something else already
    /// holds: the kernel is asked once which ports may be held, and each of
    /// those gets a bind test (see `bound.rs`).
    pub bind_check: bool,
    /// The name of this machine (agents whose host is this name,
    /// `localhost` or a loopback address run here).
    pub this_host: String,
    /// Check that this machine's agents' scripts, programs and working
    /// directories exist (see `files.rs`).
    pub files: bool,
    /// Also parse every Python script of this machine's agents.
    pub compile: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            bind_check: true,
            this_host: local_hostname(),
            files: true,
            compile: false,
        }
    }
}

/// This machine's hostname (`localhost` when it cannot be read).
pub fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether `host` names this machine.
pub fn is_this_host(host: &str, this_host: &str) -> bool {
    host == this_host || matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// A port value to change in place to resolve a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFix {
    pub file: PathBuf,
    /// Character range of the value in the file's text.
    pub span: Range<usize>,
    pub agent: String,
    pub field: String,
    pub old: u16,
    pub new: u16,
}

/// The manifest and everything found wrong with it.
#[derive(Debug, Clone)]
pub struct Report {
    pub manifest: Manifest,
    pub problems: Vec<Problem>,
    /// One in-place change per conflict that can be fixed that way.
    pub fixes: Vec<PortFix>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }
}

/// Loads the manifests and runs every check with default options.
pub fn run(configs: &[ConfigArg], options: &LoadOptions) -> Result<Report, ManifestError> {
    run_with(configs, options, &CheckOptions::default())
}

pub fn run_with(
    configs: &[ConfigArg],
    options: &LoadOptions,
    check: &CheckOptions,
) -> Result<Report, ManifestError> {
    let loaded = manifest::load(configs, options)?;
    Ok(check_manifest(loaded.manifest, loaded.problems, check))
}

/// Runs every check over an already loaded manifest.
pub fn check_manifest(
    manifest: Manifest,
    mut problems: Vec<Problem>,
    options: &CheckOptions,
) -> Report {
    if manifest.agents.is_empty() {
        let mut problem = Problem::warning(ProblemKind::NoAgents, "no agents are defined")
            .suggest("add an `agents:` list or mapping (see docs/manifest.md)");
        problem.file = manifest
            .files
            .first()
            .map(|file| file.path.display().to_string());
        problems.push(problem);
    }
    duplicate_agents(&manifest, &mut problems);
    unknown_dependencies(&manifest, &mut problems);
    cycles(&manifest, &mut problems);
    required_on_optional(&manifest, &mut problems);
    if options.files {
        problems.extend(files::check(
            &manifest.agents,
            |agent| is_this_host(&agent.host, &options.this_host),
            options.compile,
        ));
    }
    let fixes = ports(&manifest, options, &mut problems);
    Report {
        manifest,
        problems,
        fixes,
    }
}

fn duplicate_agents(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let mut first: HashMap<&str, &Agent> = HashMap::with_capacity(manifest.agents.len());
    for agent in &manifest.agents {
        match first.get(agent.name.as_str()) {
            Some(earlier) => problems.push(
                Problem::error(
                    ProblemKind::DuplicateAgent,
                    format!(
                        "agent `{}` is defined twice (first at {})",
                        agent.name, earlier.location
                    ),
                )
                .at(&agent.location)
                .for_agent(&agent.name)
                .suggest("rename or remove one of them"),
            ),
            None => {
                first.insert(&agent.name, agent);
            }
        }
    }
}

fn unknown_dependencies(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let names: HashSet<&str> = manifest
        .agents
        .iter()
        .map(|agent| agent.name.as_str())
        .collect();
    // Sorted, so that ties between equally close names resolve the same way
    // every time; only built when a dependency is unknown.
    let mut candidates: Vec<&str> = Vec::new();
    for agent in &manifest.agents {
        for dependency in &agent.dependencies {
            if names.contains(dependency.name.as_str()) {
                continue;
            }
            if candidates.is_empty() {
                candidates = names.iter().copied().collect();
                candidates.sort_unstable();
            }
            let suggestion = match did_you_mean(&dependency.name, &candidates) {
                Some(close) => format!("did you mean `{close}`?"),
                None => "define that agent, pass the manifest that defines it with another --config, or remove the dependency".into(),
            };
            let mut problem = Problem::error(
                ProblemKind::UnknownDependency,
                format!(
                    "agent `{}` depends on `{}`, which is not defined",
                    agent.name, dependency.name
                ),
            )
            .at(&dependency.location)
            .for_agent(&agent.name)
            .suggest(suggestion);
            problem.dependency = Some(dependency.name.clone());
            problems.push(problem);
        }
    }
}

fn cycles(manifest: &Manifest, problems: &mut Vec<Problem>) {
    for cycle in find_cycles(manifest) {
        let first = manifest
            .agent(&cycle[0])
            .expect("cycles are made of defined agents");
        let message = if cycle.len() == 1 {
            format!("agent `{}` depends on itself", cycle[0])
        } else {
            format!("dependency cycle: {}", format_cycle(&cycle))
        };
        let mut problem = Problem::error(ProblemKind::Cycle, message)
            .at(&first.location)
            .suggest("remove one dependency of the cycle; agents in a cycle can never start");
        problem.agents = Some(cycle);
        problems.push(problem);
    }
}

fn required_on_optional(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let mut by_name: std::collections::HashMap<&str, &Agent> = std::collections::HashMap::new();
    for agent in &manifest.agents {
        by_name.entry(&agent.name).or_insert(agent);
    }
    for agent in manifest.agents.iter().filter(|agent| agent.required) {
        for dependency in &agent.dependencies {
            if let Some(optional) = by_name
                .get(dependency.name.as_str())
                .filter(|dependency| !dependency.required)
            {
                let mut problem = Problem::warning(ProblemKind::RequiredOnOptional, format!("required agent `{}` depends on optional agent `{}`; if it fails, `{}` cannot start", agent.name, optional.name, agent.name))
                    .at(&dependency.location)
                    .for_agent(&agent.name)
                    .suggest(format!("make `{}` required, or `{}` optional", optional.name, agent.name));
                problem.dependency = Some(optional.name.clone());
                problems.push(problem);
            }
        }
    }
}

/// Every port use, keyed by host and port.
type PortTable<'a> = HashMap<(&'a str, u16), Vec<(&'a Agent, &'a manifest::PortUse)>>;

fn ports(manifest: &Manifest, options: &CheckOptions, problems: &mut Vec<Problem>) -> Vec<PortFix> {
    let mut table: PortTable = HashMap::new();
    for agent in &manifest.agents {
        for port in &agent.ports {
            table
                .entry((agent.host.as_str(), port.port))
                .or_default()
                .push((agent, port));
        }
    }
    let mut used: HashSet<(&str, u16)> = table.keys().copied().collect();
    // Read once for the whole run: replacement ports are checked against it too.
    let bound = options.bind_check.then(BoundPorts::read);
    // Ports are reported in (host, port) order; most have a single user.
    let mut shared: Vec<_> = table.iter().filter(|(_, uses)| uses.len() >= 2).collect();
    shared.sort_unstable_by_key(|(key, _)| **key);
    let mut fixes = Vec::new();
    for ((host, port), uses) in shared {
        let agents: BTreeSet<&str> = uses.iter().map(|(agent, _)| agent.name.as_str()).collect();
        if agents.len() < 2 {
            continue;
        }
        // A clash counts as an error when two different agents really bind it.
        let binding: BTreeSet<&str> = uses
            .iter()
            .filter(|(_, port)| port.kind != PortKind::LegacyHttpHealth)
            .map(|(agent, _)| agent.name.as_str())
            .collect();
        let error = binding.len() >= 2;
        let users: Vec<User> = uses
            .iter()
            .map(|(agent, port)| User {
                agent: agent.name.clone(),
                field: port.field.clone(),
            })
            .collect();
        let described: Vec<String> = users
            .iter()
            .map(|user| format!("{}.{}", user.agent, user.field))
            .collect();
        // Change the last written value that can be changed in place.
        let change = uses
            .iter()
            .rev()
            .find(|(_, port)| port.span.is_some())
            .or(uses.last())
            .expect("at least two users");
        let local = is_this_host(host, &options.this_host);
        let replacement = free_port(
            host,
            *port,
            bound.as_ref().filter(|_| local),
            &mut used,
            change.0.port.is_some()
                && change.1.field == "port"
                && change.0.legacy
                && change.0.health_check_port.is_none(),
        );
        let mut problem = if error {
            Problem::error(ProblemKind::PortConflict, format!("port {port} on host `{host}` is used by {}", described.join(" and ")))
        } else {
            Problem::warning(ProblemKind::PortConflict, format!("port {port} on host `{host}` is used by {} (the legacy HTTP health server at health_check_port+1 only exists for agents built on the legacy base class)", described.join(" and ")))
        }
        .at(&change.1.location)
        .for_agent(&change.0.name);
        if let Some(replacement) = replacement {
            problem = problem.suggest(format!(
                "change {}.{} to {replacement}, which is free",
                change.0.name, change.1.field
            ));
            // Warnings are suggestions only: `--fix` changes what really clashes.
            if let (true, Some(span)) = (error, &change.1.span) {
                fixes.push(PortFix {
                    file: change.1.location.file.clone(),
                    span: span.clone(),
                    agent: change.0.name.clone(),
                    field: change.1.field.clone(),
                    old: *port,
                    new: replacement,
                });
            }
        }
        problem.port = Some(i64::from(*port));
        problem.host = Some(host.to_string());
        problem.users = Some(users);
        problem.replacement = replacement;
        problems.push(problem);
    }
    if let Some(bound) = &bound {
        let mut all: Vec<_> = table.iter().collect();
        all.sort_unstable_by_key(|(key, _)| **key);
        for ((host, port), uses) in all {
            if !is_this_host(host, &options.this_host)
                || uses
                    .iter()
                    .all(|(_, port)| port.kind == PortKind::LegacyHttpHealth)
            {
                continue;
            }
            if !bound.is_held(*port) {
                continue;
            }
            let (agent, use_) = uses[0];
            let replacement = free_port(host, *port, Some(bound), &mut used, false);
            let holder = bound::listeners(*port);
            let mut problem = Problem::error(
                ProblemKind::PortInUse,
                format!(
                    "port {port} ({}.{}) is already bound on this machine by {}",
                    agent.name,
                    use_.field,
                    holder.describe()
                ),
            )
            .at(&use_.location)
            .for_agent(&agent.name);
            problem = match replacement {
                Some(free) => problem.suggest(format!("stop what holds it (e.g. `ss -ltnp 'sport = :{port}'`) or use {free}, which is free")),
                None => problem.suggest(format!("stop what holds it (e.g. `ss -ltnp 'sport = :{port}'`)")),
            };
            problem.port = Some(i64::from(*port));
            problem.host = Some(host.to_string());
            problem.replacement = replacement;
            problems.push(problem);
        }
    }
    fixes
}

/// The nearest port above `port` that the manifest does not use on `host`
/// (and, given this machine's `bound` ports, that nothing here holds).
/// `with_next` also keeps the following port unused (a legacy implicit
/// health port).
fn free_port<'a>(
    host: &'a str,
    port: u16,
    bound: Option<&BoundPorts>,
    used: &mut HashSet<(&'a str, u16)>,
    with_next: bool,
) -> Option<u16> {
    let is_used = |candidate: u16, used: &HashSet<(&str, u16)>| used.contains(&(host, candidate));
    let start = port.max(1024);
    for candidate in (start..=u16::MAX).skip(1).take(5000) {
        if is_used(candidate, used)
            || (with_next && (candidate == u16::MAX || is_used(candidate + 1, used)))
        {
            continue;
        }
        if bound.is_some_and(|bound| bound.is_held(candidate)) {
            continue;
        }
        used.insert((host, candidate));
        if with_next {
            used.insert((host, candidate + 1));
        }
        return Some(candidate);
    }
    // Everything nearby is taken: let portpicker find any free port.
    let picked = portpicker::pick_unused_port().filter(|candidate| !is_used(*candidate, used))?;
    used.insert((host, picked));
    Some(picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A port that a listener holds, with the listener.
    fn held() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    #[test]
    fn a_replacement_skips_a_port_held_here() {
        let (_listener, port) = held();
        let bound = BoundPorts::read();
        let mut used = HashSet::new();
        let replacement = free_port("localhost", port - 1, Some(&bound), &mut used, false);
        let replacement = replacement.expect("a free port nearby");
        assert!(replacement > port, "{replacement} is not past {port}");
        assert!(portpicker::is_free_tcp(replacement));
        assert!(used.contains(&("localhost", replacement)));
    }

    #[test]
    fn a_listed_candidate_that_binds_is_taken() {
        let (listener, port) = held();
        drop(listener);
        let bound = BoundPorts::Listed(HashSet::from([port]));
        let replacement = free_port(
            "localhost",
            port - 1,
            Some(&bound),
            &mut HashSet::new(),
            false,
        );
        assert_eq!(replacement, Some(port));
    }

    #[test]
    fn an_unlisted_candidate_gets_no_bind_test() {
        let (_listener, port) = held();
        let unlisted = BoundPorts::Listed(HashSet::new());
        let replacement = free_port(
            "localhost",
            port - 1,
            Some(&unlisted),
            &mut HashSet::new(),
            false,
        );
        assert_eq!(
            replacement,
            Some(port),
            "the set is trusted for unlisted ports"
        );
        let replacement = free_port(
            "localhost",
            port - 1,
            Some(&BoundPorts::Unknown),
            &mut HashSet::new(),
            false,
        );
        assert_ne!(
            replacement,
            Some(port),
            "without the set every candidate is bound"
        );
        let replacement = free_port("localhost", port - 1, None, &mut HashSet::new(), false);
        assert_eq!(replacement, Some(port), "no probing for other hosts");
    }

    #[test]
    fn ports_held_here_are_reported_once_per_port_and_free_ones_are_not() {
        let (_listener, port) = held();
        let free = {
            let (listener, free) = held();
            drop(listener);
            free
        };
        let text = format!(
            "version: 1\nagents:\n  a: {{ command: [\"true\"], port: {port} }}\n  b: {{ command: [\"true\"], port: {free} }}\n"
        );
        let loaded = manifest::load_str(
            std::path::Path::new("m.yaml"),
            &text,
            &LoadOptions {
                environment: Some(HashMap::new()),
                ..LoadOptions::default()
            },
        )
        .unwrap();
        let options = CheckOptions {
            bind_check: true,
            this_host: "localhost".into(),
            files: false,
            compile: false,
        };
        let report = check_manifest(loaded.manifest, loaded.problems, &options);
        let in_use: Vec<_> = report
            .problems
            .iter()
            .filter(|problem| problem.kind == ProblemKind::PortInUse)
            .collect();
        assert_eq!(in_use.len(), 1, "{:?}", report.problems);
        assert_eq!(in_use[0].port, Some(i64::from(port)));
        let replacement = in_use[0].replacement.expect("a replacement");
        assert!(replacement != port && replacement != free);
    }
}
