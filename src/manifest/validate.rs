//! Turns manifest files into one validated [`Manifest`]: read, parse, detect
//! the format, expand variables, deserialize, then check and convert every
//! value (ports in range, commands split, durations and signals parsed).
//!
//! Gathers every problem rather than stopping at the first: read errors
//! (exit 2) go into a [`ManifestError`], softer findings into
//! [`Loaded::problems`].
//!
//! Owns every rule about a single agent's values and the defaults filled
//! in. Does not own checks across agents (duplicates, dependencies,
//! cycles, port conflicts: `crate::check`), nor the YAML reading (`yaml`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::legacy::{self, NATIVE_KEYS};
use super::raw::{
    RawAgent, RawArgs, RawCommand, RawDefaults, RawDuration, RawGiveUp, RawLiveness, RawManifest,
    RawPort, RawReadiness, RawRestart, RawRestartMode, RawStrategy, RawTarget,
};
use super::replicas::{MAX_REPLICAS, REPLICA_VARIABLE};
use super::vars::{self, Variables};
use super::yaml::{self, Node, Value};
use super::*;

/// Files larger than this are refused before parsing.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One file's legacy-format conversion before variables are expanded: the
/// native-shaped tree (`supervisor convert` writes it out), with the
/// findings the conversion made and the file's format.
pub struct Unexpanded {
    pub root: Node,
    pub format: String,
    pub notes: Vec<(Problem, usize)>,
}

/// Reads `config` and rewrites it to the native shape, variables kept.
pub fn unexpanded(config: &ConfigArg) -> Result<Unexpanded, ManifestError> {
    let text = read_file(&config.path).map_err(|problem| ManifestError {
        problems: vec![*problem],
    })?;
    let (root, duplicates) = yaml::parse(&text).map_err(|error| ManifestError {
        problems: vec![
            Problem::error(
                ProblemKind::Syntax,
                format!("invalid YAML: {}", error.message),
            )
            .at(&Location {
                file: config.path.clone(),
                line: error.line,
                column: error.column,
            }),
        ],
    })?;
    let converted = legacy::convert(root, config.host.as_deref());
    let mut notes = converted.ignored;
    for duplicate in duplicates {
        notes.push((
            Problem::error(
                ProblemKind::DuplicateKey,
                format!(
                    "key `{}` appears twice in one mapping (first on line {}); the last one is used",
                    duplicate.key, duplicate.first_line
                ),
            ),
            duplicate.line,
        ));
    }
    let mut root = converted.root;
    if converted.format == "native" {
        let mut errors = Vec::new();
        normalize_agent_map(&mut root, &mut errors, &config.path);
        if !errors.is_empty() {
            return Err(ManifestError { problems: errors });
        }
    }
    Ok(Unexpanded {
        root,
        format: converted.format,
        notes,
    })
}

/// Reads, expands and validates every file in order (`crate::manifest::load`).
/// A file that cannot be read does not stop the others: every fatal problem
/// of every file is in the one [`ManifestError`]. The first file that sets
/// `strategy` wins.
pub fn load(configs: &[ConfigArg], options: &LoadOptions) -> Result<Loaded, ManifestError> {
    let variables = variables(options)?;
    let mut errors = Vec::new();
    let mut loaded = Loaded {
        manifest: Manifest::default(),
        problems: Vec::new(),
    };
    let mut strategy = None;
    for config in configs {
        let text = match read_file(&config.path) {
            Ok(text) => text,
            Err(problem) => {
                errors.push(*problem);
                continue;
            }
        };
        if let Some(file) = load_file(config, text, &variables, &mut loaded, &mut errors) {
            strategy = strategy.or(file);
        }
    }
    if !errors.is_empty() {
        return Err(ManifestError { problems: errors });
    }
    loaded.manifest.strategy = strategy.unwrap_or_default();
    super::names::qualify(&mut loaded.manifest);
    Ok(loaded)
}

/// [`load`] of one file whose text is already in memory
/// (`crate::manifest::load_str`).
pub fn load_text(
    config: &ConfigArg,
    text: String,
    options: &LoadOptions,
) -> Result<Loaded, ManifestError> {
    let variables = variables(options)?;
    let mut errors = Vec::new();
    let mut loaded = Loaded {
        manifest: Manifest::default(),
        problems: Vec::new(),
    };
    let strategy = load_file(config, text, &variables, &mut loaded, &mut errors);
    if !errors.is_empty() {
        return Err(ManifestError { problems: errors });
    }
    loaded.manifest.strategy = strategy.flatten().unwrap_or_default();
    super::names::qualify(&mut loaded.manifest);
    Ok(loaded)
}

/// The variables values are expanded with: the environment (or the test
/// map), overridden by `--env-file`. An unreadable env file is fatal.
fn variables(options: &LoadOptions) -> Result<Variables, ManifestError> {
    Variables::new(options.environment.as_ref(), options.env_file.as_deref()).map_err(|message| {
        ManifestError {
            problems: vec![Problem::error(
                ProblemKind::Syntax,
                format!("cannot read the env file: {message}"),
            )],
        }
    })
}

/// The file's text; a `syntax` problem naming the file when it cannot be
/// read, is larger than `MAX_FILE_BYTES`, or is not UTF-8 (with the line
/// of the first bad byte).
fn read_file(path: &Path) -> Result<String, Box<Problem>> {
    let fail = |message: String| {
        let mut problem = Problem::error(ProblemKind::Syntax, message);
        problem.file = Some(path.display().to_string());
        Box::new(problem)
    };
    let metadata = std::fs::metadata(path)
        .map_err(|error| fail(format!("cannot read the manifest: {error}")))?;
    if metadata.len() > MAX_FILE_BYTES {
        return Err(fail(format!(
            "the manifest is {} bytes; the limit is {MAX_FILE_BYTES}",
            metadata.len()
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|error| fail(format!("cannot read the manifest: {error}")))?;
    String::from_utf8(bytes).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        let line = error.as_bytes()[..offset]
            .iter()
            .filter(|byte| **byte == b'\n')
            .count()
            + 1;
        let mut problem = fail(format!(
            "the manifest is not UTF-8 text (bad byte at offset {offset})"
        ));
        problem.line = Some(line);
        problem
    })
}

/// One file's context while its agents are built.
struct FileContext<'a> {
    /// The file as given.
    path: &'a Path,
    /// Its directory: relative `cwd`s and scripts are resolved from here.
    dir: PathBuf,
    /// The machine of agents that set no `host`.
    host: String,
    /// Read from a legacy format: every agent is a legacy agent.
    legacy: bool,
    /// The file's `defaults:`.
    defaults: RawDefaults,
}

impl FileContext<'_> {
    /// Where `node` is in this file.
    fn location(&self, node: &Node) -> Location {
        Location {
            file: self.path.to_path_buf(),
            line: node.line,
            column: node.column,
        }
    }
}

