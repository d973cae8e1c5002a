//! Turns manifest files into one validated [`Manifest`]: read, parse, detect
//! the format, expand variables, deserialize, then check and convert every
//! value (ports in range, commands split, durations and signals parsed).
//!
//! Gathers every problem rather than stopping at the first: read errors
//! (exit 2) go into a [`ManifestError`], softer findings into
//! [`Loaded::problems`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::legacy::{self, NATIVE_KEYS};
use super::raw::{
    RawAgent, RawArgs, RawCommand, RawDefaults, RawDuration, RawGiveUp, RawLiveness, RawManifest,
    RawReadiness, RawRestart, RawRestartMode, RawStrategy, RawTarget,
};
use super::vars::{self, Variables};
use super::yaml::{self, Node, Value};
use super::*;

/// Files larger than this are refused before parsing.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

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
    Ok(loaded)
}

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
    Ok(loaded)
}

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
    path: &'a Path,
    dir: PathBuf,
    host: String,
    legacy: bool,
    defaults: RawDefaults,
}

impl FileContext<'_> {
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
    let legacy = converted.format != "native";
    let mut root = converted.root;
    if !legacy {
        normalize_agent_map(&mut root, errors, path);
    }
    let mut expansion_errors = Vec::new();
    expand_except_extra(&mut root, variables, &mut expansion_errors);
    for (message, line, column) in expansion_errors {
        errors.push(Problem::error(ProblemKind::UnsetVariable, message).at(&at(line, column)));
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
    Some(raw.strategy.map(|strategy| match strategy {
        RawStrategy::OneForOne => Strategy::OneForOne,
        RawStrategy::RestForOne => Strategy::RestForOne,
        RawStrategy::OneForAll => Strategy::OneForAll,
    }))
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

/// Expands variables everywhere except the pass-through `extra` of agents.
fn expand_except_extra(
    root: &mut Node,
    variables: &Variables,
    errors: &mut Vec<(String, usize, usize)>,
) {
    let Value::Mapping(entries) = &mut root.value else {
        return;
    };
    for (key, value) in entries.iter_mut() {
        if key.as_str() != Some("agents") {
            vars::expand_tree(value, variables, errors);
            continue;
        }
        let items: Vec<&mut Node> = match &mut value.value {
            Value::Sequence(items) => items.iter_mut().collect(),
            _ => continue,
        };
        for item in items {
            match &mut item.value {
                Value::Mapping(fields) => {
                    for (field, field_value) in fields.iter_mut() {
                        if field.as_str() != Some("extra") {
                            vars::expand_tree(field_value, variables, errors);
                        }
                    }
                }
                _ => vars::expand_tree(item, variables, errors),
            }
        }
    }
}

/// Addresses that mean "this manifest's own machine".
fn is_local_address(host: &str) -> bool {
    matches!(
        host,
        "localhost" | "127.0.0.1" | "0.0.0.0" | "::" | "::1" | "*"
    )
}

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

    // Where it runs.
    let (host, address) = match raw.host.as_deref() {
        None => (context.host.clone(), local_or(&context.host)),
        Some(host) if is_local_address(host) => (context.host.clone(), local_or(&context.host)),
        Some(host) => (host.to_string(), host.to_string()),
    };

    // What it runs.
    let shell = raw.shell.unwrap_or(false);
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
        (Some(RawCommand::Line(line)), None) => match shell_words::split(&line) {
            Ok(words) if words.is_empty() => {
                invalid("command", "the command is empty".into());
                Vec::new()
            }
            Ok(words) => words,
            Err(error) => {
                invalid(
                    "command",
                    format!("cannot split `{line}` like a shell would: {error}"),
                );
                Vec::new()
            }
        },
        (Some(RawCommand::Argv(argv)), None) if argv.is_empty() => {
            invalid(
                "command",
                "the command is empty; give the program first".into(),
            );
            Vec::new()
        }
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
    if command.first().is_some_and(|program| program.is_empty()) {
        invalid("command", "the program name is empty".into());
    }
    let explicit_cwd = raw.cwd.or(defaults.cwd.clone());
    let legacy_root = match (&script, &explicit_cwd) {
        (Some(script), None) if context.legacy => legacy_root(&context.dir, &script.path),
        _ => None,
    };
    let cwd = match (explicit_cwd, &legacy_root) {
        (Some(cwd), _) => context.dir.join(cwd),
        (None, Some(root)) => root.clone(),
        (None, None) => context.dir.clone(),
    };
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
    let port = port_field("port", raw.port, problems);
    let health_check_port = port_field("health_check_port", raw.health_check_port, problems);
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
    if context.legacy {
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
    let legacy_health = context
        .legacy
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
        (Some(raw), legacy)
            if context.legacy
                && raw.tcp.is_none()
                && raw.http.is_none()
                && raw.exec.is_none()
                && raw.zmq.is_none() =>
        {
            legacy.map(|probe| Liveness {
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

    Some(Agent {
        name,
        script,
        group: raw.group.clone(),
        location,
        host,
        address,
        command,
        shell,
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
        stop,
        limits,
        on_error,
        config: raw.config.unwrap_or_default(),
        extra: raw.extra.unwrap_or_default(),
        legacy: context.legacy,
    })
}

/// `on_error:` -> [`ErrorPolicy`]; `ignore` entries are dropped (the default).
fn error_policy(
    raw: super::raw::RawOnError,
    invalid: &mut impl FnMut(&str, String),
) -> ErrorPolicy {
    use super::raw::{RawErrorAction, RawSeverity};
    let action = |raw: RawErrorAction| match raw {
        RawErrorAction::Restart => Some(ErrorAction::Restart),
        RawErrorAction::Degraded => Some(ErrorAction::Degraded),
        RawErrorAction::Ignore => None,
    };
    let severity = |raw: RawSeverity| match raw {
        RawSeverity::Debug => ErrorSeverity::Debug,
        RawSeverity::Info => ErrorSeverity::Info,
        RawSeverity::Warning => ErrorSeverity::Warning,
        RawSeverity::Error => ErrorSeverity::Error,
        RawSeverity::Critical => ErrorSeverity::Critical,
        RawSeverity::Fatal => ErrorSeverity::Fatal,
    };
    let on_severity = [
        (ErrorSeverity::Debug, raw.debug),
        (ErrorSeverity::Info, raw.info),
        (ErrorSeverity::Warning, raw.warning),
        (ErrorSeverity::Error, raw.error),
        (ErrorSeverity::Critical, raw.critical),
        (ErrorSeverity::Fatal, raw.fatal),
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
            severity: severity(rate.severity.unwrap_or(RawSeverity::Error)),
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

fn duration(value: Option<RawDuration>, default: Duration) -> Duration {
    value.map(|value| value.0).unwrap_or(default)
}

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
