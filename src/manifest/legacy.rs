//! Legacy `startup_config.yaml` formats: detection, and rewriting into the
//! native shape (a mapping with `defaults` and an `agents` list) so one
//! deserializer and one validator serve every format.
//!
//! The formats are described in docs/legacy.md. Keys with no meaning here are
//! kept under each agent's `extra`; top-level blocks we do not use
//! (`resource_limits`, `hybrid_inference_policy`, ...) are left alone.
//!
//! Owns the knowledge of the legacy shapes (groups, `machine_profiles`,
//! implicit health ports). Does not own validation (`validate.rs` checks the
//! rewritten tree like any native file) nor writing native files
//! (`convert.rs`).

use super::problem::{Problem, ProblemKind};
use super::yaml::{Node, Value};

/// Top-level keys of the native format.
pub const NATIVE_KEYS: &[&str] = &[
    "version", "host", "strategy", "defaults", "agents", "metrics", "hosts",
];

/// The result of reading a root mapping.
pub struct Converted {
    /// `native`, `legacy:agent_groups`, `legacy:pc2_services`, ...
    pub format: String,
    /// The native-shaped root.
    pub root: Node,
    /// Entries that are not agents and were left out, as warnings (errors
    /// where the legacy agents' own loader crashes on them), with their line.
    pub ignored: Vec<(Problem, usize)>,
    /// Agents of groups nested one level too deep in `agent_groups`:
    /// (name, group path, line of the group key).
    pub hidden: Vec<(String, String, usize)>,
}

/// Detects the format of `root` and rewrites legacy formats to the native shape.
/// `host` (from `FILE@HOST`) picks a v3 `machine_profiles` entry: only its
/// `enabled_groups` are read, as the legacy loader did.
pub fn convert(root: Node, host: Option<&str>) -> Converted {
    let Some(entries) = root.as_mapping() else {
        return Converted {
            format: "native".into(),
            root,
            ignored: Vec::new(),
            hidden: Vec::new(),
        };
    };
    let has = |key: &str| root.get(key).is_some();
    let mut legacy = Legacy {
        agents: Vec::new(),
        ignored: Vec::new(),
        pass_port: false,
        group: None,
        nested: Vec::new(),
    };
    let format = if has("agent_groups") {
        legacy.pass_port = true;
        let enabled = host.and_then(|host| enabled_groups(&root, host));
        if let Some(groups) = root.get("agent_groups") {
            legacy.walk_groups(
                "agent_groups",
                groups,
                enabled.as_deref(),
                host.unwrap_or_default(),
            );
        }
        if has("machine_profiles") {
            "legacy:agent_groups+machine_profiles"
        } else {
            "legacy:agent_groups"
        }
    } else if has("pc2_services") {
        for key in ["pc2_services", "core_services"] {
            if let Some(list) = root.get(key) {
                legacy.walk_list(key, list);
            }
        }
        "legacy:pc2_services"
    } else if let Some(services) = root.get("mvs_services") {
        legacy.walk_named_map("mvs_services", services);
        "legacy:mvs_services"
    } else if has("include") && !has("agents") {
        let (key, _) = root.get_entry("include").expect("checked above");
        legacy.ignored.push((
            Problem::warning(
                ProblemKind::Ignored,
                "`include:` lists other manifests; they are not read from here",
            )
            .suggest("pass each included file with its own --config"),
            key.line,
        ));
        "legacy:include"
    } else if entries.iter().any(|(key, value)| {
        key.as_str().is_some_and(|k| k.ends_with("_agents")) && is_entry_list(value)
    }) {
        for (key, value) in entries {
            let name = key.as_str().unwrap_or_default();
            if name.ends_with("_agents") && is_entry_list(value) {
                legacy.walk_list(name, value);
            }
        }
        "legacy:settings+agents"
    } else if !has("version")
        && root
            .get("agents")
            .and_then(Node::as_sequence)
            .is_some_and(|items| items.iter().any(is_simple_entry))
    {
        legacy.walk_list("agents", root.get("agents").expect("checked above"));
        "legacy:simple"
    } else if !has("version")
        && !has("agents")
        && entries.iter().any(|(_, value)| is_entry_list(value))
    {
        legacy.pass_port = true;
        for (key, value) in entries {
            if is_entry_list(value) {
                legacy.walk_list(key.as_str().unwrap_or_default(), value);
            }
        }
        "legacy:groups"
    } else {
        return Converted {
            format: "native".into(),
            root,
            ignored: Vec::new(),
            hidden: Vec::new(),
        };
    };
    legacy.report_nested_groups();
    let root = legacy.native_root(&root);
    Converted {
        format: format.into(),
        root,
        ignored: legacy.ignored,
        hidden: legacy
            .nested
            .into_iter()
            .flat_map(|group| {
                group
                    .agents
                    .into_iter()
                    .map(move |name| (name, group.path.clone(), group.line))
            })
            .collect(),
    }
}

