//! The validated manifest: the only manifest type the rest of the crate accepts.
//!
//! Built by [`crate::manifest::validate`] from the raw (serde) form; nothing
//! downstream re-checks these values. Durations are already parsed, ports are
//! in range, commands are already split into argv, and every agent knows the
//! file and line it came from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::transport::messages::Severity;

/// Where something was written: a file and a 1-based line (and column).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Location {
    /// The manifest file, as given on the command line (not canonicalised).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (not part of `Display`, which is `file:line`).
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
    /// The entry's name, as a dependency would spell it.
    pub name: String,
    /// Where it is, and why it is not read, for a suggestion: "in ... (file:line), ...".
    pub because: String,
}

/// Where `up` serves `/metrics` and `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// The address to bind; port 0 means "pick a free port" (logged).
    pub listen: std::net::SocketAddr,
}

/// Resource limits of one agent's process tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Restart when resident memory stays above this many bytes for `grace`.
    pub memory_bytes: Option<u64>,
    /// Warn when CPU use is above this percentage of one core.
    pub cpu_percent: Option<f64>,
    /// How long memory may stay above the limit before the restart
    /// (default 5s).
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
    /// The file as given on the command line (or found by `locate`).
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
    /// Unique among the manifest's agents once `check` passed (letters,
    /// digits, `_`, `-`, `.`); the key of the agent everywhere at runtime.
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
    /// `image:`, the container image of `export kubernetes`; `None` when
    /// not written.
    pub image: Option<String>,
    /// Working directory: `cwd:` joined to the manifest's directory, for a
    /// legacy script the directory it was found from, else the manifest's
    /// directory.
    pub cwd: Option<PathBuf>,
    /// Environment added to the supervisor's own, in order.
    pub env: BTreeMap<String, String>,
    /// `port:`, the port the agent serves on.
    pub port: Option<u16>,
    /// `health_check_port:`, or for a legacy agent `port + 1` when not
    /// written.
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
    /// When the agent counts as ready (what its dependents wait for).
    pub readiness: Readiness,
    /// The probe repeated while it is ready; `None` when not configured.
    pub liveness: Option<Liveness>,
    /// When and how fast it is started again after an exit.
    pub restart: RestartPolicy,
    /// Heartbeat deadlines (watched for SDK agents only).
    pub heartbeat: Heartbeat,
    /// `idle_stop:`: stopped (gracefully, as `idle`) after its SDK
    /// heartbeats reported no work for this long; `None`: never. Only for
    /// `readiness: sdk` agents (validated).
    pub idle_stop: Option<Duration>,
    /// How it is stopped: signal, then SIGKILL after the grace.
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
    /// `replicas:` and `min_ready:`; `None` when not written (one process
    /// under the agent's own name).
    pub replicas: Option<Replicas>,
    /// Set only on the instances [`crate::manifest::replicas`] makes of an
    /// agent with `replicas`: which agent, which index.
    pub replica: Option<Replica>,
}

/// `replicas: N` of one agent: N instances `NAME-0 … NAME-(N-1)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    /// How many instances run (at least 1).
    pub count: u32,
    /// How many of them must be ready before a dependent of the agent
    /// starts (1 to `count`; default `count`).
    pub min_ready: u32,
    /// `port: 9100+`: instance i serves on `port + i`.
    pub port_range: bool,
    /// `health_check_port: 9200+`: instance i's health port is `health_check_port + i`.
    pub health_range: bool,
    /// Where `replicas:` was written.
    pub location: Location,
}

/// One instance of an agent with `replicas` (see [`crate::manifest::replicas`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// The agent as written, whose instance this is (`worker`).
    pub of: String,
    /// The instance's index, 0 to count-1 (`worker-2` has index 2).
    pub index: u32,
    /// The agent as written (with `${REPLICA}` unexpanded), from which
    /// `scale` makes further instances.
    pub template: Box<Agent>,
}

/// A script an agent runs (`script_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// As written; relative paths are relative to the agent's `cwd`.
    pub path: String,
    /// Where `script_path` was written.
    pub location: Location,
}

/// A dependency edge as written, with its location for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The agent depended on, as written (it may not exist: `check` says so).
    pub name: String,
    /// Where the name was written in `dependencies:`.
    pub location: Location,
}

/// How a port is used by an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortUse {
    /// The port number (after variables and `PORT_OFFSET` arithmetic).
    pub port: u16,
    /// The field it came from: `port`, `health_check_port`, `config.zmq_port`,
    /// `health_check_port (implicit: port+1)`, `http health (implicit: health_check_port+1)`.
    pub field: String,
    /// Written, or implied by the legacy conventions.
    pub kind: PortKind,
    /// Where the value was written (for implicit ports: where the agent starts).
    pub location: Location,
    /// Byte range of the value in the file text, for in-place fixes; `None` for implicit ports.
    pub span: Option<std::ops::Range<usize>>,
}

