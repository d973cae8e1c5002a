//! Every pre-flight check over a loaded manifest: duplicate agents (and
//! names whose variable forms collide), unknown dependencies (naming the
//! mis-indented or duplicated group that hides them), dependencies on
//! disabled agents, every elementary cycle of each knot with the fewest
//! dependencies to remove, port conflicts per host (with suggestions chosen
//! together), ports out of range or already bound here (or held by this
//! manifest's own running agents), required agents depending on optional
//! ones, scripts, programs and working directories missing here.
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
    self, Agent, ConfigArg, Edge, LoadOptions, Location, Manifest, ManifestError, PortKind,
    Problem, ProblemKind, User,
};
use crate::plan::{MAX_LISTED_CYCLES, find_knots, format_cycle};
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
    /// This manifest's agents that a supervisor already runs (name ->
    /// pid, from the run directory's status): their ports are held by
    /// them, which is no conflict.
    pub running: std::collections::BTreeMap<String, u32>,
}

/// What `check` does without flags: bind check and file check on, no
/// `--compile`, this machine's hostname, no running agents.
impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            bind_check: true,
            this_host: local_hostname(),
            files: true,
            compile: false,
            running: std::collections::BTreeMap::new(),
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

/// Whether `host` names this machine: `this_host` itself, `localhost`,
/// `127.0.0.1` or `::1` (exact, case-sensitive matches).
///
/// ```
/// use supervisor::check::is_this_host;
///
/// assert!(is_this_host("localhost", "pc1"));
/// assert!(is_this_host("pc1", "pc1"));
/// assert!(!is_this_host("pc2", "pc1"));
/// ```
pub fn is_this_host(host: &str, this_host: &str) -> bool {
    host == this_host || matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// A port value to change in place to resolve a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFix {
    /// The manifest file to edit.
    pub file: PathBuf,
    /// Character range of the value in the file's text.
    pub span: Range<usize>,
    /// The agent whose port moves.
    pub agent: String,
    /// The field as in [`crate::manifest::PortUse::field`].
    pub field: String,
    /// The port written now.
    pub old: u16,
    /// The port to write: free on that host among the manifests' agents
    /// and (with the bind check) on this machine.
    pub new: u16,
}

/// The manifest and everything found wrong with it.
#[derive(Debug, Clone)]
pub struct Report {
    /// The manifest as loaded, problems and all (duplicates kept).
    pub manifest: Manifest,
    /// Every problem found, loader's and checks', in the order found
    /// (`cli::check` sorts them for printing).
    pub problems: Vec<Problem>,
    /// One in-place change per conflict that can be fixed that way.
    pub fixes: Vec<PortFix>,
}

impl Report {
    /// True when any problem is an error: `check` exits 1, `up` refuses.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }
}

/// Loads the manifests and runs every check with default options.
pub fn run(configs: &[ConfigArg], options: &LoadOptions) -> Result<Report, ManifestError> {
    run_with(configs, options, &CheckOptions::default())
}

/// Loads the manifests and runs every check with `check`'s options (bind
/// check, file check, `--compile`).
///
/// # Errors
///
/// [`ManifestError`] for what stops loading altogether (an unreadable
/// file, YAML that does not parse, a wrong type or unknown field); every
/// other finding is a [`Problem`] in the report.
pub fn run_with(
    configs: &[ConfigArg],
    options: &LoadOptions,
    check: &CheckOptions,
) -> Result<Report, ManifestError> {
    let loaded = manifest::load(configs, options)?;
    Ok(check_manifest(loaded.manifest, loaded.problems, check))
}

/// Runs every check over an already loaded manifest, adding to the
/// loader's `problems`: a warning when no agent is defined, then duplicates,
/// unknown and disabled dependencies, cycles, required-on-optional, the
/// file checks (when `options.files`) and the port checks (the bind test
/// when `options.bind_check`). Never fails: every finding is a problem in
/// the report, with the port fixes it found.
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
    disabled_dependencies(&manifest, &mut problems);
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

