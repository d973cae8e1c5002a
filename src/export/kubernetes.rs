//! `supervisor export kubernetes`: one Deployment, Service and
//! NetworkPolicy per agent (a StatefulSet and a headless Service for an
//! agent with `replicas` whose instances differ), plus one ConfigMap
//! holding the in-pod manifest each agent's `supervisor run-one` reads
//! (docs/kubernetes.md).
//!
//! Owns: what maps to what (readiness and liveness to probes, dependencies
//! to `supervisor wait-for` init containers and to NetworkPolicy ingress,
//! `host:` to a node selector, `stop.grace` and `limits.memory_mb` to their
//! pod fields), DNS-1123 names, rewriting addresses to Service DNS names and
//! export-machine paths to image paths, and the warnings for everything that
//! has no Kubernetes equivalent. Does not own: loading or checking the
//! manifest (the CLI runs `check`'s pipeline first), the YAML emitter
//! (`serde-saphyr`), nor running the agent in the pod (`cli/run_one.rs`).
//!
//! Objects are built as `serde_json::Value`s so they can be validated and
//! compared as data; [`to_yaml`] writes them as a multi-document stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::manifest::{Agent, Manifest, Probe, ReadinessCheck, RestartMode, Strategy};

/// The port `supervisor run-one` serves `/readyz` and `/livez` on, unless
/// the agent uses it itself (then the next free one).
pub const DEFAULT_HEALTH_PORT: u16 = 8086;

/// Where the in-pod manifests are mounted.
pub const MANIFEST_DIR: &str = "/etc/supervisor";

/// The ConfigMap holding every agent's in-pod manifest.
pub const CONFIG_MAP: &str = "supervisor-agents";

/// The node label that `host:` becomes.
pub const HOST_LABEL: &str = "supervisor/host";

/// How `supervisor wait-for` init containers wait for a dependency.
const WAIT_TIMEOUT_SECONDS: u64 = 300;

/// The manifest's restart defaults (docs/manifest.md): only other values
/// are reported as having no equivalent.
const DEFAULT_BACKOFF: (Duration, Duration, f64) =
    (Duration::from_millis(100), Duration::from_secs(30), 2.0);

/// What the export needs besides the manifest.
#[derive(Debug, Clone)]
pub struct Options {
    pub namespace: String,
    /// The image of every agent without its own in `images` or `image:`.
    pub image: Option<String>,
    /// Per agent (manifest name): its image.
    pub images: BTreeMap<String, String>,
    /// `app.kubernetes.io/part-of`.
    pub part_of: String,
    /// Paths under this directory of the export machine ...
    pub source_root: PathBuf,
    /// ... are this directory in the image.
    pub app_dir: String,
}

/// Something of the manifest that has no Kubernetes equivalent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// The agent's manifest name, or `*` for the whole manifest.
    pub agent: String,
    pub field: String,
    pub message: String,
    /// Where the agent is written (`file:line`), when it is one agent's.
    pub location: Option<String>,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(location) => write!(
                f,
                "{location}: agent `{}`: `{}`: {}",
                self.agent, self.field, self.message
            ),
            None => write!(f, "`{}`: {}", self.field, self.message),
        }
    }
}

/// Why the manifest cannot be exported; every problem found, together.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ExportError {
    pub problems: Vec<String>,
}

/// The export: every object in output order, and the warnings.
#[derive(Debug, Clone)]
pub struct Export {
    pub objects: Vec<Value>,
    pub warnings: Vec<Warning>,
}

impl Export {
    /// One file name per object (`<kind>-<name>.yaml`, lower case), in order.
    pub fn file_names(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|object| {
                format!(
                    "{}-{}.yaml",
                    object["kind"].as_str().unwrap_or("object").to_lowercase(),
                    object["metadata"]["name"].as_str().unwrap_or("unnamed")
                )
            })
            .collect()
    }

    /// The `kustomization.yaml` listing `files`.
    pub fn kustomization(&self, files: &[String], namespace: &str) -> Value {
        json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": namespace,
            "resources": files,
        })
    }
}

/// Objects as a YAML stream: documents separated by `---`.
pub fn to_yaml(objects: &[Value]) -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// A DNS-1123 label (and RFC 1035: starts with a letter) for an agent name:
/// words split at case changes, `_` and `.` become `-`, lower case, at most
/// 63 characters. `ModelOpsCoordinator` -> `model-ops-coordinator`,
/// `NLUAgent` -> `nlu-agent`, `PC2Services` -> `pc2-services`.
pub fn dns_name(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (index, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && index > 0 {
            let previous = chars[index - 1];
            let next_lower = chars.get(index + 1).is_some_and(|n| n.is_ascii_lowercase());
            if previous.is_ascii_lowercase()
                || ((previous.is_ascii_digit() || previous.is_ascii_uppercase()) && next_lower)
            {
                out.push('-');
            }
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.push('-');
        }
    }
    let mut collapsed = String::new();
    for c in out.chars() {
        if c == '-' && (collapsed.is_empty() || collapsed.ends_with('-')) {
            continue;
        }
        collapsed.push(c);
    }
    let mut name = collapsed.trim_end_matches('-').to_string();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "agent-");
    }
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// A label value for a host name (`pc2`, `MainPC` -> `mainpc`).
fn host_label(host: &str) -> String {
    let value: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let value = value.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    value.chars().take(63).collect::<String>()
}

/// Whole seconds for a duration, rounded up, at least `min`.
fn seconds(duration: Duration, min: u64) -> u64 {
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    whole.max(min)
}