/// Reads one file into `loaded`. Returns the file's `strategy:` (outer
/// `None` when the file could not be read).
fn load_file(
    config: &ConfigArg,
    text: String,
    variables: &Variables,
    loaded: &mut Loaded,
    errors: &mut Vec<Problem>,
) -> Option<Option<Strategy>> {
    let path = config.path.as_path();
    let at = |line: usize, column: usize| Location {
        file: path.to_path_buf(),
        line,
        column,
    };
    let (root, duplicates) = match yaml::parse(&text) {
        Ok(parsed) => parsed,
        Err(error) => {
            errors.push(
                Problem::error(
                    ProblemKind::Syntax,
                    format!("invalid YAML: {}", error.message),
                )
                .at(&at(error.line, error.column)),
            );
            return None;
        }
    };
    if let Some(line) = second_document(&text) {
        loaded.problems.push(
            Problem::error(
                ProblemKind::Syntax,
                "a second YAML document starts here; only the first is read",
            )
            .at(&at(line, 1))
            .suggest(
                "remove the `---` and what follows, or pass that part as its own manifest file",
            ),
        );
    }
    let hidden_by_duplicates: Vec<yaml::DuplicateKey> = duplicates
        .iter()
        .filter(|duplicate| !duplicate.hidden_keys.is_empty())
        .cloned()
        .collect();
    for duplicate in duplicates {
        loaded.problems.push(
            Problem::error(ProblemKind::DuplicateKey, format!("key `{}` appears twice in one mapping (first on line {}); the last one is used", duplicate.key, duplicate.first_line))
                .at(&at(duplicate.line, duplicate.column))
                .suggest("remove or rename one of them"),
        );
    }
    if root.as_mapping().is_none() {
        errors.push(
            Problem::error(
                ProblemKind::InvalidValue,
                format!(
                    "the top level must be a mapping with `agents:`, found {}",
                    root.kind_name()
                ),
            )
            .at(&at(root.line, root.column)),
        );
        return None;
    }
    let converted = legacy::convert(root, config.host.as_deref());
    for (problem, line) in converted.ignored {
        loaded.problems.push(problem.at(&at(line, 0)));
    }
    for (name, group, line) in converted.hidden {
        loaded.manifest.hidden.push(HiddenAgent {
            name,
            because: format!("`{group}` ({}), a group indented one level too deep that the legacy launcher does not read; dedent that group", at(line, 0)),
        });
    }
    for duplicate in &hidden_by_duplicates {
        for name in &duplicate.hidden_keys {
            loaded.manifest.hidden.push(HiddenAgent {
                name: name.clone(),
                because: format!(
                    "the first `{key}` ({}), which the second `{key}` ({}) replaces: a key written twice in one mapping, the last one wins; merge the two or rename one",
                    at(duplicate.first_line, 0),
                    at(duplicate.line, 0),
                    key = duplicate.key
                ),
            });
        }
    }
    let legacy = converted.format != "native";
    let mut root = converted.root;
    if !legacy {
        normalize_agent_map(&mut root, errors, path);
    }
    let mut expansion_failures = Vec::new();
    expand_except_extra(&mut root, variables, &mut expansion_failures);
    if !expansion_failures.is_empty() {
        let names: Vec<String> = root
            .get("agents")
            .and_then(Node::as_sequence)
            .unwrap_or_default()
            .iter()
            .filter_map(|agent| agent.get("name").and_then(Node::as_str).map(str::to_string))
            .collect();
        loaded
            .problems
            .extend(expansion_problems(expansion_failures, &names, at));
    }
    // Agents are deserialized one by one so that every bad entry is reported.
    let agent_nodes: Vec<Node> = match root.value {
        Value::Mapping(ref mut entries) => match entries
            .iter()
            .position(|(key, _)| key.as_str() == Some("agents"))
        {
            Some(position) => {
                let (_, agents) = entries.remove(position);
                match agents.value {
                    Value::Sequence(items) => items,
                    _ if agents.is_null() => Vec::new(),
                    _ => {
                        errors.push(
                            Problem::error(
                                ProblemKind::InvalidValue,
                                format!(
                                    "`agents` must be a list or a mapping, found {}",
                                    agents.kind_name()
                                ),
                            )
                            .at(&at(agents.line, agents.column)),
                        );
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        },
        _ => Vec::new(),
    };
    let raw: RawManifest = match yaml::from_node(&root) {
        Ok(raw) => raw,
        Err(error) => {
            let mut message = error.to_string();
            if error.path.is_empty() || !NATIVE_KEYS.contains(&error.path.as_str()) {
                message.push_str(" (not a known manifest format: expected `version`/`agents` or a legacy layout such as `agent_groups:`)");
            }
            errors.push(
                Problem::error(ProblemKind::InvalidValue, message)
                    .at(&at(error.line, error.column)),
            );
            return None;
        }
    };
    if let Some(version) = raw.version.filter(|version| *version != 1) {
        let line = root.get("version").map_or(1, |node| node.line);
        loaded.problems.push(
            Problem::error(
                ProblemKind::InvalidValue,
                format!("`version: {version}` is not a manifest version this supervisor reads (only 1 exists)"),
            )
            .at(&at(line, 1))
            .suggest("write `version: 1`"),
        );
    }
    for (key, value) in &raw.defaults.env {
        if let Some(why) = invalid_variable_name(key) {
            loaded.problems.push(
                Problem::error(
                    ProblemKind::InvalidValue,
                    format!(
                        "defaults.env: environment variable name `{}` {why}",
                        key.escape_debug()
                    ),
                )
                .at(&at(1, 0)),
            );
        } else if value.contains('\0') {
            loaded.problems.push(
                Problem::error(
                    ProblemKind::InvalidValue,
                    format!("defaults.env: environment variable `{key}` holds a NUL byte"),
                )
                .at(&at(1, 0)),
            );
        }
    }
    let host = config
        .host
        .clone()
        .or(raw.host.clone())
        .unwrap_or_else(|| "localhost".to_string());
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let context = FileContext {
        path,
        dir,
        host: host.clone(),
        legacy,
        defaults: raw.defaults,
    };
    // Each agent's tree is dropped once it is built, so the model reuses
    // its memory (for 1,000 agents, fewer fresh pages to fault in).
    for node in agent_nodes {
        let node = &node;
        match yaml::from_node::<RawAgent>(node) {
            Ok(agent) => {
                if let Some(agent) =
                    build_agent(&context, agent, node, &mut loaded.problems, errors)
                {
                    loaded.manifest.agents.push(agent);
                }
            }
            Err(error) => {
                let name = node.get("name").and_then(Node::as_str).unwrap_or("?");
                let field = if error.path.is_empty() {
                    String::new()
                } else {
                    format!(".{}", error.path)
                };
                errors.push(
                    Problem::error(
                        ProblemKind::InvalidValue,
                        format!("agents.{name}{field}: {}", error.message),
                    )
                    .at(&at(error.line, error.column))
                    .for_agent(name),
                );
            }
        }
    }
    loaded.manifest.files.push(SourceFile {
        path: path.to_path_buf(),
        format: converted.format,
        host,
        text,
    });
    if let Some(metrics) = &raw.metrics
        && loaded.manifest.metrics.is_none()
    {
        let text = metrics.listen.trim();
        let parsed = text
            .parse::<u16>()
            .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .or_else(|_| text.parse::<std::net::SocketAddr>());
        match parsed {
            Ok(listen) => loaded.manifest.metrics = Some(Metrics { listen }),
            Err(_) => errors.push(
                Problem::error(
                    ProblemKind::InvalidValue,
                    format!("metrics.listen: `{text}` is not `host:port` (e.g. 127.0.0.1:9464) or a port"),
                )
                .at(&at(1, 1)),
            ),
        }
    }
    read_hosts(&raw.hosts, &root, path, loaded, errors);
    Some(raw.strategy.map(|strategy| match strategy {
        RawStrategy::OneForOne => Strategy::OneForOne,
        RawStrategy::RestForOne => Strategy::RestForOne,
        RawStrategy::OneForAll => Strategy::OneForAll,
    }))
}

/// `hosts:` of one file: each host's address and link port, and the agents
/// of other hosts it declares (built like agents, then named `HOST/NAME`).
fn read_hosts(
    hosts: &std::collections::BTreeMap<String, super::raw::RawHost>,
    root: &Node,
    path: &Path,
    loaded: &mut Loaded,
    errors: &mut Vec<Problem>,
) {
    let at = |node: Option<&Node>| Location {
        file: path.to_path_buf(),
        line: node.map_or(1, |node| node.line),
        column: node.map_or(1, |node| node.column),
    };
    for (name, host) in hosts {
        let node = root.get("hosts").and_then(|hosts| hosts.get(name));
        let location = at(node);
        if !valid_name(name) {
            loaded.problems.push(
                Problem::error(
                    ProblemKind::InvalidValue,
                    format!(
                        "hosts.{name}: a host name may hold only letters, digits, `_`, `-` and `.`"
                    ),
                )
                .at(&location),
            );
            continue;
        }
        let link_port = match host.link_port.map(u16::try_from) {
            None => None,
            Some(Ok(port)) if port > 0 => Some(port),
            Some(_) => {
                errors.push(
                    Problem::error(
                        ProblemKind::InvalidValue,
                        format!(
                            "hosts.{name}.link_port: {} is not a port (1-65535)",
                            host.link_port.unwrap_or_default()
                        ),
                    )
                    .at(&location),
                );
                None
            }
        };
        let address = host
            .address
            .as_deref()
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .map(str::to_string);
        let public_key = host
            .public_key
            .as_deref()
            .map(str::trim)
            .map(str::to_string);
        if let Some(key) = &public_key
            && (key.len() != 40 || !key.is_ascii())
        {
            errors.push(
                Problem::error(
                    ProblemKind::InvalidValue,
                    format!("hosts.{name}.public_key: not a Z85 public key (40 characters, as printed by `supervisor keygen`)"),
                )
                .at(&location),
            );
        }
        if loaded.manifest.host(name).is_none() {
            loaded.manifest.hosts.push(Host {
                name: name.clone(),
                address: address.clone(),
                link_port,
                public_key,
                bind: host.bind.as_deref().map(str::trim).map(str::to_string),
                location: location.clone(),
            });
        }
        let context = FileContext {
            path,
            dir: path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            host: name.clone(),
            legacy: false,
            defaults: RawDefaults::default(),
        };
        let reached_at = address.clone().unwrap_or_else(|| name.clone());
        for (agent_name, readiness) in &host.agents {
            let agent_node = node
                .and_then(|node| node.get("agents"))
                .and_then(|agents| agents.get(agent_name))
                .or(node)
                .unwrap_or(root);
            let declared = RawAgent {
                name: Some(agent_name.clone()),
                command: Some(RawCommand::Argv(vec!["true".into()])),
                host: Some(reached_at.clone()),
                readiness: Some(readiness.clone()),
                ..RawAgent::default()
            };
            if let Some(mut agent) =
                build_agent(&context, declared, agent_node, &mut loaded.problems, errors)
            {
                agent.name = format!("{name}/{agent_name}");
                agent.host = name.clone();
                agent.address = reached_at.clone();
                agent.cwd = None;
                // The port probed is where dependents reach it.
                if let ReadinessCheck::Probe(Probe::Tcp { port, .. } | Probe::Zmq { port, .. }) =
                    &agent.readiness.check
                {
                    agent.port = Some(*port);
                }
                if !loaded
                    .manifest
                    .declared
                    .iter()
                    .any(|known| known.name == agent.name)
                {
                    loaded.manifest.declared.push(agent);
                }
            }
        }
    }
}

/// `agents: {db: {...}}` -> `agents: [{name: db, ...}]`.
fn normalize_agent_map(root: &mut Node, errors: &mut Vec<Problem>, path: &Path) {
    let Value::Mapping(entries) = &mut root.value else {
        return;
    };
    let Some((_, agents)) = entries
        .iter_mut()
        .find(|(key, _)| key.as_str() == Some("agents"))
    else {
        return;
    };
    let Value::Mapping(map) = &mut agents.value else {
        return;
    };
    // Entries are moved, not copied: a 1,000-agent manifest is mostly this map.
    let map = std::mem::take(map);
    let mut list = Vec::with_capacity(map.len());
    for (key, mut entry) in map {
        let is_null = entry.is_null();
        match &mut entry.value {
            Value::Mapping(fields) => {
                if let Some((name_key, name)) = fields
                    .iter()
                    .find(|(field, _)| field.as_str() == Some("name"))
                {
                    if name.as_str() != key.as_str() {
                        errors.push(Problem::error(ProblemKind::InvalidValue, format!("agent `{}` has `name: {}`; in the mapping form the key is the name", key.as_str().unwrap_or_default(), name.as_str().unwrap_or_default())).at(&Location { file: path.to_path_buf(), line: name_key.line, column: name_key.column }));
                    }
                } else {
                    fields.insert(0, (Node::scalar_at("name", &key), key));
                }
            }
            _ if is_null => {
                entry = Node::with_value(
                    Value::Mapping(vec![(Node::scalar_at("name", &key), key.clone())]),
                    &key,
                );
            }
            _ => {}
        }
        list.push(entry);
    }
    agents.value = Value::Sequence(list);
}

/// A value that could not be expanded, and the agents it belongs to
/// (`None`: outside any agent, e.g. `defaults`, so every agent).
struct ExpansionFailure {
    failure: vars::Failure,
    agent: Option<String>,
}

/// Expands variables everywhere except the pass-through `extra` of agents.
fn expand_except_extra(root: &mut Node, variables: &Variables, out: &mut Vec<ExpansionFailure>) {
    let Value::Mapping(entries) = &mut root.value else {
        return;
    };
    let mut failures = Vec::new();
    for (key, value) in entries.iter_mut() {
        if key.as_str() != Some("agents") {
            vars::expand_tree(value, variables, &mut failures);
            out.extend(failures.drain(..).map(|failure| ExpansionFailure {
                failure,
                agent: None,
            }));
            continue;
        }
        let items: Vec<&mut Node> = match &mut value.value {
            Value::Sequence(items) => items.iter_mut().collect(),
            _ => continue,
        };
        for item in items {
            let name = item.get("name").and_then(Node::as_str).map(str::to_string);
            match &mut item.value {
                Value::Mapping(fields) => {
                    for (field, field_value) in fields.iter_mut() {
                        if field.as_str() != Some("extra") {
                            vars::expand_tree(field_value, variables, &mut failures);
                        }
                    }
                }
                _ => vars::expand_tree(item, variables, &mut failures),
            }
            out.extend(failures.drain(..).map(|failure| ExpansionFailure {
                failure,
                agent: name.clone(),
            }));
        }
    }
}

/// One located problem per value that could not be expanded: the variable,
/// and the agents that use the value. Not fatal: the value reads as unset
/// and every other check still runs.
fn expansion_problems(
    failures: Vec<ExpansionFailure>,
    agents: &[String],
    at: impl Fn(usize, usize) -> Location,
) -> Vec<Problem> {
    // A legacy value can appear twice in the rewritten tree (`port` is also
    // passed as `--port <port>`): one problem per place written.
    let mut seen = std::collections::HashSet::new();
    failures
        .into_iter()
        .filter(|failure| {
            seen.insert((
                failure.failure.line,
                failure.failure.column,
                failure.agent.clone(),
            ))
        })
        .map(|ExpansionFailure { failure, agent }| {
            let affected: Vec<String> = match agent {
                Some(agent) => vec![agent],
                None => agents.to_vec(),
            };
            let who = match affected.as_slice() {
                [one] => format!("agent `{one}`"),
                _ => format!("every agent ({})", affected.len()),
            };
            let location = at(failure.line, failure.column);
            let mut problem = match &failure.error.unset {
                Some(variable) => {
                    let mut problem = Problem::error(
                        ProblemKind::UnsetVariable,
                        format!("{}; used by {who}", failure.error.message),
                    )
                    .at(&location)
                    .suggest(format!(
                        "set `{variable}` (environment or --env-file), or write `${{{variable}:-default}}`"
                    ));
                    problem.variable = Some(variable.clone());
                    problem
                }
                None => Problem::error(
                    ProblemKind::InvalidValue,
                    format!("{}; used by {who}", failure.error.message),
                )
                .at(&location),
            };
            if let [one] = affected.as_slice() {
                problem.agent = Some(one.clone());
            }
            problem.agents = Some(affected);
            problem
        })
        .collect()
}

/// The line of a `---` that starts a second document (one after content
/// of the first). A `---` at column 0 is always a document marker, except
/// inside a block scalar written at column 0, which manifests do not use.
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}');
        let marker = line == "---"
            || line.starts_with("--- ")
            || line.starts_with("---\t")
            || line.trim_end() == "---";
        if marker && line.starts_with("---") {
            if content {
                return Some(index + 1);
            }
            // `--- {a: 1}` starts the first document with content on its line.
            content = !line[3..].trim().is_empty() && !line[3..].trim().starts_with('#');
            continue;
        }
        if line.starts_with("...") && line[3..].trim().is_empty() {
            continue;
        }
        let trimmed = line.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('%') {
            content = true;
        }
    }
    None
}