/// `duplicate_agent`: a name defined twice, or two names with one variable
/// form; each duplicate points at the first definition.
fn duplicate_agents(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let mut first: HashMap<&str, &Agent> = HashMap::with_capacity(manifest.agents.len());
    // Names that differ but share a variable form (`Db` and `DB`, `a-b`
    // and `a_b`): their `*_ENDPOINT` variables collide, and so do their log
    // files on a case-insensitive file system.
    let mut by_variable: HashMap<String, &Agent> = HashMap::with_capacity(manifest.agents.len());
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
                let variable = manifest::variable_name(&agent.name);
                match by_variable.get(&variable) {
                    Some(earlier) => problems.push(
                        Problem::error(
                            ProblemKind::DuplicateAgent,
                            format!(
                                "agents `{}` (at {}) and `{}` differ only in case or punctuation: both become `{variable}_ENDPOINT` for their dependents, and their logs collide on a case-insensitive file system",
                                earlier.name, earlier.location, agent.name
                            ),
                        )
                        .at(&agent.location)
                        .for_agent(&agent.name)
                        .suggest("rename one of them so the names differ in letters or digits"),
                    ),
                    None => {
                        by_variable.insert(variable, agent);
                    }
                }
            }
        }
    }
    // An instance (`worker-1`) must not take another agent's name.
    for agent in manifest
        .agents
        .iter()
        .filter(|agent| agent.replicas.is_some())
    {
        for instance in manifest::replicas::instances(agent) {
            if let Some(other) = first.get(instance.name.as_str()) {
                problems.push(
                    Problem::error(
                        ProblemKind::DuplicateAgent,
                        format!(
                            "instance `{}` of agent `{}` (replicas) has the name of the agent at {}",
                            instance.name, agent.name, other.location
                        ),
                    )
                    .at(&agent.location)
                    .for_agent(&agent.name)
                    .suggest("rename one of them"),
                );
            }
        }
    }
}

/// An enabled agent that depends on a disabled one: `up` starts it without
/// that dependency (see `supervisor`), which the author may not expect.
fn disabled_dependencies(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let disabled: HashSet<&str> = manifest
        .agents
        .iter()
        .filter(|agent| !agent.enabled)
        .map(|agent| agent.name.as_str())
        .collect();
    if disabled.is_empty() {
        return;
    }
    for agent in manifest.agents.iter().filter(|agent| agent.enabled) {
        for dependency in &agent.dependencies {
            if !disabled.contains(dependency.name.as_str()) {
                continue;
            }
            let mut problem = Problem::warning(
                ProblemKind::DisabledDependency,
                format!(
                    "agent `{}` depends on `{}`, which is disabled (`enabled: false`): `up` does not start `{}` and starts `{}` without it",
                    agent.name, dependency.name, dependency.name, agent.name
                ),
            )
            .at(&dependency.location)
            .for_agent(&agent.name)
            .suggest(format!(
                "enable `{}`, disable `{}` too, or remove the dependency",
                dependency.name, agent.name
            ));
            problem.dependency = Some(dependency.name.clone());
            problems.push(problem);
        }
    }
}

