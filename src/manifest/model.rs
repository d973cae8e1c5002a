//! The validated manifest: the only manifest type the rest of the crate accepts.
//!
//! Built by [`crate::manifest::validate`] from the raw (serde) form; nothing
//! downstream re-checks these values. Durations are already parsed, ports are
//! in range, commands are already split into argv, and every agent knows the
//! file and line it came from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where something was written: a file and a 1-based line (and column).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Every agent of every manifest file given on the command line, as one graph.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// Agents in file order (first file first). Names are unique only after
    /// `check` passed: duplicates are kept here so they can be reported.
    pub agents: Vec<Agent>,
    /// The files read, in command-line order.
    pub files: Vec<SourceFile>,
    /// What happens to other agents when one restarts (`strategy:` at the top
    /// level of a native manifest; the first file that sets it wins).
    pub strategy: Strategy,
    /// The `/metrics` listener (`metrics:` at the top level of a native
    /// manifest; the first file that sets it wins).
    pub metrics: Option<Metrics>,
    /// Agent entries that are written but not read: legacy ones in a group
    /// indented one level too deep (the legacy launcher did not start them
    /// either), and the entries of a mapping hidden by a later duplicate key
    /// (last one wins). Not in `agents`; `check` names them when a
    /// dependency on them dangles.
    pub hidden: Vec<HiddenAgent>,
    /// The machines named under `hosts:` (the first file naming a host wins).
    pub hosts: Vec<Host>,
    /// Agents of other hosts declared under `hosts.HOST.agents`, named
    /// `HOST/NAME`: dependencies may name them, `up` awaits them (never
    /// starts them). Only the ones no loaded manifest defines.
    pub declared: Vec<Agent>,
}

/// One machine of the system (`hosts:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// Where its agents and its supervisor are reached; `None`: the name itself.
    pub address: Option<String>,
    /// Its supervisor's peer link port.
    pub link_port: Option<u16>,
    /// Its peer-link public key (Z85).
    pub public_key: Option<String>,
    /// Where its own link listens, when not `address`.
    pub bind: Option<String>,
    pub location: Location,
}

impl Host {
    /// The address to reach this host at.
    pub fn address(&self) -> &str {
        self.address.as_deref().unwrap_or(&self.name)
    }
}

/// An agent entry that is written but not read (see [`Manifest::hidden`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiddenAgent {
    pub name: String,
    /// Where it is, and why it is not read, for a suggestion: "in ... (file:line), ...".
    pub because: String,
}

/// Where `up` serves `/metrics` and `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    pub listen: std::net::SocketAddr,
}

/// Resource limits of one agent's process tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Restart when resident memory stays above this many bytes for `grace`.
    pub memory_bytes: Option<u64>,
    /// Warn when CPU use is above this percentage of one core.
    pub cpu_percent: Option<f64>,
    pub grace: Duration,
}

/// Restart strategies, as in Erlang/OTP supervisors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Restart only the agent that stopped.
    #[default]
    OneForOne,
    /// Also restart the agents that depend on it (transitively), in dependency order.
    RestForOne,
    /// Restart every agent.
    OneForAll,
}

impl Manifest {
    /// The agent called `name`, if any (the first one when names repeat).
    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|agent| agent.name == name)
    }

    /// The host called `name` under `hosts:`, if any.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|host| host.name == name)
    }
}

/// One manifest file as read.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    /// The format that was detected (`native`, `legacy:agent_groups`, ...).
    pub format: String,
    /// The machine this file's agents run on unless they say otherwise.
    pub host: String,
    /// The file's text, kept so `check-ports --fix` can edit it in place.
    pub text: String,
}

/// One agent, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    pub name: String,
    /// `script_path` as written and where, when the agent has one; it runs
    /// as `command` `[interpreter, script, args...]` in `cwd`.
    pub script: Option<Script>,
    /// `group:`, or the legacy group the entry was found in.
    pub group: Option<String>,
    /// Where the agent's entry starts.
    pub location: Location,
    /// The machine the agent runs on (`localhost` unless a manifest says otherwise).
    pub host: String,
    /// The address probes and dependents use to reach the agent: `127.0.0.1`
    /// for agents of a local host (legacy `host: 0.0.0.0` / `localhost`
    /// entries included), else the host itself.
    pub address: String,
    /// The program and its arguments (`script_path` already turned into
    /// `[interpreter, script_path, args...]`). Empty only when `check`
    /// reported an error for the agent.
    pub command: Vec<String>,
    /// Run `command[0]` through `sh -c` (only when the manifest says `shell: true`).
    pub shell: bool,
    pub cwd: Option<PathBuf>,
    /// Environment added to the supervisor's own, in order.
    pub env: BTreeMap<String, String>,
    pub port: Option<u16>,
    pub health_check_port: Option<u16>,
    /// Every port this agent uses on its host (service, health, `config:` ports,
    /// legacy implicit ones), with where each was written.
    pub ports: Vec<PortUse>,
    /// Names of the agents that must be ready before this one starts.
    pub dependencies: Vec<Dependency>,
    /// A required agent that cannot become ready fails `up`.
    pub required: bool,
    /// `enabled: false` agents are planned and checked but never started.
    pub enabled: bool,
    pub readiness: Readiness,
    pub liveness: Option<Liveness>,
    pub restart: RestartPolicy,
    pub heartbeat: Heartbeat,
    pub stop: StopPolicy,
    /// `None` when the manifest sets no `limits`.
    pub limits: Option<Limits>,
    /// What errors reported through the SDK do (`on_error:`).
    pub on_error: ErrorPolicy,
    /// Free-form `config:` from the manifest, passed through to the agent.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Keys a legacy manifest carried that have no meaning here; kept, not rejected.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// True when the entry came from a legacy `startup_config.yaml` format.
    pub legacy: bool,
}