/// Addresses that mean "this manifest's own machine".
fn is_local_address(host: &str) -> bool {
    matches!(
        host,
        "localhost" | "127.0.0.1" | "0.0.0.0" | "::" | "::1" | "*"
    )
}

/// Why `name` cannot be an environment variable name (`None`: it can).
/// `""` and `A=B` cannot be set at all; the portable names are
/// `[A-Za-z_][A-Za-z0-9_]*`.
fn invalid_variable_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains('=') {
        Some("contains `=`, which ends a name")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else if name.starts_with(|c: char| c.is_ascii_digit())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Some("is not a valid name")
    } else {
        None
    }
}

/// An agent name: 1 to 128 ASCII letters, digits, `_`, `-`, `.`, not
/// starting with `.` (names become file names and variable names).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
}

fn build_agent(
    context: &FileContext,
    raw: RawAgent,
    node: &Node,
    problems: &mut Vec<Problem>,
    errors: &mut Vec<Problem>,
) -> Option<Agent> {
    // The mapping form starts an agent at its name (the key), not its body.
    let location = context.location(
        node.get("name")
            .filter(|name| name.line < node.line)
            .unwrap_or(node),
    );
    let Some(name) = raw.name.clone() else {
        problems.push(
            Problem::error(ProblemKind::InvalidAgent, "agent entry has no `name`")
                .at(&location)
                .suggest("add `name: <AgentName>`"),
        );
        return None;
    };
    let field_location = |field: &str| {
        node.get_entry(field)
            .map(|(key, _)| context.location(key))
            .unwrap_or_else(|| location.clone())
    };
    let mut invalid = |field: &str, message: String| {
        errors.push(
            Problem::error(
                ProblemKind::InvalidValue,
                format!("agents.{name}.{field}: {message}"),
            )
            .at(&field_location(field))
            .for_agent(&name),
        );
    };
    if !valid_name(&name) {
        problems.push(
            Problem::error(
                ProblemKind::InvalidAgent,
                format!("agent name `{name}` may hold only letters, digits, `_`, `-` and `.`"),
            )
            .at(&location)
            .for_agent(&name)
            .suggest("names become file names (logs) and variable names; rename it"),
        );
    }
    let defaults = &context.defaults;
    // Read from a legacy format, or marked `legacy: true` (a converted file).
    let legacy = context.legacy || raw.legacy.unwrap_or(false);

    // Where it runs.
    let (host, address) = match raw.host.as_deref() {
        None => (context.host.clone(), local_or(&context.host)),
        Some(host) if is_local_address(host) => (context.host.clone(), local_or(&context.host)),
        Some(host) => (host.to_string(), host.to_string()),
    };

    // What it runs.
    let shell = raw.shell.unwrap_or(false);
    let raw_has_args = raw.args.is_some();
    let args = match raw.args {
        None => Vec::new(),
        Some(RawArgs::Argv(argv)) => argv,
        Some(RawArgs::Flags(flags)) => flags
            .into_iter()
            .flat_map(|(key, value)| [format!("--{key}"), value])
            .collect(),
        Some(RawArgs::Line(line)) => shell_words::split(&line).unwrap_or_else(|error| {
            invalid("args", format!("cannot split `{line}`: {error}"));
            Vec::new()
        }),
    };
    let script = raw.script_path.clone().map(|path| Script {
        location: field_location("script_path"),
        path,
    });
    let mut command = match (raw.command, raw.script_path) {
        (Some(_), Some(_)) => {
            invalid(
                "command",
                "give `command` or `script_path`, not both".into(),
            );
            Vec::new()
        }
        (Some(RawCommand::Line(line)), None) if shell => vec![line],
        // An empty command is reported below, once, whichever form it has.
        (Some(RawCommand::Line(line)), None) => match shell_words::split(&line) {
            Ok(words) => words,
            Err(error) => {
                invalid(
                    "command",
                    format!("cannot split `{line}` like a shell would: {error}"),
                );
                Vec::new()
            }
        },
        (Some(RawCommand::Argv(argv)), None) => argv,
        (None, Some(script)) => {
            let interpreter = raw
                .interpreter
                .or(defaults.interpreter.clone())
                .unwrap_or_else(|| "python3".into());
            vec![interpreter, script]
        }
        (None, None) => {
            problems.push(
                Problem::error(
                    ProblemKind::InvalidAgent,
                    format!("agent `{name}` has neither `command` nor `script_path`"),
                )
                .at(&location)
                .for_agent(&name)
                .suggest("add `command: [program, args...]` or `script_path: path/to/agent.py`"),
            );
            Vec::new()
        }
    };
    if shell && !args.is_empty() {
        invalid(
            "args",
            "`args` cannot be used with `shell: true`; put them in the command line".into(),
        );
    } else {
        command.extend(args);
    }
    let command_given = node.get("command").is_some() || node.get("script_path").is_some();
    if command_given && command.is_empty() {
        problems.push(
            Problem::error(
                ProblemKind::InvalidAgent,
                format!("agent `{name}` has an empty command: there is no program to run"),
            )
            .at(&field_location("command"))
            .for_agent(&name)
            .suggest("write `command: [program, args...]`"),
        );
    } else if command
        .first()
        .is_some_and(|program| program.trim().is_empty())
    {
        problems.push(
            Problem::error(
                ProblemKind::InvalidAgent,
                format!("agent `{name}`: the program name is empty"),
            )
            .at(&field_location("command"))
            .for_agent(&name)
            .suggest("the first item of `command` is the program to run"),
        );
    }
    if let Some(index) = command.iter().position(|item| item.contains('\0')) {
        problems.push(
            Problem::error(
                ProblemKind::InvalidAgent,
                format!("agent `{name}`: command item {index} contains a NUL byte, which no program can receive"),
            )
            .at(&field_location("command"))
            .for_agent(&name),
        );
    }
    let explicit_cwd = raw.cwd.or(defaults.cwd.clone());
    let legacy_root = match (&script, &explicit_cwd) {
        (Some(script), None) if legacy => legacy_root(&context.dir, &script.path),
        _ => None,
    };
    let cwd = match (explicit_cwd, &legacy_root) {
        (Some(cwd), _) => context.dir.join(cwd),
        (None, Some(root)) => root.clone(),
        (None, None) => context.dir.clone(),
    };
    for (key, value) in &raw.env {
        let problem = if let Some(why) = invalid_variable_name(key) {
            Some(format!(
                "environment variable name `{}` {why}",
                key.escape_debug()
            ))
        } else if value.contains('\0') {
            Some(format!(
                "environment variable `{key}` holds a NUL byte, which cannot be passed to a process"
            ))
        } else {
            None
        };
        if let Some(message) = problem {
            let at = node
                .get("env")
                .and_then(|env| env.get_entry(key))
                .map(|(key_node, _)| context.location(key_node))
                .unwrap_or_else(|| field_location("env"));
            problems.push(
                Problem::error(ProblemKind::InvalidValue, format!("agents.{name}.env: {message}"))
                    .at(&at)
                    .for_agent(&name)
                    .suggest("names are letters, digits and `_`, not starting with a digit; values are text without NUL"),
            );
        }
    }
    let mut env = defaults.env.clone();
    env.extend(raw.env);
    if let Some(root) = &legacy_root {
        // As the legacy launcher did: the root (and its main_pc_code/) come
        // first on PYTHONPATH, before the manifest's own or the inherited one.
        let mut path = vec![root.display().to_string()];
        if root.join("main_pc_code").is_dir() {
            path.push(root.join("main_pc_code").display().to_string());
        }
        let rest = env
            .get("PYTHONPATH")
            .cloned()
            .or_else(|| std::env::var("PYTHONPATH").ok())
            .filter(|rest| !rest.is_empty());
        path.extend(rest);
        env.insert("PYTHONPATH".into(), path.join(":"));
    }

    // Ports.
    let mut ports = Vec::new();
    let mut port_field =
        |field: &str, value: Option<i64>, problems: &mut Vec<Problem>| -> Option<u16> {
            let value = value?;
            let (key, value_node) = node.get_entry(field)?;
            match u16::try_from(value) {
                Ok(port) if port > 0 => {
                    ports.push(PortUse {
                        port,
                        field: field.into(),
                        kind: PortKind::Explicit,
                        location: context.location(value_node),
                        span: Some(value_node.span.clone()),
                    });
                    Some(port)
                }
                _ => {
                    let mut problem = Problem::error(
                        ProblemKind::InvalidPort,
                        format!("agents.{name}.{field}: {value} is not a port (1-65535)"),
                    )
                    .at(&context.location(key))
                    .for_agent(&name)
                    .suggest("use a port between 1024 and 65535");
                    problem.port = Some(value);
                    problems.push(problem);
                    None
                }
            }
        };
    let port = port_field("port", raw.port.map(RawPort::first), problems);
    let health_check_port = port_field(
        "health_check_port",
        raw.health_check_port.map(RawPort::first),
        problems,
    );
    let replicas = replicas(
        [raw.replicas, raw.min_ready],
        [raw.port, raw.health_check_port],
        legacy,
        &field_location,
        &mut invalid,
    );
    if let Some(replicas) = &replicas {
        // Every instance's port is the agent's, so `check` finds a range
        // overlapping another agent's port (naming both).
        let mut instance_ports = Vec::new();
        for use_ in ports.iter_mut().filter(|use_| {
            (use_.field == "port" && replicas.port_range)
                || (use_.field == "health_check_port" && replicas.health_range)
        }) {
            let first = use_.port;
            let field = std::mem::take(&mut use_.field);
            // A range has no single value `check-ports --fix` could rewrite.
            use_.span = None;
            for index in 0..replicas.count {
                match first.checked_add(u16::try_from(index).unwrap_or(u16::MAX)) {
                    Some(port) => instance_ports.push(PortUse {
                        port,
                        field: format!("{field} ({name}-{index}, from {first}+)"),
                        kind: use_.kind,
                        location: use_.location.clone(),
                        span: None,
                    }),
                    None => {
                        invalid(
                            &field,
                            format!(
                                "the range {first}+ of {} instances goes past port 65535",
                                replicas.count
                            ),
                        );
                        break;
                    }
                }
            }
        }
        ports.retain(|use_| !use_.field.is_empty());
        ports.extend(instance_ports);
    }
    for (key, value) in node
        .get("config")
        .and_then(Node::as_mapping)
        .unwrap_or_default()
    {
        let Some(field) = key.as_str() else { continue };
        if field != "port" && !field.ends_with("_port") {
            continue;
        }
        let Value::Scalar { text, plain: true } = &value.value else {
            continue;
        };
        let Ok(number) = text.parse::<i64>() else {
            continue;
        };
        match u16::try_from(number) {
            Ok(config_port) if config_port > 0 => ports.push(PortUse {
                port: config_port,
                field: format!("config.{field}"),
                kind: PortKind::Explicit,
                location: context.location(value),
                span: Some(value.span.clone()),
            }),
            _ => {
                let mut problem = Problem::error(
                    ProblemKind::InvalidPort,
                    format!("agents.{name}.config.{field}: {number} is not a port (1-65535)"),
                )
                .at(&context.location(key))
                .for_agent(&name);
                problem.port = Some(number);
                problems.push(problem);
            }
        }
    }
    if legacy {
        // The legacy base class: health port defaults to port+1, and its HTTP
        // health server listens on health port+1.
        let implicit_health = match (health_check_port, port) {
            (None, Some(port)) if port < u16::MAX => {
                ports.push(PortUse {
                    port: port + 1,
                    field: "health_check_port (implicit: port+1)".into(),
                    kind: PortKind::ImplicitHealth,
                    location: location.clone(),
                    span: None,
                });
                Some(port + 1)
            }
            _ => None,
        };
        if let Some(health) = health_check_port
            .or(implicit_health)
            .filter(|health| *health < u16::MAX)
        {
            ports.push(PortUse {
                port: health + 1,
                field: "http health (implicit: health_check_port+1)".into(),
                kind: PortKind::LegacyHttpHealth,
                location: location.clone(),
                span: None,
            });
        }
    }

    // Dependencies.
    let dependencies = node
        .get("dependencies")
        .or_else(|| node.get("depends_on"))
        .and_then(Node::as_sequence)
        .unwrap_or_default()
        .iter()
        .filter_map(|item| {
            item.as_str().map(|dependency| Dependency {
                name: dependency.trim().to_string(),
                location: context.location(item),
            })
        })
        .collect();

    // Readiness and liveness.
    let legacy_health = legacy
        .then(|| {
            health_check_port
                .map(|port| Probe::Zmq {
                    host: address.clone(),
                    port,
                })
                .or_else(|| {
                    port.map(|port| Probe::Tcp {
                        host: address.clone(),
                        port,
                    })
                })
        })
        .flatten();
    let readiness_raw = raw
        .readiness
        .map(|field| field.0)
        .or(defaults.readiness.clone().map(|field| field.0));
    let readiness = readiness(readiness_raw, legacy_health.clone(), &address, &mut invalid);
    let liveness = match (raw.liveness.or(defaults.liveness.clone()), legacy_health) {
        // A legacy agent: its health probe, with the file's `health_checks`
        // interval, timeout and retries when it has them.
        (Some(raw), health)
            if legacy
                && raw.tcp.is_none()
                && raw.http.is_none()
                && raw.exec.is_none()
                && raw.zmq.is_none() =>
        {
            health.map(|probe| Liveness {
                probe,
                interval: duration(raw.interval, Duration::from_secs(5)),
                timeout: duration(raw.timeout, Duration::from_secs(2)),
                failures: raw.failures.unwrap_or(3).max(1),
            })
        }
        (Some(raw), _) => liveness(raw, &address, &mut invalid),
        (None, legacy) => legacy.map(|probe| Liveness {
            probe,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            failures: 3,
        }),
    };
    let restart = restart(
        raw.restart
            .map(|field| field.0)
            .or(defaults.restart.clone().map(|field| field.0))
            .unwrap_or_default(),
        &mut invalid,
    );
    let heartbeat_raw = raw
        .heartbeat
        .or(defaults.heartbeat.clone())
        .unwrap_or_default();
    let heartbeat = Heartbeat {
        interval: duration(heartbeat_raw.interval, Duration::from_secs(1)),
        misses: heartbeat_raw.misses.unwrap_or(3).max(1),
        progress_timeout: heartbeat_raw.progress_timeout.map(|value| value.0),
    };
    let idle_stop = raw.idle_stop.map(|value| value.0);
    if idle_stop.is_some_and(|value| value.is_zero()) {
        invalid("idle_stop", "must be longer than 0s".into());
    } else if idle_stop.is_some() && readiness.check != ReadinessCheck::Sdk {
        invalid(
            "idle_stop",
            "needs `readiness: sdk`: idleness is judged from the SDK heartbeat payload \
             (`in_flight`), which this agent does not send"
                .into(),
        );
    }
    let on_error = match raw.on_error.or(defaults.on_error.clone()) {
        Some(raw) => error_policy(raw, &mut invalid),
        None => ErrorPolicy::default(),
    };
    let stop_raw = raw.stop.or(defaults.stop.clone()).unwrap_or_default();
    let signal = match stop_raw.signal.as_deref() {
        None => Signal::SIGTERM,
        Some(text) => parse_signal(text).unwrap_or_else(|| {
            invalid(
                "stop",
                format!("`{text}` is not a signal name (e.g. SIGTERM, SIGINT, SIGQUIT) or number"),
            );
            Signal::SIGTERM
        }),
    };
    let stop = StopPolicy {
        signal,
        grace: duration(stop_raw.grace, Duration::from_secs(10)),
    };
    let image = raw.image.as_deref().map(str::trim).and_then(|image| {
        if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            invalid(
                "image",
                format!("`{image}` is not an image reference (e.g. registry.example/agents:1)"),
            );
            None
        } else {
            Some(image.to_string())
        }
    });
    let limits = raw.limits.or(defaults.limits.clone()).map(|raw| {
        if raw
            .cpu_percent
            .is_some_and(|cpu| !(cpu > 0.0 && cpu.is_finite()))
        {
            invalid("limits", "`cpu_percent` must be a positive number".into());
        }
        if raw.memory_mb == Some(0) {
            invalid("limits", "`memory_mb` must be at least 1".into());
        }
        Limits {
            memory_bytes: raw.memory_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
            cpu_percent: raw.cpu_percent,
            grace: duration(raw.grace, Duration::from_secs(5)),
        }
    });

    if replicas.is_none() {
        let field = if command.iter().any(|text| text.contains(REPLICA_VARIABLE)) {
            Some(if raw_has_args { "args" } else { "command" })
        } else {
            env.iter()
                .find(|(_, value)| value.contains(REPLICA_VARIABLE))
                .map(|_| "env")
        };
        if let Some(field) = field {
            invalid(
                field,
                format!(
                    "`{REPLICA_VARIABLE}` is the instance index of an agent with `replicas`; this one has none"
                ),
            );
        }
    }

    Some(Agent {
        name,
        script,
        group: raw.group.clone(),
        location,
        host,
        address,
        command,
        shell,
        image,
        cwd: Some(cwd),
        env,
        port,
        health_check_port,
        ports,
        dependencies,
        required: raw.required.or(defaults.required).unwrap_or(true),
        enabled: raw.enabled.unwrap_or(true),
        readiness,
        liveness,
        restart,
        heartbeat,
        idle_stop,
        stop,
        limits,
        on_error,
        config: raw.config.unwrap_or_default(),
        extra: raw.extra.unwrap_or_default(),
        legacy,
        replicas,
        replica: None,
    })
}