/// `1500ms`, `2s`: a duration the manifest reader takes back exactly.
fn duration_text(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// `$` written as `$$`, so the in-pod manifest's reader does not expand
/// values that were already expanded at export time.
fn literal(text: &str) -> String {
    text.replace('$', "$$")
}

/// Per agent: what the rest of the export needs to know about it.
struct Entry<'a> {
    agent: &'a Agent,
    name: String,
    /// Every TCP port of the agent, sorted (the `supervisor` port not included).
    ports: BTreeSet<u16>,
    /// Where `run-one` serves `/readyz` and `/livez`.
    health_port: u16,
    /// An agent with `replicas` whose instances differ (a port range or
    /// `${REPLICA}`): a StatefulSet with a headless Service, each pod the
    /// instance its ordinal names.
    stateful: bool,
}

impl Entry<'_> {
    fn service_host(&self, namespace: &str) -> String {
        format!("{}.{namespace}.svc", self.name)
    }

    /// The stable DNS name of instance `index` of a StatefulSet:
    /// `worker-2.worker.<ns>.svc`.
    fn instance_host(&self, index: u32, namespace: &str) -> String {
        format!("{}-{index}.{}.{namespace}.svc", self.name, self.name)
    }

    /// How many instances the agent runs (1 without `replicas`).
    fn count(&self) -> u32 {
        self.agent
            .replicas
            .as_ref()
            .map_or(1, |replicas| replicas.count)
    }

    /// The instance of a StatefulSet serving `port` (a port of its range).
    fn instance_of_port(&self, port: u16) -> Option<u32> {
        let replicas = self.agent.replicas.as_ref().filter(|_| self.stateful)?;
        let ranged = [
            (replicas.port_range, self.agent.port),
            (replicas.health_range, self.agent.health_check_port),
        ];
        ranged.into_iter().find_map(|(ranged, base)| {
            let base = base.filter(|_| ranged)?;
            let index = u32::from(port.checked_sub(base)?);
            (index < replicas.count).then_some(index)
        })
    }

    /// Where `port` of this agent is reached: its instance's stable name
    /// for a port of a StatefulSet's range, else the Service.
    fn host_for_port(&self, port: u16, namespace: &str) -> String {
        match self.instance_of_port(port) {
            Some(index) => self.instance_host(index, namespace),
            None => self.service_host(namespace),
        }
    }

    /// A probe of the agent that differs between its instances (aimed at a
    /// port of its range, or an exec using `${REPLICA}`): kubelet, with one
    /// pod template for all, cannot run it.
    fn per_instance(&self, probe: &Probe) -> bool {
        match probe {
            Probe::Exec { command } => command
                .iter()
                .any(|arg| arg.contains(crate::manifest::replicas::REPLICA_VARIABLE)),
            _ => probe_port(probe).is_some_and(|port| self.instance_of_port(port).is_some()),
        }
    }
}

struct Exporter<'a> {
    options: &'a Options,
    entries: Vec<Entry<'a>>,
    /// Manifest name -> index in `entries`.
    by_name: HashMap<&'a str, usize>,
    /// Port -> the agents using it (across hosts), for address rewriting.
    by_port: HashMap<u16, Vec<usize>>,
    /// Addresses and host names that mean "a machine of this manifest".
    hosts: BTreeSet<String>,
    /// Manifest name -> the names of the agents depending on it.
    dependents: HashMap<&'a str, Vec<usize>>,
    /// `ip-a-b-c-d` -> the ports used with it: addresses no agent stands for.
    external: BTreeMap<String, BTreeSet<u16>>,
    warnings: Vec<Warning>,
}

/// Exports every enabled agent of `manifest` (which `check` accepted).
pub fn export(manifest: &Manifest, options: &Options) -> Result<Export, ExportError> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut entries = Vec::new();
    let mut seen: HashMap<String, &Agent> = HashMap::new();
    for agent in &manifest.agents {
        if !agent.enabled {
            warnings.push(warning(
                agent,
                "enabled",
                "`enabled: false`: not exported; its dependents start without it, as under `up`",
            ));
            continue;
        }
        let name = dns_name(&agent.name);
        if let Some(other) = seen.get(&name) {
            problems.push(format!(
                "{}: agent `{}` and agent `{}` ({}) both become the Kubernetes name `{name}`; rename one",
                agent.location, agent.name, other.name, other.location
            ));
            continue;
        }
        seen.insert(name.clone(), agent);
        if image_of(options, agent).is_none() {
            problems.push(format!(
                "{}: agent `{}` has no image: pass `--image IMAGE` (every agent) or `--image {}=IMAGE`, or write `image:` for it",
                agent.location, agent.name, agent.name
            ));
        }
        let mut ports: BTreeSet<u16> = agent.ports.iter().map(|port| port.port).collect();
        ports.extend(agent.port);
        ports.extend(agent.health_check_port);
        for probe in probes_of(agent) {
            if let Some(port) = probe_port(probe) {
                ports.insert(port);
            }
        }
        let mut health_port = DEFAULT_HEALTH_PORT;
        while ports.contains(&health_port) {
            health_port += 1;
        }
        let stateful = agent.replicas.as_ref().is_some_and(|replicas| {
            replicas.port_range
                || replicas.health_range
                || crate::manifest::replicas::uses_index(agent)
        });
        entries.push(Entry {
            agent,
            name,
            ports,
            health_port,
            stateful,
        });
    }
    if !problems.is_empty() {
        return Err(ExportError { problems });
    }
    let mut exporter = Exporter {
        options,
        by_name: HashMap::new(),
        by_port: HashMap::new(),
        hosts: BTreeSet::new(),
        dependents: HashMap::new(),
        external: BTreeMap::new(),
        warnings,
        entries: Vec::new(),
    };
    for (index, entry) in entries.iter().enumerate() {
        exporter.by_name.insert(entry.agent.name.as_str(), index);
        for port in &entry.ports {
            exporter.by_port.entry(*port).or_default().push(index);
        }
        exporter.hosts.insert(entry.agent.host.clone());
        exporter.hosts.insert(entry.agent.address.clone());
    }
    for host in ["localhost", "127.0.0.1", "0.0.0.0"] {
        exporter.hosts.insert(host.to_string());
    }
    for (index, entry) in entries.iter().enumerate() {
        for dependency in &entry.agent.dependencies {
            exporter
                .dependents
                .entry(dependency.name.as_str())
                .or_default()
                .push(index);
        }
    }
    exporter.entries = entries;
    if manifest.strategy != Strategy::OneForOne {
        exporter.warnings.push(Warning {
            agent: "*".into(),
            field: "strategy".into(),
            message: format!(
                "`{}` has no Kubernetes equivalent: each pod is restarted alone",
                match manifest.strategy {
                    Strategy::OneForAll => "one_for_all",
                    Strategy::RestForOne => "rest_for_one",
                    Strategy::OneForOne => "one_for_one",
                }
            ),
            location: None,
        });
    }
    let mut objects = Vec::new();
    let mut manifests = Map::new();
    for index in 0..exporter.entries.len() {
        exporter.warn_unmapped(index);
        manifests.insert(
            format!("{}.yaml", exporter.entries[index].name),
            Value::String(exporter.in_pod_manifest(index)),
        );
    }
    objects.push(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": exporter.metadata(CONFIG_MAP, None),
        "data": manifests,
    }));
    for index in 0..exporter.entries.len() {
        objects.push(exporter.deployment(index));
        objects.push(exporter.service(index));
        objects.push(exporter.network_policy(index));
    }
    objects.extend(exporter.external_services());
    Ok(Export {
        objects,
        warnings: exporter.warnings,
    })
}