/// How long a legacy agent may take to become ready when the file does not
/// say (`health_checks.start_period_seconds`): the MainPC launcher gave each
/// batch 120 s.
pub const LEGACY_READY_TIMEOUT_SECONDS: u64 = 120;

/// `defaults.readiness` and `defaults.liveness` from the legacy
/// `health_checks` block (top level, or under `global_settings`):
/// `start_period_seconds` is how long an agent may take to become ready
/// (default [`LEGACY_READY_TIMEOUT_SECONDS`]); `interval_seconds`,
/// `timeout_seconds` and `retries` are the liveness probe's interval,
/// per-probe timeout and failures in a row.
fn health_defaults(root: &Node) -> Vec<(Node, Node)> {
    let checks = root.get("health_checks").or_else(|| {
        root.get("global_settings")
            .and_then(|settings| settings.get("health_checks"))
    });
    let field = |key: &str| -> Option<(Node, String)> {
        let (key_node, value) = checks?.get_entry(key)?;
        let text = value.as_str()?.trim().to_string();
        Some((key_node.clone(), text))
    };
    let seconds = |text: &str| match text.parse::<u64>() {
        Ok(_) => format!("{text}s"),
        Err(_) => text.to_string(),
    };
    let mut out = Vec::new();
    let (at, timeout) = match field("start_period_seconds") {
        Some((key, text)) => (key, seconds(&text)),
        None => (root.clone(), format!("{LEGACY_READY_TIMEOUT_SECONDS}s")),
    };
    let readiness = vec![(
        Node::scalar_at("timeout", &at),
        Node::scalar_at(timeout, &at),
    )];
    out.push((
        Node::scalar_at("readiness", &at),
        Node::with_value(Value::Mapping(readiness), &at),
    ));
    let mut liveness = Vec::new();
    for (legacy, native) in [
        ("interval_seconds", "interval"),
        ("timeout_seconds", "timeout"),
        ("retries", "failures"),
    ] {
        if let Some((key, text)) = field(legacy) {
            let value = if native == "failures" {
                text
            } else {
                seconds(&text)
            };
            liveness.push((Node::scalar_at(native, &key), Node::scalar_at(value, &key)));
        }
    }
    if let Some((first, _)) = liveness.first().cloned() {
        out.push((
            Node::scalar_at("liveness", &first),
            Node::with_value(Value::Mapping(liveness), &first),
        ));
    }
    out
}

/// `machine_profiles.<host>.enabled_groups` of a v3 manifest, if it has one for `host`.
fn enabled_groups(root: &Node, host: &str) -> Option<Vec<String>> {
    let groups = root
        .get("machine_profiles")?
        .get(host)?
        .get("enabled_groups")?
        .as_sequence()?;
    Some(
        groups
            .iter()
            .filter_map(|group| group.as_str().map(str::to_string))
            .collect(),
    )
}

/// A list whose items are mappings with a `name` (a legacy group list).
fn is_entry_list(node: &Node) -> bool {
    node.as_sequence().is_some_and(|items| {
        !items.is_empty() && items.iter().all(|item| item.get("name").is_some())
    })
}

/// An item of the `simple` format: `{name, path, port, enabled, args}`.
fn is_simple_entry(node: &Node) -> bool {
    node.get("path").is_some() || node.get("script").is_some()
}

/// Whether a mapping in `agent_groups` is an agent entry (not a nested group
/// or a block such as `group_config`).
fn is_agent_entry(node: &Node) -> bool {
    ["script_path", "script", "path", "command", "port"]
        .iter()
        .any(|key| node.get(key).is_some())
}

struct Legacy {
    /// Native-shaped agent mappings.
    agents: Vec<Node>,
    /// Warnings with their line.
    ignored: Vec<(Problem, usize)>,
    /// The MainPC launcher passed `--port <port>` to each script.
    pass_port: bool,
    /// The group (or list key) whose entries are being read.
    group: Option<String>,
    /// Groups found one level too deep inside an `agent_groups` group.
    nested: Vec<NestedGroup>,
}