/// Why an agent uses a port; decides how sure a conflict is.
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
    Tcp {
        /// The agent's address, or the host of `host:port`.
        host: String,
        /// The port to connect to.
        port: u16,
    },
    /// An HTTP GET answers 2xx.
    Http {
        /// An `http://` URL (no TLS).
        url: String,
    },
    /// The command exits 0 (argv, no shell).
    Exec {
        /// The program and its arguments, run in the agent's `cwd`.
        command: Vec<String>,
    },
    /// The legacy ZMQ health protocol: REQ `{"action": "health_check"}` to
    /// `tcp://host:port`, reply `status: ok` (see docs/legacy.md).
    Zmq {
        /// The agent's address, or the host of `host:port`.
        host: String,
        /// The agent's health port.
        port: u16,
    },
}

/// When an agent counts as ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// What is checked.
    pub check: ReadinessCheck,
    /// Give up (the agent failed to start) after this long.
    pub timeout: Duration,
    /// Time between probe attempts.
    pub interval: Duration,
    /// Wait this long after spawn before the first probe.
    pub initial_delay: Duration,
}

/// What makes an agent ready.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadinessCheck {
    /// The agent reports READY through the SDK.
    Sdk,
    /// A probe succeeds once (tried every `interval` until `timeout`).
    Probe(Probe),
    /// No probe: ready once it has been running for this long.
    StartPeriod(Duration),
}

/// Probing a ready agent to find out whether it hung.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    /// What is probed.
    pub probe: Probe,
    /// Time between probes.
    pub interval: Duration,
    /// How long one probe may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive failures that mean the agent is hung.
    pub failures: u32,
}

/// When an exited agent is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// After every exit.
    Always,
    /// After an exit that is not a success (code outside `success_codes`,
    /// or killed by a signal).
    OnFailure,
    /// Never: a success ends in `Stopped`, a failure in `Failed`.
    Never,
}

/// Exponential delay before a restart: `initial × multiplier^n`, capped
/// at `max` (the supervisor adds jitter).
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth per restart (1 to 100).
    pub multiplier: f64,
}

/// `restart:` of one agent, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// How long to wait first.
    pub backoff: Backoff,
    /// The least wait before any restart, whatever the backoff says.
    pub delay: Duration,
    /// More than this many restarts within `within` marks the agent failed;
    /// `None` means no limit.
    pub max_restarts: Option<u32>,
    /// The sliding window `max_restarts` is counted in.
    pub within: Duration,
    /// The backoff starts over once the agent has stayed up this long.
    pub reset_after: Duration,
    /// Exit codes that count as success for `on-failure` (default `[0]`).
    pub success_codes: Vec<i32>,
    /// What giving up on a required agent does.
    pub on_give_up: GiveUp,
}

/// What happens once an agent's restarts are exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GiveUp {
    /// Stop everything and exit 1 (for required agents).
    #[default]
    Shutdown,
    /// Mark the agent failed and keep the others running.
    KeepRunning,
}

/// Heartbeat deadlines of an SDK agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// The interval the agent is told to beat at
    /// (`AGENT_HEARTBEAT_INTERVAL_MS`).
    pub interval: Duration,
    /// Intervals without a heartbeat after which the agent counts as hung
    /// and is killed and restarted.
    pub misses: u32,
    /// How long `last_progress_ms` may stay unchanged before the same
    /// happens; `None`: progress is not watched.
    pub progress_timeout: Option<Duration>,
}

/// How an agent is stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct StopPolicy {
    /// Sent first; SIGKILL follows after `grace`.
    pub signal: nix::sys::signal::Signal,
    /// Time between the signal and SIGKILL (skipped on a second Ctrl-C).
    pub grace: Duration,
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
    /// The least severe error that counts.
    pub severity: Severity,
    /// Errors needed to trigger (at least 1).
    pub count: u32,
    /// The sliding window they must fall in (longer than 0).
    pub within: Duration,
    /// What happens when they do.
    pub action: ErrorAction,
}

/// `on_error:` of one agent. Empty by default: errors are journaled and
/// logged only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorPolicy {
    /// One error of exactly this severity triggers the action.
    pub on_severity: Vec<(Severity, ErrorAction)>,
    /// The error-rate rule (`on_error.rate`), if any.
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