/// The image an agent runs in: `--image NAME=IMAGE`, else its `image:`,
/// else `--image IMAGE`.
fn image_of<'a>(options: &'a Options, agent: &'a Agent) -> Option<&'a String> {
    options
        .images
        .get(&agent.name)
        .or(agent.image.as_ref())
        .or(options.image.as_ref())
}

fn warning(agent: &Agent, field: &str, message: &str) -> Warning {
    Warning {
        agent: agent.name.clone(),
        field: field.to_string(),
        message: message.to_string(),
        location: Some(agent.location.to_string()),
    }
}

fn probes_of(agent: &Agent) -> Vec<&Probe> {
    let mut probes = Vec::new();
    if let ReadinessCheck::Probe(probe) = &agent.readiness.check {
        probes.push(probe);
    }
    if let Some(liveness) = &agent.liveness {
        probes.push(&liveness.probe);
    }
    probes
}

/// Extra time kubelet allows a probe that runs `supervisor wait-for`.
fn process_start(probe: &Probe) -> Duration {
    match probe {
        Probe::Zmq { .. } => Duration::from_secs(1),
        _ => Duration::ZERO,
    }
}

/// The port a probe reaches, if it is a network probe.
fn probe_port(probe: &Probe) -> Option<u16> {
    match probe {
        Probe::Tcp { port, .. } | Probe::Zmq { port, .. } => Some(*port),
        Probe::Http { url } => Some(split_url(url).1),
        Probe::Exec { .. } => None,
    }
}

/// `(scheme, port, path)` of an HTTP probe URL.
fn split_url(url: &str) -> (&'static str, u16, String) {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => ("HTTPS", rest),
        Some((_, rest)) => ("HTTP", rest),
        None => ("HTTP", url),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], rest[at..].to_string()),
        None => (rest, "/".to_string()),
    };
    let default_port = if scheme == "HTTPS" { 443 } else { 80 };
    let port = authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(default_port);
    (scheme, port, path)
}

impl<'a> Exporter<'a> {
    fn labels(&self, name: &str) -> Value {
        json!({
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/part-of": self.options.part_of,
            "app.kubernetes.io/managed-by": "supervisor",
        })
    }

    fn metadata(&self, name: &str, agent: Option<&Agent>) -> Value {
        let mut metadata = json!({
            "name": name,
            "namespace": self.options.namespace,
            "labels": self.labels(name),
        });
        if let Some(agent) = agent {
            metadata["annotations"] = json!({
                "supervisor/agent": agent.name,
                "supervisor/source": agent.location.to_string().replace(
                    &self.options.source_root.display().to_string(),
                    &self.options.app_dir,
                ),
            });
        }
        metadata
    }