/// A group written one level too deep: `agent_groups.outer.inner.Agent`.
struct NestedGroup {
    /// `agent_groups.outer.inner`.
    path: String,
    /// `inner`.
    name: String,
    /// `outer`.
    outer: String,
    line: usize,
    /// The agent entries inside it.
    agents: Vec<String>,
}

/// Why the legacy agents crash on a non-agent entry inside `agent_groups`.
const LOADER_CRASH: &str = "the legacy agents' own config loader (common/config_manager.py, run at import) reads every entry of every group under `agent_groups` as an agent's settings and calls `.get` on it, so it crashes (`'str' object has no attribute 'get'`) in every agent that imports it";

impl Legacy {
    /// `group: { AgentName: {...}, nested_group: { AgentName: {...} } }`.
    fn walk_groups(
        &mut self,
        path: &str,
        groups: &Node,
        enabled: Option<&[String]>,
        profile: &str,
    ) {
        let Some(groups) = groups.as_mapping() else {
            return;
        };
        // Group definitions (`{description, agents: [names]}`) found as groups.
        let mut definitions: Vec<(String, usize)> = Vec::new();
        for (group_key, group) in groups {
            let group_name = group_key.as_str().unwrap_or_default();
            let group_path = format!("{path}.{group_name}");
            if group.is_null() {
                continue; // an empty group: nothing in it to skip
            }
            if enabled.is_some_and(|enabled| !enabled.iter().any(|name| name == group_name)) {
                self.ignore(format!("`{group_path}` is not in `machine_profiles.{profile}.enabled_groups`; its agents are left out"), group_key.line);
                continue;
            }
            if group
                .get("agents")
                .is_some_and(|agents| agents.as_sequence().is_some())
                && !group
                    .as_mapping()
                    .unwrap_or_default()
                    .iter()
                    .any(|(_, entry)| is_agent_entry(entry))
            {
                // A `docker_groups` block indented under agent_groups: {description, agents: [names]}.
                definitions.push((group_name.to_string(), group_key.line));
                continue;
            }
            self.group = Some(group_name.to_string());
            self.walk_group(&group_path, group_name, group);
            self.group = None;
        }
        // One error for the whole mis-indented block, at its first entry.
        if let Some((first, line)) = definitions.first() {
            let names: Vec<&str> = definitions.iter().map(|(name, _)| name.as_str()).collect();
            let what = if names.len() == 1 {
                format!(
                    "`{path}.{first}` is a group definition (`description`, and `agents:` listing names), not a group of agent entries"
                )
            } else {
                format!(
                    "{} entries of `{path}` ({}) are group definitions (`description`, and `agents:` listing names), not groups of agent entries",
                    names.len(),
                    names.join(", ")
                )
            };
            self.ignored.push((
                Problem::error(
                    ProblemKind::NotAnAgent,
                    format!("{what}: {LOADER_CRASH}; the supervisor ignores them"),
                )
                .suggest("this block is probably meant as `docker_groups` at the top level: move it out of `agent_groups` (dedent it)"),
                *line,
            ));
        }
    }

    /// The `Name: {...}` entries of one `agent_groups` group, read as the
    /// legacy launcher read them: two levels down. A mapping of agent
    /// entries at the agent level is a group indented one level too deep;
    /// the launcher saw it as an entry without `script_path` and started
    /// none of its agents, so they are left out and reported.
    fn walk_group(&mut self, path: &str, group_name: &str, map: &Node) {
        let Some(entries) = self.entries_of(path, map) else {
            return;
        };
        for (key, entry) in entries {
            let name = key.as_str().unwrap_or_default();
            let entry_path = format!("{path}.{name}");
            if entry.as_mapping().is_some() && is_agent_entry(entry) {
                let agent = self.convert_entry(Some(key), entry);
                self.agents.push(agent);
            } else if let Some(inner) = entry.as_mapping().filter(|inner| {
                !inner.is_empty() && inner.iter().any(|(_, value)| is_agent_entry(value))
            }) {
                self.nested.push(NestedGroup {
                    path: entry_path,
                    name: name.to_string(),
                    outer: group_name.to_string(),
                    line: key.line,
                    agents: inner
                        .iter()
                        .filter(|(_, value)| is_agent_entry(value))
                        .filter_map(|(agent, _)| agent.as_str().map(str::to_string))
                        .collect(),
                });
            } else if entry.as_mapping().is_some() || entry.is_null() {
                self.ignore(format!("`{entry_path}` is not an agent entry (no script_path, command or port); ignored"), key.line);
            } else {
                self.ignored.push((
                    Problem::error(
                        ProblemKind::NotAnAgent,
                        format!("`{entry_path}` is {}, not an agent entry: {LOADER_CRASH}; the supervisor ignores it", entry.kind_name()),
                    )
                    .suggest("move it out of `agent_groups` (it is probably indented one level too deep)"),
                    key.line,
                ));
            }
        }
    }