/// A script an agent runs (`script_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// As written; relative paths are relative to the agent's `cwd`.
    pub path: String,
    pub location: Location,
}

/// A dependency edge as written, with its location for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub location: Location,
}

/// How a port is used by an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortUse {
    pub port: u16,
    /// The field it came from: `port`, `health_check_port`, `config.zmq_port`,
    /// `health_check_port (implicit: port+1)`, `http health (implicit: health_check_port+1)`.
    pub field: String,
    pub kind: PortKind,
    /// Where the value was written (for implicit ports: where the agent starts).
    pub location: Location,
    /// Byte range of the value in the file text, for in-place fixes; `None` for implicit ports.
    pub span: Option<std::ops::Range<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortKind {
    /// Written explicitly in the manifest.
    Explicit,
    /// Legacy default health port `port + 1`, taken when none is written.
    ImplicitHealth,
    /// The legacy base class's HTTP health server at `health_check_port + 1`.
    /// Real only for agents built on that class, so a clash is a warning.
    LegacyHttpHealth,
}

/// A probe target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect to `host:port` succeeds.
    Tcp { host: String, port: u16 },
    /// An HTTP GET answers 2xx.
    Http { url: String },
    /// The command exits 0 (argv, no shell).
    Exec { command: Vec<String> },
    /// The legacy ZMQ health protocol: REQ `{"action": "health_check"}` to
    /// `tcp://host:port`, reply `status: ok` (see docs/legacy.md).
    Zmq { host: String, port: u16 },
}

/// When an agent counts as ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub check: ReadinessCheck,
    /// Give up (the agent failed to start) after this long.
    pub timeout: Duration,
    /// Time between probe attempts.
    pub interval: Duration,
    /// Wait this long after spawn before the first probe.
    pub initial_delay: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReadinessCheck {
    /// The agent reports READY through the SDK.
    Sdk,
    Probe(Probe),
    /// No probe: ready once it has been running for this long.
    StartPeriod(Duration),
}

/// Probing a ready agent to find out whether it hung.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that mean the agent is hung.
    pub failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    pub mode: RestartMode,
    pub backoff: Backoff,
    /// More than this many restarts within `within` marks the agent failed;
    /// `None` means no limit.
    pub max_restarts: Option<u32>,
    pub within: Duration,
    /// The backoff starts over once the agent has stayed up this long.
    pub reset_after: Duration,
    /// Exit codes that count as success for `on-failure` (default `[0]`).
    pub success_codes: Vec<i32>,
    /// What giving up on a required agent does.
    pub on_give_up: GiveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GiveUp {
    /// Stop everything and exit 1 (for required agents).
    #[default]
    Shutdown,
    /// Mark the agent failed and keep the others running.
    KeepRunning,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub interval: Duration,
    pub misses: u32,
    pub progress_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StopPolicy {
    /// Sent first; SIGKILL follows after `grace`.
    pub signal: nix::sys::signal::Signal,
    pub grace: Duration,
}

/// Error severities, least severe first (the SDK's `severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorSeverity {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
    Fatal,
}

/// What a reported error (or too many of them) does to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Kill its process group and restart it under its restart policy.
    Restart,
    /// Mark it degraded in the status until its next restart.
    Degraded,
}

/// `count` errors of `severity` or worse within `within` trigger `action`.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRate {
    pub severity: ErrorSeverity,
    pub count: u32,
    pub within: Duration,
    pub action: ErrorAction,
}

/// `on_error:` of one agent. Empty by default: errors are journaled and
/// logged only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorPolicy {
    /// One error of exactly this severity triggers the action.
    pub on_severity: Vec<(ErrorSeverity, ErrorAction)>,
    pub rate: Option<ErrorRate>,
}

/// The environment-variable form of an agent name (or a config key):
/// ASCII letters upper-cased, everything else `_`. The supervisor gives each
/// agent `<NAME>_ENDPOINT` of its dependencies under this name, so two
/// agents with the same form collide (`check` reports them).
pub fn variable_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