    /// A path of the export machine as it is in the image.
    fn map_path(&self, text: &str) -> String {
        let root = self.options.source_root.display().to_string();
        let root = root.trim_end_matches('/');
        if root.is_empty() {
            return text.to_string();
        }
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(root) {
            let after = &rest[at + root.len()..];
            // Only whole path components: `/src/app` must not match `/src/application`.
            if after.is_empty()
                || after.starts_with('/')
                || !after
                    .starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                out.push_str(&rest[..at]);
                out.push_str(&self.options.app_dir);
                rest = after;
            } else {
                out.push_str(&rest[..at + root.len()]);
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }

    /// `host:port` of a machine of the manifest (an IP literal, `localhost`,
    /// a host name) where `port` is one agent's becomes that agent's Service
    /// DNS name; paths are mapped into the image. Other IP literals are
    /// reported, since no Service stands for them.
    fn rewrite(&mut self, index: usize, field: &str, text: &str) -> String {
        let text = self.map_path(text);
        let mut out = String::new();
        let mut at = 0;
        while at < text.len() {
            if let Some((port, port_end)) = self.host_port_at(&text, at)
                && let Some(target) = self.port_owner(port, index)
            {
                out.push_str(&self.entries[target].host_for_port(port, &self.options.namespace));
                out.push(':');
                out.push_str(&port.to_string());
                at = port_end;
                continue;
            }
            if let Some((ip, port, end)) = ip_at(&text, at) {
                let with_port = |host: &str| match port {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                };
                let owner = port.and_then(|port| Some((self.port_owner(port, index)?, port)));
                let replacement = if let Some((target, port)) = owner {
                    with_port(&self.entries[target].host_for_port(port, &self.options.namespace))
                } else if ip == "0.0.0.0" {
                    // Bind to every interface: right in a pod too.
                    with_port(&ip)
                } else if ip.starts_with("127.") {
                    with_port("localhost")
                } else {
                    let name = format!("ip-{}", ip.replace('.', "-"));
                    let host = format!("{name}.{}.svc", self.options.namespace);
                    let agent = self.entries[index].agent;
                    self.warnings.push(warning(
                        agent,
                        field,
                        &format!(
                            "{} is no agent of these manifests: now `{host}`, a Service without selector; point it at the machine with an EndpointSlice (docs/kubernetes.md)",
                            with_port(&ip)
                        ),
                    ));
                    let ports = self.external.entry(name).or_default();
                    ports.extend(port);
                    with_port(&host)
                };
                out.push_str(&replacement);
                at = end;
                continue;
            }
            let c = text[at..]
                .chars()
                .next()
                .expect("at is a char boundary below len");
            out.push(c);
            at += c.len_utf8();
        }
        out
    }

    /// Services without a selector for the machines addresses pointed at
    /// that no agent stands for (`ip-172-20-0-10`).
    fn external_services(&self) -> Vec<Value> {
        self.external
            .iter()
            .map(|(name, ports)| {
                let mut spec = json!({});
                if ports.is_empty() {
                    spec["clusterIP"] = json!("None");
                } else {
                    spec["ports"] = ports
                        .iter()
                        .map(|port| json!({"name": format!("tcp-{port}"), "port": port, "protocol": "TCP"}))
                        .collect();
                }
                let mut metadata = self.metadata(name, None);
                metadata["annotations"] = json!({
                    "supervisor/note": "an address the manifests name that no agent stands for: add an EndpointSlice with the machine's address",
                });
                json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec})
            })
            .collect()
    }

    /// At `at`, a known host followed by `:port` (and not inside a longer word).
    fn host_port_at(&self, text: &str, at: usize) -> Option<(u16, usize)> {
        if at > 0 {
            let before = text[..at].chars().next_back()?;
            if before.is_ascii_alphanumeric() || before == '.' || before == '-' {
                return None;
            }
        }
        let rest = &text[at..];
        for host in &self.hosts {
            if host.is_empty() || !rest.starts_with(host.as_str()) {
                continue;
            }
            let after = &rest[host.len()..];
            let Some(digits) = after.strip_prefix(':') else {
                continue;
            };
            let length = digits.chars().take_while(char::is_ascii_digit).count();
            if length == 0 || length > 5 {
                continue;
            }
            let port: u16 = digits[..length].parse().ok()?;
            return Some((port, at + host.len() + 1 + length));
        }
        None
    }

    /// The agent owning `port` as seen from agent `from`: a dependency of
    /// `from` first, else the only agent with that port, else `from` itself.
    fn port_owner(&self, port: u16, from: usize) -> Option<usize> {
        let owners = self.by_port.get(&port)?;
        let agent = self.entries[from].agent;
        let dependency = owners.iter().copied().find(|owner| {
            agent
                .dependencies
                .iter()
                .any(|dependency| dependency.name == self.entries[*owner].agent.name)
        });
        dependency
            .or_else(|| (owners.len() == 1).then(|| owners[0]))
            .or_else(|| owners.contains(&from).then_some(from))
    }

    fn warn_unmapped(&mut self, index: usize) {
        let agent = self.entries[index].agent;
        let mut found = Vec::new();
        let restart = &agent.restart;
        if restart.mode != RestartMode::Always {
            found.push((
                "restart.policy",
                format!(
                    "`{}`: a Deployment always restarts its container",
                    if restart.mode == RestartMode::Never {
                        "never"
                    } else {
                        "on-failure"
                    }
                ),
            ));
        }
        let backoff = &restart.backoff;
        if (backoff.initial, backoff.max, backoff.multiplier) != DEFAULT_BACKOFF {
            found.push((
                "restart.backoff",
                format!(
                    "initial {} max {} x{}: Kubernetes uses its own crash-loop backoff (10s doubling to 5m)",
                    duration_text(backoff.initial),
                    duration_text(backoff.max),
                    backoff.multiplier
                ),
            ));
        }
        if let Some(max) = restart.max_restarts
            && (max, restart.within) != (5, Duration::from_secs(60))
        {
            found.push((
                "restart.max_restarts",
                format!(
                    "{max} within {}: Kubernetes never gives up restarting a Deployment's pod",
                    duration_text(restart.within)
                ),
            ));
        }
        if restart.on_give_up != crate::manifest::GiveUp::default() || !agent.required {
            found.push((
                "required",
                "what a failing agent does to the others has no equivalent: pods fail alone"
                    .to_string(),
            ));
        }
        if !agent.on_error.on_severity.is_empty() || agent.on_error.rate.is_some() {
            found.push((
                "on_error",
                "error policies have no Kubernetes equivalent: errors are printed as JSON lines on the container's stdout, and `run-one` ends the container when the policy says restart".to_string(),
            ));
        }
        if let Some(idle_stop) = agent.idle_stop {
            found.push((
                "idle_stop",
                format!(
                    "{}: stopping an idle agent and starting it on demand has no Kubernetes equivalent (a scale-to-zero autoscaler such as KEDA would be needed): the pod keeps running",
                    duration_text(idle_stop)
                ),
            ));
        }
        if let Some(limits) = &agent.limits
            && let Some(cpu) = limits.cpu_percent
        {
            found.push((
                "limits.cpu_percent",
                format!("{cpu}% is a warning threshold, not a limit: no CPU limit is set"),
            ));
        }
        if agent.shell {
            found.push((
                "shell",
                "runs through `sh -c`: the image needs a shell".to_string(),
            ));
        }
        for (field, message) in found {
            self.warnings.push(warning(agent, field, &message));
        }
    }

    /// The native manifest `run-one` reads in the pod: the agent with every
    /// value expanded, paths mapped into the image and addresses rewritten,
    /// restart `never` (Kubernetes restarts), its probes pointed at itself;
    /// and each dependency as an agent on another host (its Service name),
    /// so RESOLVE and `<NAME>_ENDPOINT` give Service addresses.
    fn in_pod_manifest(&mut self, index: usize) -> String {
        let agent = self.entries[index].agent;
        let mut entry = Map::new();
        let command: Vec<Value> = agent
            .command
            .iter()
            .map(|arg| Value::String(literal(&self.rewrite(index, "command", arg))))
            .collect();
        entry.insert("command".into(), Value::Array(command));
        if agent.shell {
            entry.insert("shell".into(), Value::Bool(true));
        }
        entry.insert(
            "cwd".into(),
            Value::String(literal(&self.working_dir(agent))),
        );
        let mut env = Map::new();
        for (key, value) in &agent.env {
            let value = self.rewrite(index, &format!("env.{key}"), value);
            env.insert(key.clone(), Value::String(literal(&value)));
        }
        if !env.is_empty() {
            entry.insert("env".into(), Value::Object(env));
        }
        // A StatefulSet's pods run one instance each: the in-pod manifest
        // keeps `replicas` and the ranges, and `run-one` picks the instance
        // of the pod's ordinal.
        let ranged = |on: bool, port: u16| match on {
            true => json!(format!("{port}+")),
            false => json!(port),
        };
        let replicas = agent
            .replicas
            .as_ref()
            .filter(|_| self.entries[index].stateful);
        if let Some(replicas) = replicas {
            entry.insert("replicas".into(), json!(replicas.count));
        }
        if let Some(port) = agent.port {
            let on = replicas.is_some_and(|replicas| replicas.port_range);
            entry.insert("port".into(), ranged(on, port));
        }
        if let Some(port) = agent.health_check_port {
            let on = replicas.is_some_and(|replicas| replicas.health_range);
            entry.insert("health_check_port".into(), ranged(on, port));
        }
        if !agent.config.is_empty() {
            let config = Value::Object(agent.config.clone());
            let config = self.rewrite_value(index, "config", &config);
            entry.insert("config".into(), config);
        }
        if agent.legacy {
            entry.insert("legacy".into(), Value::Bool(true));
        }
        let readiness = &agent.readiness;
        let mut check = Map::new();
        match &readiness.check {
            ReadinessCheck::Sdk => {
                check.insert("sdk".into(), Value::Bool(true));
            }
            ReadinessCheck::StartPeriod(period) => {
                check.insert("start_period".into(), json!(duration_text(*period)));
            }
            ReadinessCheck::Probe(probe) => match probe {
                Probe::Tcp { port, .. } => {
                    check.insert("tcp".into(), json!(port));
                }
                Probe::Zmq { port, .. } => {
                    check.insert("zmq".into(), json!(port));
                }
                Probe::Http { url } => {
                    let (scheme, port, path) = split_url(url);
                    check.insert(
                        "http".into(),
                        json!(literal(&format!(
                            "{}://localhost:{port}{path}",
                            scheme.to_lowercase()
                        ))),
                    );
                }
                Probe::Exec { command } => {
                    let command: Vec<Value> = command
                        .iter()
                        .map(|arg| {
                            Value::String(literal(&self.rewrite(index, "readiness.exec", arg)))
                        })
                        .collect();
                    check.insert("exec".into(), Value::Array(command));
                }
            },
        }
        check.insert("timeout".into(), json!(duration_text(readiness.timeout)));
        check.insert("interval".into(), json!(duration_text(readiness.interval)));
        if !readiness.initial_delay.is_zero() {
            check.insert(
                "initial_delay".into(),
                json!(duration_text(readiness.initial_delay)),
            );
        }
        entry.insert("readiness".into(), Value::Object(check));
        let heartbeat = &agent.heartbeat;
        let mut beat = json!({
            "interval": duration_text(heartbeat.interval),
            "misses": heartbeat.misses,
        });
        if let Some(timeout) = heartbeat.progress_timeout {
            beat["progress_timeout"] = json!(duration_text(timeout));
        }
        entry.insert("heartbeat".into(), beat);
        entry.insert(
            "stop".into(),
            json!({"signal": agent.stop.signal.as_str(), "grace": duration_text(agent.stop.grace)}),
        );
        entry.insert("restart".into(), json!("never"));
        let mut dependencies = Vec::new();
        let mut agents = Map::new();
        for dependency in &agent.dependencies {
            let Some(&target) = self.by_name.get(dependency.name.as_str()) else {
                continue; // disabled: started without it, as under `up`
            };
            let target = &self.entries[target];
            if target.stateful {
                // Each instance by its stable name (`worker-1.worker.<ns>.svc`).
                let replicas = target
                    .agent
                    .replicas
                    .as_ref()
                    .expect("stateful has replicas");
                for instance in 0..replicas.count {
                    let name =
                        crate::manifest::replicas::instance_name(&target.agent.name, instance);
                    let mut stub = json!({
                        "command": ["true"],
                        "host": target.instance_host(instance, &self.options.namespace),
                        "readiness": "none",
                    });
                    if let Some(port) = target.agent.port {
                        let offset = u16::try_from(instance).unwrap_or(u16::MAX);
                        stub["port"] = match replicas.port_range {
                            true => json!(port.saturating_add(offset)),
                            false => json!(port),
                        };
                    }
                    dependencies.push(Value::String(name.clone()));
                    agents.insert(name, stub);
                }
                continue;
            }
            dependencies.push(Value::String(dependency.name.clone()));
            let mut stub = json!({
                "command": ["true"],
                "host": target.service_host(&self.options.namespace),
                "readiness": "none",
            });
            if let Some(port) = target.agent.port {
                stub["port"] = json!(port);
            }
            agents.insert(target.agent.name.clone(), stub);
        }
        if !dependencies.is_empty() {
            entry.insert("dependencies".into(), Value::Array(dependencies));
        }
        agents.insert(agent.name.clone(), Value::Object(entry));
        let document = json!({ "version": 1, "agents": agents });
        let mut text = format!(
            "# The in-pod manifest of `{}` (written by `supervisor export kubernetes`);\n# read by `supervisor run-one`.\n",
            agent.name
        );
        text.push_str(&serde_saphyr::to_string(&document).expect("a JSON value always serializes"));
        text
    }

    fn rewrite_value(&mut self, index: usize, field: &str, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(literal(&self.rewrite(index, field, text))),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.rewrite_value(index, field, item))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, item)| {
                        (
                            key.clone(),
                            self.rewrite_value(index, &format!("{field}.{key}"), item),
                        )
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn working_dir(&self, agent: &Agent) -> String {
        match &agent.cwd {
            // Relative to where the export runs, as the loader made it.
            Some(dir) => self.map_path(
                &std::path::absolute(dir)
                    .unwrap_or_else(|_| dir.clone())
                    .display()
                    .to_string(),
            ),
            None => self.options.app_dir.clone(),
        }
    }

    /// A kubelet probe handler for a manifest probe of the agent itself.
    fn handler(&mut self, index: usize, probe: &Probe, timeout: Duration) -> Value {
        match probe {
            Probe::Tcp { port, .. } => json!({"tcpSocket": {"port": port}}),
            Probe::Http { url } => {
                let (scheme, port, path) = split_url(url);
                json!({"httpGet": {"path": path, "port": port, "scheme": scheme}})
            }
            Probe::Exec { command } => {
                let command: Vec<Value> = command
                    .iter()
                    .map(|arg| Value::String(self.rewrite(index, "probe.exec", arg)))
                    .collect();
                json!({"exec": {"command": command}})
            }
            // One attempt of `timeout` (`--interval` as long: no retry);
            // kubelet allows a second more for starting the process.
            Probe::Zmq { port, .. } => {
                let attempt = seconds(timeout, 1).to_string();
                json!({"exec": {"command": [
                    "supervisor", "wait-for", format!("zmq://localhost:{port}"),
                    "--timeout", attempt, "--interval", attempt, "--quiet",
                ]}})
            }
        }
    }

    fn deployment(&mut self, index: usize) -> Value {
        let agent = self.entries[index].agent;
        let name = self.entries[index].name.clone();
        let health_port = self.entries[index].health_port;
        let image = image_of(self.options, agent)
            .cloned()
            .expect("checked in `export`");
        let readiness = &agent.readiness;
        let period = seconds(readiness.interval, 1);
        let stateful = self.entries[index].stateful;
        let (ready_handler, attempt) = match &readiness.check {
            // Differs per pod: `run-one` runs it for its instance.
            ReadinessCheck::Probe(probe) if self.entries[index].per_instance(probe) => (
                json!({"httpGet": {"path": "/readyz", "port": "supervisor"}}),
                Duration::from_secs(1),
            ),
            ReadinessCheck::Probe(probe) => {
                let attempt = readiness.interval.max(Duration::from_secs(1));
                let allowed = attempt + process_start(probe);
                (self.handler(index, probe, attempt), allowed)
            }
            ReadinessCheck::Sdk | ReadinessCheck::StartPeriod(_) => (
                json!({"httpGet": {"path": "/readyz", "port": "supervisor"}}),
                Duration::from_secs(1),
            ),
        };
        let mut readiness_probe = ready_handler.clone();
        readiness_probe["periodSeconds"] = json!(period);
        readiness_probe["timeoutSeconds"] = json!(seconds(attempt, 1));
        readiness_probe["failureThreshold"] = json!(3);
        let mut startup_probe = ready_handler;
        startup_probe["periodSeconds"] = json!(period);
        startup_probe["timeoutSeconds"] = json!(seconds(attempt, 1));
        startup_probe["failureThreshold"] =
            json!(seconds(readiness.timeout, 1).div_ceil(period).max(1));
        if !readiness.initial_delay.is_zero() {
            startup_probe["initialDelaySeconds"] = json!(seconds(readiness.initial_delay, 0));
        }
        let per_instance_liveness = agent
            .liveness
            .as_ref()
            .is_some_and(|liveness| self.entries[index].per_instance(&liveness.probe));
        if per_instance_liveness {
            self.warnings.push(warning(
                agent,
                "liveness",
                "the probe differs between instances (a port of its range or ${REPLICA}), and one pod template serves them all: kubelet checks `/livez` (heartbeats) instead",
            ));
        }
        let liveness_probe = match &agent.liveness {
            Some(liveness) if !per_instance_liveness => {
                let mut probe = self.handler(index, &liveness.probe, liveness.timeout);
                probe["periodSeconds"] = json!(seconds(liveness.interval, 1));
                probe["timeoutSeconds"] = json!(seconds(
                    liveness.timeout + process_start(&liveness.probe),
                    1
                ));
                probe["failureThreshold"] = json!(liveness.failures.max(1));
                probe
            }
            // `/livez` fails once heartbeats are missed `misses` times
            // (or progress stalls): one failure is enough.
            _ => json!({
                "httpGet": {"path": "/livez", "port": "supervisor"},
                "periodSeconds": seconds(agent.heartbeat.interval, 1),
                "timeoutSeconds": 1,
                "failureThreshold": 1,
            }),
        };
        let mut ports: Vec<Value> = self.entries[index]
            .ports
            .iter()
            .map(|port| json!({"name": format!("tcp-{port}"), "containerPort": port, "protocol": "TCP"}))
            .collect();
        ports.push(json!({"name": "supervisor", "containerPort": health_port, "protocol": "TCP"}));
        let mut env: Vec<Value> = Vec::new();
        for (key, value) in &agent.env {
            let value = self.rewrite(index, &format!("env.{key}"), value);
            env.push(json!({"name": key, "value": value}));
        }
        if stateful {
            // `run-one` takes its instance from the ordinal ending it.
            env.push(json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}));
        }
        let command = vec![
            json!("supervisor"),
            json!("--log-format"),
            json!("json"),
            json!("run-one"),
            json!(agent.name),
            json!("--config"),
            json!(format!("{MANIFEST_DIR}/{name}.yaml")),
            json!("--health-port"),
            json!(health_port.to_string()),
            json!("--"),
        ];
        let args: Vec<Value> = agent
            .command
            .iter()
            .map(|arg| Value::String(self.rewrite(index, "command", arg)))
            .collect();
        let mut container = json!({
            "name": "agent",
            "image": image,
            "command": command,
            "args": args,
            "workingDir": self.working_dir(agent),
            "ports": ports,
            "readinessProbe": readiness_probe,
            "startupProbe": startup_probe,
            "livenessProbe": liveness_probe,
            "volumeMounts": [{"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": true}],
        });
        if !env.is_empty() {
            container["env"] = Value::Array(env);
        }
        if let Some(limits) = &agent.limits
            && let Some(bytes) = limits.memory_bytes
        {
            container["resources"] = json!({
                "limits": {"memory": bytes.to_string()},
                "requests": {"memory": bytes.to_string()},
            });
        }
        let mut init = Vec::new();
        for dependency in &agent.dependencies {
            let Some(&target) = self.by_name.get(dependency.name.as_str()) else {
                continue;
            };
            let mut command = vec![json!("supervisor"), json!("wait-for")];
            command.extend(self.wait_targets(target).into_iter().map(Value::String));
            command.extend([json!("--timeout"), json!(WAIT_TIMEOUT_SECONDS.to_string())]);
            init.push(json!({
                "name": format!("wait-for-{}", self.entries[target].name).chars().take(63).collect::<String>().trim_end_matches('-'),
                "image": image,
                "command": command,
            }));
        }
        let mut pod = json!({
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": seconds(agent.stop.grace, 1) + 2,
            "containers": [container],
            "volumes": [{"name": "manifest", "configMap": {"name": CONFIG_MAP}}],
        });
        if !init.is_empty() {
            pod["initContainers"] = Value::Array(init);
        }
        if !matches!(agent.host.as_str(), "localhost" | "127.0.0.1" | "0.0.0.0") {
            pod["nodeSelector"] = json!({ HOST_LABEL: host_label(&agent.host) });
        }
        let mut spec = json!({
            "replicas": self.entries[index].count(),
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": self.labels(&name)},
                "spec": pod,
            },
        });
        if stateful {
            // Stable pod names `NAME-i` under the headless Service; the
            // instances start together, as under `up`.
            spec["serviceName"] = json!(name);
            spec["podManagementPolicy"] = json!("Parallel");
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": if stateful { "StatefulSet" } else { "Deployment" },
            "metadata": self.metadata(&name, Some(agent)),
            "spec": spec,
        })
    }

    /// What `supervisor wait-for` checks for a dependency, through its
    /// Service; for a StatefulSet, the `/readyz` of its first `min_ready`
    /// instances by their stable names (what a dependent waits for under
    /// `up`).
    fn wait_targets(&self, target: usize) -> Vec<String> {
        let entry = &self.entries[target];
        if let Some(replicas) = entry.agent.replicas.as_ref().filter(|_| entry.stateful) {
            return (0..replicas.min_ready)
                .map(|instance| {
                    format!(
                        "http://{}:{}/readyz",
                        entry.instance_host(instance, &self.options.namespace),
                        entry.health_port
                    )
                })
                .collect();
        }
        vec![self.wait_target(target)]
    }

    /// What `supervisor wait-for` checks for a plain dependency.
    fn wait_target(&self, target: usize) -> String {
        let entry = &self.entries[target];
        let host = entry.service_host(&self.options.namespace);
        match &entry.agent.readiness.check {
            ReadinessCheck::Probe(Probe::Tcp { port, .. }) => format!("tcp://{host}:{port}"),
            ReadinessCheck::Probe(Probe::Zmq { port, .. }) => format!("zmq://{host}:{port}"),
            ReadinessCheck::Probe(Probe::Http { url }) => {
                let (scheme, port, path) = split_url(url);
                format!("{}://{host}:{port}{path}", scheme.to_lowercase())
            }
            // Exec, SDK and start periods: what its own `run-one` says.
            _ => format!("http://{host}:{}/readyz", entry.health_port),
        }
    }

    fn service(&self, index: usize) -> Value {
        let entry = &self.entries[index];
        let mut ports: Vec<Value> = entry
            .ports
            .iter()
            .map(|port| json!({"name": format!("tcp-{port}"), "port": port, "targetPort": port, "protocol": "TCP"}))
            .collect();
        ports.push(json!({"name": "supervisor", "port": entry.health_port, "targetPort": entry.health_port, "protocol": "TCP"}));
        let mut spec = json!({
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": entry.name},
            "ports": ports,
        });
        if entry.stateful {
            // Headless: the StatefulSet's `serviceName`, giving each pod
            // its DNS name `NAME-i.NAME.<ns>.svc`.
            spec["clusterIP"] = json!("None");
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(&entry.name, Some(entry.agent)),
            "spec": spec,
        })
    }

    /// Ingress on the agent's ports only from the agents that depend on it
    /// (their init containers wait through the same port); kubelet probes
    /// come from the node, which NetworkPolicies always allow.
    fn network_policy(&self, index: usize) -> Value {
        let entry = &self.entries[index];
        let mut from: Vec<Value> = self
            .dependents
            .get(entry.agent.name.as_str())
            .map(|dependents| {
                dependents
                    .iter()
                    .map(|dependent| {
                        json!({"podSelector": {"matchLabels": {"app.kubernetes.io/name": self.entries[*dependent].name}}})
                    })
                    .collect()
            })
            .unwrap_or_default();
        from.dedup();
        let mut ports: Vec<Value> = entry
            .ports
            .iter()
            .map(|port| json!({"port": port, "protocol": "TCP"}))
            .collect();
        ports.push(json!({"port": entry.health_port, "protocol": "TCP"}));
        let ingress = if from.is_empty() {
            json!([])
        } else {
            json!([{ "from": from, "ports": ports }])
        };
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self.metadata(&entry.name, Some(entry.agent)),
            "spec": {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": entry.name}},
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            },
        })
    }
}