/// `replicas:` and `min_ready:` of one agent, with the ports they need:
/// a fixed `port` (or `health_check_port`) with more than one instance
/// would be bound by all of them, and a range (`9100+`) or `min_ready`
/// means nothing without `replicas`.
fn replicas(
    [count, min_ready]: [Option<i64>; 2],
    [port, health_check_port]: [Option<RawPort>; 2],
    legacy: bool,
    field_location: &impl Fn(&str) -> Location,
    invalid: &mut impl FnMut(&str, String),
) -> Option<Replicas> {
    let is_range = |port: Option<RawPort>| matches!(port, Some(RawPort::RangeStart(_)));
    let Some(count) = count else {
        if min_ready.is_some() {
            invalid("min_ready", "`min_ready` needs `replicas`".into());
        }
        for (field, port) in [("port", port), ("health_check_port", health_check_port)] {
            if is_range(port) {
                invalid(
                    field,
                    format!(
                        "`{}+` is a port range, for an agent with `replicas`; write one port",
                        port.map(RawPort::first).unwrap_or_default()
                    ),
                );
            }
        }
        return None;
    };
    let count = match u32::try_from(count) {
        Ok(count) if (1..=MAX_REPLICAS).contains(&count) => count,
        _ => {
            invalid(
                "replicas",
                format!("{count} is not a number of instances (1 to {MAX_REPLICAS})"),
            );
            return None;
        }
    };
    if legacy {
        invalid(
            "replicas",
            "a legacy agent (its health port is port+1) cannot have replicas".into(),
        );
        return None;
    }
    let min_ready = match min_ready {
        None => count,
        Some(min_ready) => match u32::try_from(min_ready) {
            Ok(min_ready) if (1..=count).contains(&min_ready) => min_ready,
            _ => {
                invalid(
                    "min_ready",
                    format!("{min_ready} is not between 1 and `replicas` ({count})"),
                );
                count
            }
        },
    };
    for (field, port) in [("port", port), ("health_check_port", health_check_port)] {
        if let Some(RawPort::Fixed(port)) = port
            && count > 1
        {
            invalid(
                field,
                format!(
                    "{port} is one port for {count} instances, which would collide; write `{port}+` (instance i uses {port}+i)"
                ),
            );
        }
    }
    Some(Replicas {
        count,
        min_ready,
        port_range: is_range(port),
        health_range: is_range(health_check_port),
        location: field_location("replicas"),
    })
}