    /// One warning per group nested one level too deep: what the legacy
    /// launcher did with it, what was probably meant, and which
    /// dependencies dangle because of it.
    fn report_nested_groups(&mut self) {
        for group in &self.nested {
            let hidden: std::collections::BTreeSet<&str> =
                group.agents.iter().map(String::as_str).collect();
            let mut dangling: Vec<String> = Vec::new();
            for agent in &self.agents {
                let from = agent.get("name").and_then(Node::as_str).unwrap_or("?");
                for dependency in agent
                    .get("dependencies")
                    .and_then(Node::as_sequence)
                    .unwrap_or_default()
                {
                    if let Some(to) = dependency.as_str().filter(|to| hidden.contains(to.trim())) {
                        dangling.push(format!(
                            "`{from}` -> `{}` (line {})",
                            to.trim(),
                            dependency.line
                        ));
                    }
                }
            }
            let dangling = if dangling.is_empty() {
                "no other agent depends on them".to_string()
            } else {
                format!("so these dependencies dangle: {}", dangling.join(", "))
            };
            self.ignored.push((
                Problem::warning(
                    ProblemKind::MisindentedGroup,
                    format!(
                        "`{}` is indented one level too deep (inside group `{}`): the legacy launcher reads agents two levels under `agent_groups`, saw `{}` as an entry without `script_path` and started none of its agents ({}); the supervisor does the same, {dangling}",
                        group.path,
                        group.outer,
                        group.name,
                        group.agents.join(", ")
                    ),
                )
                .suggest(format!(
                    "you probably meant a group `agent_groups.{}`: dedent `{}:` and its entries by one level",
                    group.name, group.name
                )),
                group.line,
            ));
        }
    }