/// `unknown_dependency`: a dependency no file defines, with the closest
/// defined name, or the mis-indented legacy group hiding it, as suggestion.
fn unknown_dependencies(manifest: &Manifest, problems: &mut Vec<Problem>) {
    // Each instance of an agent with `replicas` may be named alone (`worker-1`).
    let instances: Vec<String> = manifest
        .agents
        .iter()
        .filter(|agent| agent.replicas.is_some())
        .flat_map(manifest::replicas::instances)
        .map(|instance| instance.name)
        .collect();
    // Agents of other hosts declared under `hosts:` are known too.
    let names: HashSet<&str> = manifest
        .agents
        .iter()
        .chain(&manifest.declared)
        .map(|agent| agent.name.as_str())
        .chain(instances.iter().map(String::as_str))
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
            let hidden = manifest
                .hidden
                .iter()
                .find(|hidden| hidden.name == dependency.name);
            // A plain name that several other hosts define (`pc2/X`, `mainpc/X`).
            let on_hosts: Vec<&str> = names
                .iter()
                .filter_map(|name| manifest::names::split(name))
                .filter(|(_, name)| *name == dependency.name)
                .map(|(host, _)| host)
                .collect();
            let suggestion = match (hidden, did_you_mean(&dependency.name, &candidates)) {
                _ if !on_hosts.is_empty() => {
                    let mut on_hosts = on_hosts;
                    on_hosts.sort_unstable();
                    format!(
                        "`{}` runs on hosts {}: write `HOST/{}` to say which",
                        dependency.name,
                        on_hosts.join(", "),
                        dependency.name
                    )
                }
                (Some(hidden), _) => format!("`{}` is in {}", hidden.name, hidden.because),
                (None, close) => match close {
                Some(close) => format!("did you mean `{close}`?"),
                None => "define that agent, pass the manifest that defines it with another --config, or remove the dependency".into(),
                },
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

/// Where `from` lists `to` among its dependencies.
fn edge(agents: &HashMap<&str, &Agent>, from: &str, to: &str) -> Edge {
    let location = agents.get(from).and_then(|agent| {
        agent
            .dependencies
            .iter()
            .find(|dependency| dependency.name == to)
            .map(|dependency| &dependency.location)
    });
    Edge {
        from: from.to_string(),
        to: to.to_string(),
        file: location
            .map(|location| location.file.display().to_string())
            .unwrap_or_default(),
        line: location.map(|location| location.line).unwrap_or_default(),
    }
}

/// Cycles longer than this are printed shortened in the message.
const LONGEST_PRINTED_CYCLE: usize = 24;

/// Where `from` lists `to` (else where `from` is defined).
fn dependency_location(agents: &HashMap<&str, &Agent>, from: &str, to: &str) -> Location {
    let agent = agents.get(from).expect("cycles are made of defined agents");
    agent
        .dependencies
        .iter()
        .find(|dependency| dependency.name == to)
        .map(|dependency| dependency.location.clone())
        .unwrap_or_else(|| agent.location.clone())
}

/// `A -> B (line 12)`, for suggestions.
fn describe_edges(edges: &[Edge]) -> String {
    edges
        .iter()
        .map(|edge| format!("`{}` -> `{}` (line {})", edge.from, edge.to, edge.line))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One problem per elementary cycle of each knot (past
/// [`MAX_LISTED_CYCLES`] in a knot: one problem naming its members and the
/// count), each with the file and line of every edge, and the fewest
/// dependencies to remove to break the whole knot.
fn cycles(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let knots = find_knots(manifest);
    if knots.is_empty() {
        return;
    }
    // Looked up once per edge: a knot can hold every agent.
    let mut agents: HashMap<&str, &Agent> = HashMap::with_capacity(manifest.agents.len());
    for agent in &manifest.agents {
        agents.entry(agent.name.as_str()).or_insert(agent);
    }
    for knot in knots {
        let breaking: Vec<Edge> = knot
            .break_edges
            .iter()
            .map(|(from, to)| edge(&agents, from, to))
            .collect();
        let remove = match (breaking.len(), knot.breaks_all) {
            (1, true) => format!("remove the dependency {}", describe_edges(&breaking)),
            (count, true) => format!(
                "remove these {count} dependencies: {}",
                describe_edges(&breaking)
            ),
            (count, false) => format!(
                "this knot is too tangled to search fully; removing these {count} dependencies is a start, then check again: {}",
                describe_edges(&breaking)
            ),
        };
        let count = if knot.counted_all {
            knot.count.to_string()
        } else {
            format!("at least {}", knot.count)
        };
        if knot.count > MAX_LISTED_CYCLES || !knot.counted_all {
            let first = agents
                .get(knot.members[0].as_str())
                .expect("knots are made of defined agents");
            let mut problem = Problem::error(
                ProblemKind::Cycle,
                format!(
                    "{} agents are knotted in {count} dependency cycles (more than {MAX_LISTED_CYCLES}, so not listed): {}",
                    knot.members.len(),
                    knot.members.join(", ")
                ),
            )
            .at(&first.location)
            .suggest(format!("agents in a cycle can never start; {remove}"));
            problem.agents = Some(knot.members.clone());
            problem.edges = Some(breaking.clone());
            problem.count = None;
            problems.push(problem);
            continue;
        }
        let single = knot.cycles.len() == 1;
        for cycle in &knot.cycles {
            let edges: Vec<Edge> = (0..cycle.len())
                .map(|index| edge(&agents, &cycle[index], &cycle[(index + 1) % cycle.len()]))
                .collect();
            let message = if cycle.len() == 1 {
                format!("agent `{}` depends on itself", cycle[0])
            } else {
                let lines: Vec<String> = edges.iter().map(|edge| edge.line.to_string()).collect();
                if cycle.len() <= LONGEST_PRINTED_CYCLE {
                    format!(
                        "dependency cycle: {} (dependencies on lines {})",
                        format_cycle(cycle),
                        lines.join(", ")
                    )
                } else {
                    // The whole cycle is in `agents` and `edges`.
                    let head = format_cycle(&cycle[..LONGEST_PRINTED_CYCLE / 2]);
                    let head = head
                        .rsplit_once(" -> ")
                        .map_or(head.as_str(), |(head, _)| head);
                    format!(
                        "dependency cycle of {} agents: {head} -> ... -> {} -> {} (dependencies on lines {}, ...; all in --json)",
                        cycle.len(),
                        cycle[cycle.len() - 1],
                        cycle[0],
                        lines[..LONGEST_PRINTED_CYCLE / 2].join(", ")
                    )
                }
            };
            let message = if single {
                message
            } else {
                format!(
                    "{message} [one of {count} cycles among {}]",
                    knot.members.join(", ")
                )
            };
            let suggestion = if single {
                format!("agents in a cycle can never start; {remove}")
            } else {
                format!(
                    "agents in a cycle can never start; to break all {count} cycles of this knot, {remove}"
                )
            };
            let mut problem = Problem::error(ProblemKind::Cycle, message)
                .at(&dependency_location(
                    &agents,
                    &cycle[0],
                    &cycle[1 % cycle.len()],
                ))
                .suggest(suggestion);
            problem.agents = Some(cycle.clone());
            problem.edges = Some(edges);
            problems.push(problem);
        }
    }
}

/// `required_on_optional`: a required agent whose start hangs on an
/// optional one (a warning: the manifest may mean it).
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

/// Every port check (`port_conflict`, `port_in_use`; ranges were checked
/// by validation), and the fixes: replacement ports chosen together so no
/// two land on one port, none on a port this machine holds.
///
/// `port_conflict`, one per shared (host, port), in that order: an error
/// when two agents bind it, or one agent binds it twice (`port` equal to
/// its own `health_check_port`); a warning when the only other user is a
/// legacy HTTP health port (`health_check_port + 1`, which exists only for
/// agents on the legacy base class). The suggestion moves the last written
/// values one at a time until one agent is left, carrying along the
/// legacy ports derived from each; a conflict that an earlier suggestion
/// already resolves says so instead.
///
/// `port_in_use` (with the bind check, for this machine's agents only): an
/// error naming the process that holds the port, with a free replacement
/// when one is found; a warning instead when the holder is this manifest's
/// own agent under a running supervisor ([`CheckOptions::running`]).
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
    // (agent, field) values already moved by a suggestion; agents by
    // address, as duplicate names are distinct agents here.
    let mut moved: HashSet<(usize, &str)> = HashSet::new();
    for ((host, port), uses) in shared {
        let agents: BTreeSet<&str> = uses.iter().map(|(agent, _)| agent.name.as_str()).collect();
        // A clash counts as an error when two different agents really bind
        // it, or one agent binds it twice (`port` equal to its own
        // `health_check_port`: its second bind fails).
        let binding_uses = uses
            .iter()
            .filter(|(_, port)| port.kind != PortKind::LegacyHttpHealth)
            .count();
        let binding: BTreeSet<&str> = uses
            .iter()
            .filter(|(_, port)| port.kind != PortKind::LegacyHttpHealth)
            .map(|(agent, _)| agent.name.as_str())
            .collect();
        // Only `port` against `health_check_port`: a `config.*_port` equal
        // to the agent's own port describes the same socket, not a second one.
        let with_itself = agents.len() == 1
            && binding_uses >= 2
            && uses.iter().any(|(_, use_)| use_.field == "port")
            && uses
                .iter()
                .any(|(_, use_)| use_.field == "health_check_port");
        if agents.len() < 2 && !with_itself {
            continue;
        }
        let error = binding.len() >= 2 || with_itself;
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
        // Uses that an earlier suggestion already moves away do not count.
        let still_here =
            |agent: &Agent, use_: &manifest::PortUse, moved: &HashSet<(usize, &str)>| {
                movable(agent, use_).is_none_or(|(base, _)| {
                    !moved.contains(&(std::ptr::from_ref(agent) as usize, base.field.as_str()))
                })
            };
        let mut remaining: Vec<&(&Agent, &manifest::PortUse)> = uses
            .iter()
            .filter(|(agent, use_)| still_here(agent, use_, &moved))
            .collect();
        let clashes = |remaining: &[&(&Agent, &manifest::PortUse)]| {
            let agents: BTreeSet<&str> = remaining
                .iter()
                .map(|(agent, _)| agent.name.as_str())
                .collect();
            agents.len() >= 2 || (with_itself && remaining.len() >= 2)
        };
        let moved_by = uses.iter().find_map(|(agent, use_)| {
            movable(agent, use_)
                .filter(|(base, _)| {
                    moved.contains(&(std::ptr::from_ref(*agent) as usize, base.field.as_str()))
                })
                .map(|(base, _)| (*agent, base))
        });
        // Move the last written values, one at a time, until at most one
        // agent is left on the port; each move keeps the ports derived from
        // the value (legacy implicit health and HTTP ports) free as well.
        let local = is_this_host(host, &options.this_host);
        let mut changes: Vec<String> = Vec::new();
        let mut first_change: Option<(&Agent, &manifest::PortUse)> = None;
        let mut replacement = None;
        while clashes(&remaining) {
            let Some((agent, base, (written, offset, extra))) =
                remaining.iter().rev().find_map(|(agent, use_)| {
                    movable(agent, use_).map(|(base, found)| (*agent, base, found))
                })
            else {
                break;
            };
            let Some(value) = free_port(
                host,
                written,
                bound.as_ref().filter(|_| local),
                &mut used,
                extra,
            ) else {
                break;
            };
            moved.insert((std::ptr::from_ref(agent) as usize, base.field.as_str()));
            remaining.retain(|(other, use_)| still_here(other, use_, &moved));
            if first_change.is_none() {
                first_change = Some((agent, base));
                replacement = value.checked_add(offset);
            }
            let along = match (base.field.as_str(), extra) {
                ("port", 2) => format!(
                    "; its implicit health port {} and HTTP health port {} move with it",
                    value + 1,
                    value + 2
                ),
                (_, 1) => format!("; its HTTP health port {} moves with it", value + 1),
                _ => String::new(),
            };
            let free = if along.is_empty() {
                ", which is free"
            } else {
                ", all free"
            };
            changes.push(format!(
                "change {}.{} to {value}{along}{free}",
                agent.name, base.field
            ));
            if let Some(span) = &base.span {
                fixes.push(PortFix {
                    file: base.location.file.clone(),
                    span: span.clone(),
                    agent: agent.name.clone(),
                    field: base.field.clone(),
                    old: written,
                    new: value,
                });
            }
        }
        let (blame, location) = match (first_change, moved_by) {
            (Some((agent, base)), _) | (None, Some((agent, base))) => {
                (agent.name.clone(), base.location.clone())
            }
            (None, None) => {
                let (agent, use_) = uses.last().expect("at least one user");
                (agent.name.clone(), use_.location.clone())
            }
        };
        let mut problem = if with_itself {
            let fields: Vec<&str> = uses.iter().map(|(_, port)| port.field.as_str()).collect();
            Problem::error(ProblemKind::PortConflict, format!("agent `{}` uses port {port} on host `{host}` for both {}: it cannot bind the port twice", uses[0].0.name, fields.join(" and ")))
        } else if error {
            Problem::error(ProblemKind::PortConflict, format!("port {port} on host `{host}` is used by {}", described.join(" and ")))
        } else {
            Problem::warning(ProblemKind::PortConflict, format!("port {port} on host `{host}` is used by {} (the legacy HTTP health server at health_check_port+1 only exists for agents built on the legacy base class)", described.join(" and ")))
        }
        .at(&location)
        .for_agent(&blame);
        if !changes.is_empty() {
            problem = problem.suggest(changes.join("; and "));
        } else if let Some((agent, base)) = moved_by {
            problem = problem.suggest(format!(
                "the change to {}.{} suggested for an earlier conflict also frees this port",
                agent.name, base.field
            ));
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
            // Held by this manifest's own agent, running under a supervisor.
            if let Some((agent, use_, pid)) = uses.iter().find_map(|(agent, use_)| {
                options
                    .running
                    .get(&agent.name)
                    .map(|pid| (agent, use_, *pid))
            }) {
                let mut problem = Problem::warning(
                    ProblemKind::PortInUse,
                    format!(
                        "port {port} ({}.{}) is in use by running agent {} (pid {pid}) of this manifest",
                        agent.name, use_.field, agent.name
                    ),
                )
                .at(&use_.location)
                .for_agent(&agent.name);
                problem.port = Some(i64::from(*port));
                problem.host = Some(host.to_string());
                problems.push(problem);
                continue;
            }
            let (agent, use_) = uses[0];
            let replacement = free_port(host, *port, Some(bound), &mut used, 0);
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

/// The written value to change so that `use_` moves, as
/// `(value's port use, (written port, offset of use_ from it, ports after
/// the written one that move with it))`. A legacy implicit port cannot be
/// written: the agent's `port` (or `health_check_port`) it derives from is
/// changed instead. `None` when nothing written can be changed.
fn movable<'a>(
    agent: &'a Agent,
    use_: &'a manifest::PortUse,
) -> Option<(&'a manifest::PortUse, (u16, u16, u16))> {
    let field = |name: &str| {
        agent
            .ports
            .iter()
            .find(|port| port.field == name && port.span.is_some())
    };
    let implicit_health = agent.legacy && agent.health_check_port.is_none();
    match use_.kind {
        PortKind::Explicit if use_.span.is_some() => {
            let extra = match use_.field.as_str() {
                "port" if implicit_health => 2,
                "port" => 0,
                "health_check_port" if agent.legacy => 1,
                _ => 0,
            };
            Some((use_, (use_.port, 0, extra)))
        }
        PortKind::Explicit => None,
        PortKind::ImplicitHealth => field("port").map(|base| (base, (base.port, 1, 2))),
        PortKind::LegacyHttpHealth if implicit_health => {
            field("port").map(|base| (base, (base.port, 2, 2)))
        }
        PortKind::LegacyHttpHealth => {
            field("health_check_port").map(|base| (base, (base.port, 1, 1)))
        }
    }
}

/// The nearest port above `port` that the manifest does not use on `host`
/// (and, given this machine's `bound` ports, that nothing here holds),
/// together with the `extra` ports after it (legacy ports derived from it:
/// the implicit health port and the HTTP health port). All of them are
/// then marked used, so suggestions never land on each other.
fn free_port<'a>(
    host: &'a str,
    port: u16,
    bound: Option<&BoundPorts>,
    used: &mut HashSet<(&'a str, u16)>,
    extra: u16,
) -> Option<u16> {
    let is_used = |candidate: u16, used: &HashSet<(&str, u16)>| used.contains(&(host, candidate));
    let start = port.max(1024);
    'candidates: for candidate in (start..=u16::MAX).skip(1).take(5000) {
        for offset in 0..=extra {
            let Some(next) = candidate.checked_add(offset) else {
                continue 'candidates;
            };
            if is_used(next, used) || bound.is_some_and(|bound| bound.is_held(next)) {
                continue 'candidates;
            }
        }
        for offset in 0..=extra {
            used.insert((host, candidate + offset));
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

    /// Every check but the machine-dependent ones over `text`.
    fn check_text(text: &str) -> Report {
        check_ports(text, false, Default::default())
    }

    /// The checks of `check_text`, plus the bind check when `bind_check`,
    /// with `running` as the agents a supervisor already runs.
    fn check_ports(
        text: &str,
        bind_check: bool,
        running: std::collections::BTreeMap<String, u32>,
    ) -> Report {
        let loaded = manifest::load_str(
            std::path::Path::new("m.yaml"),
            text,
            &LoadOptions {
                environment: Some(HashMap::new()),
                ..LoadOptions::default()
            },
        )
        .expect("the manifest reads");
        let options = CheckOptions {
            bind_check,
            this_host: "localhost".into(),
            files: false,
            compile: false,
            running,
        };
        check_manifest(loaded.manifest, loaded.problems, &options)
    }

    /// The report's problems of one kind, in the order found.
    fn of_kind(report: &Report, kind: ProblemKind) -> Vec<&Problem> {
        report
            .problems
            .iter()
            .filter(|problem| problem.kind == kind)
            .collect()
    }

    /// A manifest text with one agent per `(name, dependencies)` pair, each
    /// running `true`.
    fn agents(edges: &[(&str, &[&str])]) -> String {
        let mut text = String::from("version: 1\nagents:\n");
        for (name, deps) in edges {
            text.push_str(&format!(
                "  {name}:\n    command: [\"true\"]\n    dependencies: [{}]\n",
                deps.join(", ")
            ));
        }
        text
    }

    #[test]
    fn every_cycle_of_a_knot_is_reported_with_its_edges_and_the_fewest_edges_to_break_it() {
        // Five agents, three cycles: a->b->a, b->c->d->b, c->e->c.
        let report = check_text(&agents(&[
            ("a", &["b"]),
            ("b", &["a", "c"]),
            ("c", &["d", "e"]),
            ("d", &["b"]),
            ("e", &["c"]),
        ]));
        let cycles = of_kind(&report, ProblemKind::Cycle);
        let listed: Vec<Vec<String>> = cycles
            .iter()
            .map(|problem| problem.agents.clone().unwrap())
            .collect();
        assert_eq!(
            listed,
            vec![vec!["a", "b"], vec!["b", "c", "d"], vec!["c", "e"]],
            "{:?}",
            report.problems
        );
        let named: BTreeSet<&String> = listed.iter().flatten().collect();
        assert_eq!(named.len(), 5, "every agent of the knot is named");
        // a's dependency on b is written on line 5.
        let first = cycles[0];
        assert_eq!(
            (first.file.as_deref(), first.line),
            (Some("m.yaml"), Some(5))
        );
        let edges = first.edges.as_ref().unwrap();
        assert_eq!(
            edges
                .iter()
                .map(|edge| (edge.from.as_str(), edge.to.as_str(), edge.line))
                .collect::<Vec<_>>(),
            [("a", "b", 5), ("b", "a", 8)]
        );
        assert!(
            first
                .message
                .contains("one of 3 cycles among a, b, c, d, e"),
            "{}",
            first.message
        );
        // Three disjoint-edge cycles need three removals; the exact search
        // picks the first such set in edge order.
        assert_eq!(
            first.suggestion.as_deref(),
            Some(
                "agents in a cycle can never start; to break all 3 cycles of this knot, remove these 3 dependencies: `a` -> `b` (line 5), `b` -> `c` (line 8), `c` -> `e` (line 11)"
            )
        );
    }

    #[test]
    fn one_edge_shared_by_every_cycle_is_the_one_suggested() {
        // b -> c is on both cycles: b->c->a->b and b->c->d->b.
        let report = check_text(&agents(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a", "d"]),
            ("d", &["b"]),
        ]));
        let cycles = of_kind(&report, ProblemKind::Cycle);
        assert_eq!(cycles.len(), 2);
        assert!(
            cycles[0]
                .suggestion
                .as_deref()
                .unwrap()
                .ends_with("remove the dependency `b` -> `c` (line 8)"),
            "{:?}",
            cycles[0].suggestion
        );
    }

    #[test]
    fn a_knot_of_more_than_fifty_cycles_is_its_members_and_count() {
        // A complete graph on 6 agents has 409 elementary cycles.
        let names = ["a", "b", "c", "d", "e", "f"];
        let edges: Vec<(&str, Vec<&str>)> = names
            .iter()
            .map(|name| {
                (
                    *name,
                    names
                        .iter()
                        .copied()
                        .filter(|other| other != name)
                        .collect(),
                )
            })
            .collect();
        let edges: Vec<(&str, &[&str])> = edges.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let report = check_text(&agents(&edges));
        let cycles = of_kind(&report, ProblemKind::Cycle);
        assert_eq!(cycles.len(), 1, "{:?}", report.problems);
        assert!(
            cycles[0]
                .message
                .starts_with("6 agents are knotted in 409 dependency cycles"),
            "{}",
            cycles[0].message
        );
        assert_eq!(cycles[0].agents.as_ref().unwrap().len(), 6);
        // Breaking a complete graph on 6 takes 15 edges (all but an order).
        assert_eq!(cycles[0].edges.as_ref().unwrap().len(), 15);
    }

    #[test]
    fn an_agent_whose_port_is_its_own_health_port_collides_with_itself() {
        let report = check_text(
            "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    port: 7000\n    health_check_port: 7000\n",
        );
        let conflicts = of_kind(&report, ProblemKind::PortConflict);
        assert_eq!(conflicts.len(), 1, "{:?}", report.problems);
        assert_eq!(conflicts[0].severity, manifest::Severity::Error);
        assert_eq!(conflicts[0].line, Some(6));
        assert_eq!(
            conflicts[0].message,
            "agent `a` uses port 7000 on host `localhost` for both port and health_check_port: it cannot bind the port twice"
        );
        assert_eq!(
            conflicts[0].suggestion.as_deref(),
            Some("change a.health_check_port to 7001, which is free")
        );
        assert_eq!(report.fixes.len(), 1);
    }

    #[test]
    fn port_suggestions_hold_together_and_never_move_an_implicit_port() {
        // Legacy list (implicit health port+1, HTTP health port+2): B's port
        // is A's implicit health port; C, D and E share 7004; F holds
        // 7010-7012. Every moved agent needs port, port+1 and port+2 free,
        // away from every other suggestion (B goes to 7007-7009, so E and
        // D land past F).
        let report = check_text(concat!(
            "pc2_services:\n",
            "  - {name: A, script_path: a.py, port: 7000}\n",
            "  - {name: B, script_path: b.py, port: 7001}\n",
            "  - {name: C, script_path: c.py, port: 7004}\n",
            "  - {name: D, script_path: d.py, port: 7004}\n",
            "  - {name: E, script_path: e.py, port: 7004}\n",
            "  - {name: F, script_path: f.py, port: 7010}\n",
        ));
        let conflicts = of_kind(&report, ProblemKind::PortConflict);
        for problem in &conflicts {
            let suggestion = problem.suggestion.as_deref().unwrap_or_default();
            assert!(!suggestion.contains("implicit: port+1"), "{suggestion}");
            assert!(!suggestion.contains("(implicit"), "{suggestion}");
        }
        // 7004 is used by three agents: two of them move.
        let three = conflicts
            .iter()
            .find(|problem| problem.port == Some(7004))
            .expect("the 7004 conflict");
        assert_eq!(
            three.suggestion.as_deref(),
            Some(
                "change E.port to 7013; its implicit health port 7014 and HTTP health port 7015 move with it, all free; and change D.port to 7016; its implicit health port 7017 and HTTP health port 7018 move with it, all free"
            )
        );
        // Applying every fix leaves no conflict at all.
        let fixed = fix::apply(&report.manifest, &report.fixes);
        let after = check_text(&fixed[0].text);
        assert!(
            of_kind(&after, ProblemKind::PortConflict).is_empty(),
            "{}\n{:?}",
            fixed[0].text,
            after.problems
        );
    }

    #[test]
    fn a_port_held_by_this_manifests_running_agent_is_not_a_conflict() {
        let (_listener, port) = held();
        let text =
            format!("version: 1\nagents:\n  mine:\n    command: [\"true\"]\n    port: {port}\n");
        let report = check_ports(
            &text,
            true,
            [("mine".to_string(), 4242)].into_iter().collect(),
        );
        let in_use = of_kind(&report, ProblemKind::PortInUse);
        assert_eq!(in_use.len(), 1, "{:?}", report.problems);
        assert_eq!(in_use[0].severity, manifest::Severity::Warning);
        assert_eq!(in_use[0].line, Some(5));
        assert_eq!(
            in_use[0].message,
            format!(
                "port {port} (mine.port) is in use by running agent mine (pid 4242) of this manifest"
            )
        );
        assert!(!report.has_errors());
    }

    #[test]
    fn a_dependency_on_a_disabled_agent_is_a_located_warning() {
        let report = check_text(
            "version: 1\nagents:\n  db:\n    command: [\"true\"]\n    enabled: false\n  api:\n    command: [\"true\"]\n    dependencies: [db]\n",
        );
        let found = of_kind(&report, ProblemKind::DisabledDependency);
        assert_eq!(found.len(), 1, "{:?}", report.problems);
        assert_eq!(found[0].severity, manifest::Severity::Warning);
        assert_eq!(found[0].line, Some(8));
        assert_eq!(found[0].dependency.as_deref(), Some("db"));
        assert_eq!(
            found[0].suggestion.as_deref(),
            Some("enable `db`, disable `api` too, or remove the dependency")
        );
    }

    #[test]
    fn names_that_differ_only_in_case_or_punctuation_collide() {
        let report = check_text(
            "version: 1\nagents:\n  Db: {command: [\"true\"]}\n  DB: {command: [\"true\"]}\n  a-b: {command: [\"true\"]}\n  a_b: {command: [\"true\"]}\n",
        );
        let found = of_kind(&report, ProblemKind::DuplicateAgent);
        assert_eq!(found.len(), 2, "{:?}", report.problems);
        assert_eq!(found[0].line, Some(4));
        assert!(
            found[0].message.contains("both become `DB_ENDPOINT`"),
            "{}",
            found[0].message
        );
        assert_eq!(found[1].line, Some(6));
        assert!(
            found[1].message.contains("`A_B_ENDPOINT`"),
            "{}",
            found[1].message
        );
    }

    #[test]
    fn a_dependency_on_an_agent_of_a_misindented_group_names_the_group() {
        let report = check_text(concat!(
            "agent_groups:\n",
            "  foundation:\n",
            "    A:\n",
            "      script_path: a.py\n",
            "      port: 7000\n",
            "      dependencies: [Gen]\n",
            "    utility:\n",
            "      Gen:\n",
            "        script_path: gen.py\n",
            "        port: 7100\n",
        ));
        let found = of_kind(&report, ProblemKind::UnknownDependency);
        assert_eq!(found.len(), 1, "{:?}", report.problems);
        assert_eq!(found[0].line, Some(6));
        assert_eq!(
            found[0].suggestion.as_deref(),
            Some(
                "`Gen` is in `agent_groups.foundation.utility` (m.yaml:7), a group indented one level too deep that the legacy launcher does not read; dedent that group"
            )
        );
    }

    #[test]
    fn a_dependency_on_an_agent_hidden_by_a_duplicate_group_key_names_the_key() {
        let report = check_text(concat!(
            "agent_groups:\n",
            "  emotion_system:\n",
            "    EmotionEngine:\n",
            "      script_path: e.py\n",
            "      port: 7000\n",
            "  core:\n",
            "    EmotionClient:\n",
            "      script_path: c.py\n",
            "      port: 7100\n",
            "      dependencies: [EmotionEngine]\n",
            "  emotion_system:\n",
            "    EmotionSynth:\n",
            "      script_path: s.py\n",
            "      port: 7200\n",
        ));
        let found = of_kind(&report, ProblemKind::UnknownDependency);
        assert_eq!(found.len(), 1, "{:?}", report.problems);
        assert_eq!(found[0].line, Some(10));
        assert_eq!(
            found[0].suggestion.as_deref(),
            Some(
                "`EmotionEngine` is in the first `emotion_system` (m.yaml:2), which the second `emotion_system` (m.yaml:11) replaces: a key written twice in one mapping, the last one wins; merge the two or rename one"
            )
        );
        assert_eq!(of_kind(&report, ProblemKind::DuplicateKey).len(), 1);
    }

    #[test]
    fn an_unset_variable_does_not_stop_the_other_checks() {
        let report = check_text(
            "version: 1\nagents:\n  a:\n    command: [\"${UNSET_X}\"]\n    dependencies: [b]\n  b:\n    command: [\"true\"]\n    dependencies: [a]\n",
        );
        assert_eq!(of_kind(&report, ProblemKind::UnsetVariable).len(), 1);
        assert_eq!(of_kind(&report, ProblemKind::Cycle).len(), 1);
        assert!(report.has_errors());
    }

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
        let replacement = free_port("localhost", port - 1, Some(&bound), &mut used, 0);
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
        let replacement = free_port("localhost", port - 1, Some(&bound), &mut HashSet::new(), 0);
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
            0,
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
            0,
        );
        assert_ne!(
            replacement,
            Some(port),
            "without the set every candidate is bound"
        );
        let replacement = free_port("localhost", port - 1, None, &mut HashSet::new(), 0);
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
        let report = check_ports(&text, true, Default::default());
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