/// `on_error:` -> [`ErrorPolicy`]; `ignore` entries are dropped (the default).
fn error_policy(
    raw: super::raw::RawOnError,
    invalid: &mut impl FnMut(&str, String),
) -> ErrorPolicy {
    use super::raw::RawErrorAction;
    let action = |raw: RawErrorAction| match raw {
        RawErrorAction::Restart => Some(ErrorAction::Restart),
        RawErrorAction::Degraded => Some(ErrorAction::Degraded),
        RawErrorAction::Ignore => None,
    };
    let on_severity = [
        (Severity::Debug, raw.debug),
        (Severity::Info, raw.info),
        (Severity::Warning, raw.warning),
        (Severity::Error, raw.error),
        (Severity::Critical, raw.critical),
        (Severity::Fatal, raw.fatal),
    ]
    .into_iter()
    .filter_map(|(level, raw)| Some((level, action(raw?)?)))
    .collect();
    let rate = raw.rate.and_then(|rate| {
        if rate.count == 0 {
            invalid("on_error", "`rate.count` must be at least 1".into());
            return None;
        }
        if rate.within.0.is_zero() {
            invalid("on_error", "`rate.within` must be longer than 0".into());
            return None;
        }
        Some(ErrorRate {
            severity: rate.severity.unwrap_or(Severity::Error),
            count: rate.count,
            within: rate.within.0,
            action: action(rate.action.unwrap_or(RawErrorAction::Restart))?,
        })
    });
    ErrorPolicy { on_severity, rate }
}