    /// The entries of a mapping that should hold agents; anything else is
    /// reported (at `path`) as holding none.
    fn entries_of<'a>(&mut self, path: &str, map: &'a Node) -> Option<&'a [(Node, Node)]> {
        let entries = map.as_mapping();
        if entries.is_none() {
            self.ignore(
                format!("`{path}` is {} and holds no agents", map.kind_name()),
                map.line,
            );
        }
        entries
    }

    /// `Name: {...}` entries, recursing into nested groups.
    fn walk_named_map(&mut self, path: &str, map: &Node) {
        let Some(entries) = self.entries_of(path, map) else {
            return;
        };
        for (key, entry) in entries {
            let name = key.as_str().unwrap_or_default();
            let entry_path = format!("{path}.{name}");
            if entry.as_mapping().is_some() && is_agent_entry(entry) {
                let agent = self.convert_entry(Some(key), entry);
                self.agents.push(agent);
            } else if entry.as_mapping().is_some_and(|inner| {
                !inner.is_empty() && inner.iter().all(|(_, value)| value.as_mapping().is_some())
            }) {
                self.walk_named_map(&entry_path, entry);
            } else {
                self.ignore(format!("`{entry_path}` is not an agent entry (no script_path, command or port); ignored"), key.line);
            }
        }
    }

    /// `- {name: ..., script_path: ...}` entries.
    fn walk_list(&mut self, path: &str, list: &Node) {
        let Some(items) = list.as_sequence() else {
            return;
        };
        self.group = Some(path.to_string());
        for (index, item) in items.iter().enumerate() {
            if item.as_mapping().is_some() {
                let agent = self.convert_entry(None, item);
                self.agents.push(agent);
            } else {
                self.ignore(
                    format!(
                        "`{path}[{index}]` is {}, not an agent entry; ignored",
                        item.kind_name()
                    ),
                    item.line,
                );
            }
        }
        self.group = None;
    }

    fn ignore(&mut self, message: String, line: usize) {
        self.ignored
            .push((Problem::warning(ProblemKind::Ignored, message), line));
    }

    /// Renames legacy keys to native ones; unknown keys go under `extra`.
    fn convert_entry(&mut self, name_key: Option<&Node>, entry: &Node) -> Node {
        let mut native: Vec<(Node, Node)> = Vec::new();
        let mut extra: Vec<(Node, Node)> = Vec::new();
        let mut params: Option<&Node> = None;
        let mut args: Option<&Node> = None;
        if let Some(key) = name_key {
            native.push((Node::scalar_at("name", key), key.clone()));
        }
        if let Some(group) = &self.group {
            native.push((
                Node::scalar_at("group", entry),
                Node::scalar_at(group, entry),
            ));
        }
        for (key, value) in entry.as_mapping().unwrap_or_default() {
            let native_key = match key.as_str().unwrap_or_default() {
                "name" if name_key.is_none() => "name",
                "script_path" | "script" | "path" => "script_path",
                "host" => "host",
                "port" => "port",
                "health_check_port" | "health_port" => "health_check_port",
                "required" | "critical" => "required",
                "dependencies" | "depends_on" => "dependencies",
                "config" => "config",
                "env_vars" | "environment" | "env" => "env",
                "enabled" => "enabled",
                "params" => {
                    params = Some(value);
                    continue;
                }
                "args" => {
                    args = Some(value);
                    continue;
                }
                _ => {
                    extra.push((key.clone(), value.clone()));
                    continue;
                }
            };
            if native
                .iter()
                .any(|(existing, _)| existing.as_str() == Some(native_key))
            {
                // Two legacy spellings of one key (`script` and `path`): keep the first, pass the other on.
                extra.push((key.clone(), value.clone()));
                continue;
            }
            native.push((Node::scalar_at(native_key, key), value.clone()));
        }
        if let Some(env) = params
            .and_then(|params| params.get("env_vars"))
            .filter(|env| env.as_mapping().is_some())
        {
            match native
                .iter_mut()
                .find(|(key, _)| key.as_str() == Some("env"))
            {
                Some((
                    _,
                    Node {
                        value: Value::Mapping(existing),
                        ..
                    },
                )) => existing.extend(env.as_mapping().unwrap_or_default().iter().cloned()),
                _ => native.push((Node::scalar_at("env", env), env.clone())),
            }
        }
        if let Some(arguments) = self.arguments(entry, params, args) {
            native.push((Node::scalar_at("args", &arguments), arguments));
        }
        if !extra.is_empty() {
            native.push((
                Node::scalar_at("extra", entry),
                Node::with_value(Value::Mapping(extra), entry),
            ));
        }
        Node::with_value(Value::Mapping(native), entry)
    }

    /// `--port <port>` (MainPC launcher), then `params` as `--k v` flags, then `args`.
    fn arguments(&self, entry: &Node, params: Option<&Node>, args: Option<&Node>) -> Option<Node> {
        let mut items: Vec<Node> = Vec::new();
        if self.pass_port
            && entry.get("script_path").is_some()
            && let Some(port) = entry.get("port")
        {
            items.push(Node::scalar_at("--port", port));
            items.push(port.clone());
        }
        if let Some(params) = params.and_then(Node::as_mapping) {
            for (key, value) in params {
                if key.as_str() == Some("env_vars") && value.as_mapping().is_some() {
                    continue; // environment, not a flag: see `params_env`
                }
                items.push(Node::scalar_at(
                    format!("--{}", key.as_str().unwrap_or_default()),
                    key,
                ));
                match &value.value {
                    // The legacy launcher passed nested values as their text.
                    Value::Mapping(_) | Value::Sequence(_) => {
                        items.push(Node::scalar_at(value.to_json().to_string(), value))
                    }
                    Value::Scalar { .. } => items.push(value.clone()),
                }
            }
        }
        match args {
            Some(args) if items.is_empty() => return Some(args.clone()),
            Some(args) => match &args.value {
                Value::Sequence(list) => items.extend(list.iter().cloned()),
                Value::Scalar { .. } if args.is_null() => {}
                _ => items.push(args.clone()),
            },
            None => {}
        }
        let at = params.or(args).unwrap_or(entry);
        (!items.is_empty()).then(|| Node::with_value(Value::Sequence(items), at))
    }

    /// `{defaults: {env}, agents: [...]}` from the legacy root.
    fn native_root(&mut self, root: &Node) -> Node {
        let mut env: Vec<(Node, Node)> = Vec::new();
        let environments = [
            root.get("global_settings")
                .and_then(|settings| settings.get("environment")),
            root.get("environment"),
        ];
        for environment in environments.into_iter().flatten() {
            for (key, value) in environment.as_mapping().unwrap_or_default() {
                if value.as_mapping().is_none() && value.as_sequence().is_none() {
                    env.push((key.clone(), value.clone()));
                }
            }
        }
        let mut top: Vec<(Node, Node)> = Vec::new();
        let mut defaults: Vec<(Node, Node)> = Vec::new();
        if !env.is_empty() {
            let env_node = Node::with_value(Value::Mapping(env), root);
            defaults.push((Node::scalar_at("env", root), env_node));
        }
        defaults.extend(health_defaults(root));
        if !defaults.is_empty() {
            let defaults = Node::with_value(Value::Mapping(defaults), root);
            top.push((Node::scalar_at("defaults", root), defaults));
        }
        let agents = Node::with_value(Value::Sequence(std::mem::take(&mut self.agents)), root);
        top.push((Node::scalar_at("agents", root), agents));
        Node::with_value(Value::Mapping(top), root)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::manifest::{LoadOptions, Probe, ReadinessCheck, load_str};

    fn load(text: &str) -> crate::manifest::Manifest {
        load_str(
            Path::new("/nowhere/startup_config.yaml"),
            text,
            &LoadOptions::default(),
        )
        .expect("loads")
        .manifest
    }

    #[test]
    fn health_checks_set_the_readiness_timeout_and_the_liveness_probe() {
        let manifest = load(
            "health_checks:\n  start_period_seconds: 300\n  interval_seconds: 30\n  timeout_seconds: 10\n  retries: 4\npc2_services:\n- name: A\n  script_path: a.py\n  port: 7100\n  health_check_port: 8100\n",
        );
        let agent = &manifest.agents[0];
        assert_eq!(agent.readiness.timeout, Duration::from_secs(300));
        assert!(matches!(
            agent.readiness.check,
            ReadinessCheck::Probe(Probe::Zmq { port: 8100, .. })
        ));
        let liveness = agent.liveness.as_ref().expect("a liveness probe");
        assert!(matches!(liveness.probe, Probe::Zmq { port: 8100, .. }));
        assert_eq!(liveness.interval, Duration::from_secs(30));
        assert_eq!(liveness.timeout, Duration::from_secs(10));
        assert_eq!(liveness.failures, 4);
    }

    #[test]
    fn without_health_checks_a_legacy_agent_has_the_launchers_120_seconds() {
        let manifest = load(
            "global_settings:\n  environment:\n    LOG_LEVEL: INFO\nagent_groups:\n  core:\n    A:\n      script_path: a.py\n      port: 7100\n",
        );
        let agent = &manifest.agents[0];
        assert_eq!(
            agent.readiness.timeout,
            Duration::from_secs(super::LEGACY_READY_TIMEOUT_SECONDS)
        );
        assert!(matches!(
            agent.readiness.check,
            ReadinessCheck::Probe(Probe::Tcp { port: 7100, .. })
        ));
        assert_eq!(agent.group.as_deref(), Some("core"));
        assert_eq!(agent.env.get("LOG_LEVEL").map(String::as_str), Some("INFO"));
    }

    #[test]
    fn a_legacy_script_is_found_from_the_manifests_directory_upwards() {
        let root = tempfile::tempdir().expect("temp dir");
        let config = root.path().join("main_pc_code/config");
        std::fs::create_dir_all(&config).expect("mkdir");
        std::fs::create_dir_all(root.path().join("main_pc_code/agents")).expect("mkdir");
        std::fs::write(root.path().join("main_pc_code/agents/a.py"), "").expect("write");
        let path = config.join("startup_config.yaml");
        let text = "agent_groups:\n  core:\n    A:\n      script_path: main_pc_code/agents/a.py\n      port: 7100\n    B:\n      script_path: main_pc_code/agents/missing.py\n      port: 7102\n";
        let manifest = load_str(&path, text, &LoadOptions::default())
            .expect("loads")
            .manifest;
        let a = &manifest.agents[0];
        assert_eq!(a.cwd.as_deref(), Some(root.path()), "the launcher's root");
        let pythonpath = a.env.get("PYTHONPATH").expect("PYTHONPATH");
        let first: Vec<&str> = pythonpath.split(':').take(2).collect();
        assert_eq!(
            first,
            [
                root.path().display().to_string(),
                root.path().join("main_pc_code").display().to_string()
            ]
        );
        // Not found anywhere: stays beside the manifest (check reports it).
        let b = &manifest.agents[1];
        assert_eq!(b.cwd.as_deref(), Some(config.as_path()));
        assert!(!b.env.contains_key("PYTHONPATH"));
    }
}