/// The IPv4 literal starting at `at` (not inside a longer token), with the
/// `:port` after it if any, and where it ends.
fn ip_at(text: &str, at: usize) -> Option<(String, Option<u16>, usize)> {
    let bytes = text.as_bytes();
    if !bytes[at].is_ascii_digit()
        || at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'.')
    {
        return None;
    }
    let literal = ip_literals(&text[at..]).into_iter().next()?;
    if !text[at..].starts_with(&literal) {
        return None;
    }
    let mut end = at + literal.len();
    if bytes.get(end).is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let mut port = None;
    if bytes.get(end) == Some(&b':') {
        let digits = text[end + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .count();
        if (1..=5).contains(&digits)
            && let Ok(number) = text[end + 1..end + 1 + digits].parse::<u16>()
        {
            port = Some(number);
            end += 1 + digits;
        }
    }
    Some((literal, port, end))
}

/// Every IPv4 literal in `text` (four dot-separated numbers up to 255, not
/// part of a longer token).
pub fn ip_literals(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let boundary = at == 0 || !(bytes[at - 1].is_ascii_digit() || bytes[at - 1] == b'.');
        if boundary && bytes[at].is_ascii_digit() {
            let end = bytes[at..]
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b'.'))
                .map_or(bytes.len(), |length| at + length);
            let candidate = text[at..end].trim_end_matches('.');
            let parts: Vec<&str> = candidate.split('.').collect();
            if parts.len() == 4
                && parts.iter().all(|part| {
                    !part.is_empty()
                        && part.len() <= 3
                        && part.parse::<u16>().is_ok_and(|n| n <= 255)
                })
            {
                found.push(candidate.to_string());
            }
            at = end.max(at + 1);
        } else {
            at += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_split_words_and_acronyms() {
        assert_eq!(dns_name("ModelOpsCoordinator"), "model-ops-coordinator");
        assert_eq!(dns_name("NLUAgent"), "nlu-agent");
        assert_eq!(dns_name("PC2Services"), "pc2-services");
        assert_eq!(dns_name("TTSService"), "tts-service");
        assert_eq!(dns_name("echo-service"), "echo-service");
        assert_eq!(dns_name("py_worker.v2"), "py-worker-v2");
        assert_eq!(dns_name("2fast"), "agent-2fast");
        assert_eq!(dns_name("GGUFModelManager"), "gguf-model-manager");
        assert_eq!(dns_name("Agent2Go"), "agent2-go");
        let long = "A".repeat(40) + &"b".repeat(40);
        assert!(dns_name(&long).len() <= 63);
    }

    #[test]
    fn ip_literals_are_found_only_whole() {
        assert_eq!(ip_literals("tcp://10.0.0.5:7200"), vec!["10.0.0.5"]);
        assert_eq!(ip_literals("version 1.2.3.4.5"), Vec::<String>::new());
        assert_eq!(ip_literals("300.1.1.1"), Vec::<String>::new());
        assert_eq!(ip_literals("a 127.0.0.1."), vec!["127.0.0.1"]);
    }

    #[test]
    fn urls_split_into_scheme_port_path() {
        assert_eq!(
            split_url("http://127.0.0.1:17210/health"),
            ("HTTP", 17210, "/health".into())
        );
        assert_eq!(split_url("https://x"), ("HTTPS", 443, "/".into()));
    }
}