/// Probes reach agents of a local host on loopback.
fn local_or(host: &str) -> String {
    if is_local_address(host) {
        "127.0.0.1".into()
    } else {
        host.to_string()
    }
}

/// The written duration, else `default`.
fn duration(value: Option<RawDuration>, default: Duration) -> Duration {
    value.map(|value| value.0).unwrap_or(default)
}

/// `SIGTERM`, `TERM`, `term` or a number; `None` for anything else.
fn parse_signal(text: &str) -> Option<Signal> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).ok();
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full).ok()
}

/// The probe named by tcp/http/exec/zmq fields; an error if more than one is given.
fn probe(
    tcp: Option<RawTarget>,
    http: Option<String>,
    exec: Option<RawCommand>,
    zmq: Option<RawTarget>,
    address: &str,
    field: &str,
    invalid: &mut impl FnMut(&str, String),
) -> Option<Probe> {
    let count = [tcp.is_some(), http.is_some(), exec.is_some(), zmq.is_some()]
        .iter()
        .filter(|given| **given)
        .count();
    if count > 1 {
        invalid(field, "give only one of tcp, http, exec, zmq".into());
        return None;
    }
    let mut target = |target: RawTarget, kind: &str| -> Option<(String, u16)> {
        let (host, port) = match target {
            RawTarget::Port(port) => (address.to_string(), port),
            RawTarget::Address(text) => match text
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<i64>()))
            {
                Some((host, Ok(port))) => (host.to_string(), port),
                _ => {
                    invalid(
                        field,
                        format!("{kind}: `{text}` is not a port or host:port"),
                    );
                    return None;
                }
            },
        };
        match u16::try_from(port) {
            Ok(port) if port > 0 => Some((host, port)),
            _ => {
                invalid(field, format!("{kind}: {port} is not a port (1-65535)"));
                None
            }
        }
    };
    if let Some(tcp) = tcp {
        return target(tcp, "tcp").map(|(host, port)| Probe::Tcp { host, port });
    }
    if let Some(zmq) = zmq {
        return target(zmq, "zmq").map(|(host, port)| Probe::Zmq { host, port });
    }
    if let Some(url) = http {
        if !url.starts_with("http://") {
            invalid(field, format!("http: `{url}` must start with http://"));
            return None;
        }
        return Some(Probe::Http { url });
    }
    let command = match exec? {
        RawCommand::Argv(argv) => argv,
        RawCommand::Line(line) => match shell_words::split(&line) {
            Ok(argv) => argv,
            Err(error) => {
                invalid(field, format!("exec: cannot split `{line}`: {error}"));
                return None;
            }
        },
    };
    if command.is_empty() {
        invalid(field, "exec: the command is empty".into());
        return None;
    }
    Some(Probe::Exec { command })
}

/// `readiness:` with defaults: `sdk`, the probe written, for a legacy
/// agent its health-port probe (unless it writes `start_period`), else
/// running for `start_period` (1s).
/// Timeout 30s, interval 100ms, no initial delay.
fn readiness(
    raw: Option<RawReadiness>,
    legacy_default: Option<Probe>,
    address: &str,
    invalid: &mut impl FnMut(&str, String),
) -> Readiness {
    let raw_given = raw.is_some();
    let raw = raw.unwrap_or_default();
    let start_period = duration(raw.start_period, Duration::from_secs(1));
    let explicit = probe(
        raw.tcp,
        raw.http,
        raw.exec,
        raw.zmq,
        address,
        "readiness",
        invalid,
    );
    let check = if raw.sdk {
        if explicit.is_some() {
            invalid("readiness", "`sdk` cannot be combined with a probe".into());
        }
        ReadinessCheck::Sdk
    } else if let Some(probe) = explicit {
        ReadinessCheck::Probe(probe)
    } else if let (false, Some(probe)) = (raw_given && raw.start_period.is_some(), legacy_default) {
        // A legacy agent: its health port (or port); the file's
        // `health_checks` may set the timeout.
        ReadinessCheck::Probe(probe)
    } else {
        ReadinessCheck::StartPeriod(start_period)
    };
    Readiness {
        check,
        timeout: duration(raw.timeout, Duration::from_secs(30)),
        interval: duration(raw.interval, Duration::from_millis(100)),
        initial_delay: duration(raw.initial_delay, Duration::ZERO),
    }
}

/// `liveness:` with defaults (every 5s, 1s per probe, 3 failures); exactly
/// one probe is required.
fn liveness(
    raw: RawLiveness,
    address: &str,
    invalid: &mut impl FnMut(&str, String),
) -> Option<Liveness> {
    let Some(probe) = probe(
        raw.tcp, raw.http, raw.exec, raw.zmq, address, "liveness", invalid,
    ) else {
        invalid("liveness", "needs one probe: tcp, http, exec or zmq".into());
        return None;
    };
    Some(Liveness {
        probe,
        interval: duration(raw.interval, Duration::from_secs(5)),
        timeout: duration(raw.timeout, Duration::from_secs(1)),
        failures: raw.failures.unwrap_or(3).max(1),
    })
}

/// `restart:` with defaults (`always`, 100ms ×2 up to 30s, 5 restarts in
/// 60s, reset after 30s up, success code 0, shut down on give-up).
fn restart(raw: RawRestart, invalid: &mut impl FnMut(&str, String)) -> RestartPolicy {
    let backoff = raw.backoff.unwrap_or_default();
    let backoff = Backoff {
        initial: duration(backoff.initial, Duration::from_millis(100)),
        max: duration(backoff.max, Duration::from_secs(30)),
        multiplier: backoff.multiplier.unwrap_or(2.0),
    };
    if !(1.0..=100.0).contains(&backoff.multiplier) {
        invalid(
            "restart",
            format!(
                "backoff.multiplier {} must be between 1 and 100",
                backoff.multiplier
            ),
        );
    }
    if backoff.initial > backoff.max {
        invalid(
            "restart",
            "backoff.initial is larger than backoff.max".into(),
        );
    }
    RestartPolicy {
        mode: match raw.policy.unwrap_or(RawRestartMode::Always) {
            RawRestartMode::Always => RestartMode::Always,
            RawRestartMode::OnFailure => RestartMode::OnFailure,
            RawRestartMode::Never => RestartMode::Never,
        },
        backoff,
        delay: duration(raw.delay, Duration::ZERO),
        max_restarts: Some(raw.max_restarts.unwrap_or(5)),
        within: duration(raw.within, Duration::from_secs(60)),
        reset_after: duration(raw.reset_after, Duration::from_secs(30)),
        success_codes: raw.success_codes.unwrap_or_else(|| vec![0]),
        on_give_up: match raw.on_give_up {
            Some(RawGiveUp::KeepRunning) => GiveUp::KeepRunning,
            Some(RawGiveUp::Shutdown) | None => GiveUp::Shutdown,
        },
    }
}
/// The directory a legacy launcher ran a relative `script_path` from: the
/// first of `dir` (the manifest's directory) and the directories above it
/// that holds the script. The HEAD manifests live in `main_pc_code/config/`
/// and name scripts from the repository root (`main_pc_code/agents/x.py`);
/// the June ones name them from `main_pc_code/` (`agents/x.py`). `None`
/// when no such directory holds it (`check` reports the script missing).
fn legacy_root(dir: &Path, script: &str) -> Option<PathBuf> {
    let script = Path::new(script);
    if script.is_absolute() {
        return None;
    }
    let dir = std::path::absolute(dir).ok()?;
    dir.ancestors()
        .find(|base| base.join(script).is_file())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(text: &str) -> Result<Loaded, ManifestError> {
        load_str(
            Path::new("m.yaml"),
            text,
            &LoadOptions {
                environment: Some(HashMap::new()),
                ..LoadOptions::default()
            },
        )
    }

    /// The problems of `kind` with their (line, message, suggestion).
    fn of_kind(loaded: &Loaded, kind: ProblemKind) -> Vec<&Problem> {
        loaded
            .problems
            .iter()
            .filter(|problem| problem.kind == kind)
            .collect()
    }

    #[test]
    fn an_unset_variable_is_one_located_problem_and_reading_goes_on() {
        let loaded = load(
            "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    env:\n      HUB: \"${NOT_SET_ANYWHERE}\"\n    port: 7000\n  b:\n    command: [\"true\"]\n    port: 7000\n",
        )
        .expect("an unset variable does not stop reading");
        let unset = of_kind(&loaded, ProblemKind::UnsetVariable);
        assert_eq!(unset.len(), 1, "{:?}", loaded.problems);
        let problem = unset[0];
        assert_eq!(problem.severity, Severity::Error);
        assert_eq!(
            (problem.file.as_deref(), problem.line),
            (Some("m.yaml"), Some(6))
        );
        assert_eq!(problem.variable.as_deref(), Some("NOT_SET_ANYWHERE"));
        assert_eq!(problem.agents.as_deref(), Some(&["a".to_string()][..]));
        assert_eq!(
            problem.suggestion.as_deref(),
            Some(
                "set `NOT_SET_ANYWHERE` (environment or --env-file), or write `${NOT_SET_ANYWHERE:-default}`"
            )
        );
        assert_eq!(loaded.manifest.agents.len(), 2, "both agents are read");
    }

    #[test]
    fn an_unset_variable_in_defaults_names_every_agent() {
        let loaded = load(
            "version: 1\ndefaults:\n  cwd: \"${NOPE}\"\nagents:\n  a: {command: [\"true\"]}\n  b: {command: [\"true\"]}\n",
        )
        .unwrap();
        let unset = of_kind(&loaded, ProblemKind::UnsetVariable);
        assert_eq!(unset.len(), 1);
        assert_eq!(unset[0].line, Some(3));
        assert_eq!(
            unset[0].agents.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert!(
            unset[0].message.contains("every agent (2)"),
            "{}",
            unset[0].message
        );
    }

    #[test]
    fn an_unset_port_variable_in_a_legacy_file_is_located() {
        let loaded = load(
            "agent_groups:\n  core:\n    A:\n      script_path: a.py\n      port: ${MISSING_OFFSET}+7000\n    B:\n      script_path: b.py\n      port: 7100\n",
        )
        .unwrap();
        let unset = of_kind(&loaded, ProblemKind::UnsetVariable);
        assert_eq!(unset.len(), 1, "{:?}", loaded.problems);
        assert_eq!(unset[0].line, Some(5));
        assert_eq!(unset[0].agent.as_deref(), Some("A"));
        assert_eq!(loaded.manifest.agents.len(), 2);
        assert_eq!(loaded.manifest.agents[0].port, None);
    }

    #[test]
    fn empty_commands_and_program_names_are_errors() {
        for (text, message) in [
            ("command: []", "has an empty command"),
            ("command: [\"\"]", "the program name is empty"),
            ("command: \"\"", "has an empty command"),
        ] {
            let loaded = load(&format!("version: 1\nagents:\n  a:\n    {text}\n")).unwrap();
            let problems = of_kind(&loaded, ProblemKind::InvalidAgent);
            assert_eq!(problems.len(), 1, "{text}: {:?}", loaded.problems);
            assert!(
                problems[0].message.contains(message),
                "{text}: {}",
                problems[0].message
            );
            assert_eq!(problems[0].line, Some(4), "{text}");
        }
    }

    #[test]
    fn bad_environment_names_and_nul_values_are_errors() {
        for (entry, why) in [
            ("\"\": x", "is empty"),
            ("\"A=B\": x", "contains `=`"),
            ("\"1ABC\": x", "is not a valid name"),
            ("\"MY VAR\": x", "is not a valid name"),
            ("GOOD: \"a\\0b\"", "holds a NUL byte"),
        ] {
            let loaded = load(&format!(
                "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    env:\n      {entry}\n"
            ))
            .unwrap();
            let problems = of_kind(&loaded, ProblemKind::InvalidValue);
            assert_eq!(problems.len(), 1, "{entry}: {:?}", loaded.problems);
            assert!(
                problems[0].message.contains(why),
                "{entry}: {}",
                problems[0].message
            );
            assert_eq!(problems[0].line, Some(6), "{entry}");
        }
    }

    #[test]
    fn idle_stop_needs_sdk_heartbeats_and_is_located() {
        let error = load(
            "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    idle_stop: 10m\n  b:\n    command: [\"true\"]\n    readiness: sdk\n    idle_stop: 10m\n",
        )
        .unwrap_err();
        let problems: Vec<&Problem> = error
            .problems
            .iter()
            .filter(|problem| problem.kind == ProblemKind::InvalidValue)
            .collect();
        assert_eq!(problems.len(), 1, "{:?}", error.problems);
        assert_eq!(problems[0].line, Some(5));
        assert_eq!(problems[0].agent.as_deref(), Some("a"));
        assert!(
            problems[0].message.contains("agents.a.idle_stop")
                && problems[0].message.contains("readiness: sdk"),
            "{}",
            problems[0].message
        );
        let loaded = load(
            "version: 1\nagents:\n  b:\n    command: [\"true\"]\n    readiness: sdk\n    idle_stop: 10m\n",
        )
        .unwrap();
        assert_eq!(
            loaded.manifest.agents[0].idle_stop,
            Some(Duration::from_secs(600))
        );

        let error = load(
            "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    readiness: sdk\n    idle_stop: 0s\n",
        )
        .unwrap_err();
        let problems = &error.problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, Some(6));
        assert!(problems[0].message.contains("longer than 0s"));
    }

    #[test]
    fn unknown_versions_and_second_documents_are_errors() {
        let loaded = load("version: 99\nagents:\n  a: {command: [\"true\"]}\n").unwrap();
        let problems = of_kind(&loaded, ProblemKind::InvalidValue);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(1));
        assert!(problems[0].message.contains("`version: 99`"));

        let loaded = load(
            "version: 1\nagents:\n  a: {command: [\"true\"]}\n---\nversion: 1\nagents:\n  b: {command: [\"true\"]}\n",
        )
        .unwrap();
        let problems = of_kind(&loaded, ProblemKind::Syntax);
        assert_eq!(problems.len(), 1, "{:?}", loaded.problems);
        assert_eq!(problems[0].line, Some(4));
        assert!(problems[0].message.contains("second YAML document"));

        // A leading `---` is the first document's start, not a second one.
        let loaded = load("---\nversion: 1\nagents:\n  a: {command: [\"true\"]}\n").unwrap();
        assert!(of_kind(&loaded, ProblemKind::Syntax).is_empty());
    }

    #[test]
    fn bom_crlf_merge_keys_and_deep_nesting_are_read_or_located() {
        let loaded = load(
            "\u{feff}version: 1\r\nagents:\r\n  a:\r\n    command: [\"true\"]\r\n    port: 7000\r\n",
        )
        .expect("BOM + CRLF");
        assert_eq!(loaded.manifest.agents[0].port, Some(7000));

        let loaded = load(
            "version: 1\nagents:\n  base: &base {command: [\"true\"], port: 7000}\n  b:\n    <<: *base\n    port: 7001\n",
        )
        .expect("merge keys");
        assert_eq!(loaded.manifest.agents[1].port, Some(7001));
        assert_eq!(loaded.manifest.agents[1].command, ["true"]);

        let deep = format!("version: 1\nx: {}1{}\n", "[".repeat(500), "]".repeat(500));
        let error = load(&deep).expect_err("too deep");
        assert_eq!(error.problems[0].kind, ProblemKind::Syntax);
        assert_eq!(error.problems[0].line, Some(2));
    }

    #[test]
    fn names_with_slashes_dots_or_lookalike_letters_are_rejected() {
        for name in ["\"a/b\"", "\"..\"", "\"../x\"", "\"аgent\""] {
            let loaded = load(&format!(
                "version: 1\nagents:\n  {name}: {{command: [\"true\"]}}\n"
            ))
            .unwrap();
            let problems = of_kind(&loaded, ProblemKind::InvalidAgent);
            assert_eq!(problems.len(), 1, "{name}: {:?}", loaded.problems);
            assert_eq!(problems[0].line, Some(3));
        }
    }

    #[test]
    fn a_block_under_agent_groups_that_the_agents_loader_crashes_on_is_an_error() {
        let loaded = load(
            "agent_groups:\n  core:\n    A:\n      script_path: a.py\n      port: 7000\n  docker_groups:\n    description: all of them\n    agents: [A]\n",
        )
        .unwrap();
        let problems = of_kind(&loaded, ProblemKind::NotAnAgent);
        assert_eq!(problems.len(), 1, "{:?}", loaded.problems);
        assert_eq!(problems[0].severity, Severity::Error);
        assert_eq!(problems[0].line, Some(6));
        assert!(
            problems[0].message.contains("common/config_manager.py")
                && problems[0]
                    .message
                    .contains("'str' object has no attribute 'get'"),
            "{}",
            problems[0].message
        );
        assert_eq!(loaded.manifest.agents.len(), 1);

        // A text value at the agent level crashes the same loader.
        let loaded = load(
            "agent_groups:\n  core:\n    A:\n      script_path: a.py\n      port: 7000\n    note: hello\n",
        )
        .unwrap();
        let problems = of_kind(&loaded, ProblemKind::NotAnAgent);
        assert_eq!(problems.len(), 1, "{:?}", loaded.problems);
        assert_eq!(problems[0].line, Some(6));
    }

    #[test]
    fn a_group_indented_one_level_too_deep_is_read_as_the_launcher_did() {
        let loaded = load(concat!(
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
        ))
        .unwrap();
        let names: Vec<&str> = loaded
            .manifest
            .agents
            .iter()
            .map(|agent| agent.name.as_str())
            .collect();
        assert_eq!(names, ["A"], "the launcher started only A");
        let problems = of_kind(&loaded, ProblemKind::MisindentedGroup);
        assert_eq!(problems.len(), 1, "{:?}", loaded.problems);
        assert_eq!(problems[0].line, Some(7));
        assert!(
            problems[0]
                .message
                .contains("started none of its agents (Gen)")
                && problems[0].message.contains("`A` -> `Gen` (line 6)"),
            "{}",
            problems[0].message
        );
        assert_eq!(
            problems[0].suggestion.as_deref(),
            Some(
                "you probably meant a group `agent_groups.utility`: dedent `utility:` and its entries by one level"
            )
        );
        assert_eq!(loaded.manifest.hidden.len(), 1);
        assert_eq!(loaded.manifest.hidden[0].name, "Gen");
    }
}
