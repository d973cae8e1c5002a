//! The native manifest format as written: serde types that mirror the YAML,
//! reject unknown fields, and generate `docs/manifest.schema.json`.
//!
//! Nothing here is validated beyond its type: `validate` turns these into
//! [`super::Manifest`]. Legacy formats are rewritten into this shape first
//! (see `legacy.rs`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

/// A manifest file in the native format.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    /// Format version. Only `1` exists.
    pub version: Option<u32>,
    /// The machine this file's agents run on unless an agent says otherwise
    /// (default: `localhost`, or the `@HOST` given on the command line).
    pub host: Option<String>,
    /// What restarting one agent does to the others (default `one_for_one`).
    pub strategy: Option<RawStrategy>,
    /// Settings every agent of this file gets unless it sets its own.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// The agents: a list of entries with `name`, or a mapping from name to entry.
    #[serde(default)]
    #[schemars(with = "AgentsSchema")]
    pub agents: Vec<RawAgent>,
    /// An HTTP listener for `/metrics` and `/health` (off when absent; the
    /// first file that sets it wins).
    pub metrics: Option<RawMetrics>,
    /// The machines of the system, by name: where each is reached and which
    /// of its agents the agents here depend on (see docs/two-hosts.md).
    #[serde(default)]
    pub hosts: BTreeMap<String, RawHost>,
}

/// One machine of the system, as written under `hosts:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    /// The address the host's agents and its supervisor are reached at
    /// (an IP or a DNS name; usually a variable such as `${MAINPC_IP}`).
    pub address: Option<String>,
    /// The port of the host's supervisor peer link (see docs/two-hosts.md).
    pub link_port: Option<i64>,
    /// The host's peer-link public key (Z85, 40 characters), as printed by
    /// `supervisor keygen` on that host.
    pub public_key: Option<String>,
    /// The address the host's own link listens on, when not `address`
    /// (e.g. `0.0.0.0`: a wildcard is used only when written here).
    pub bind: Option<String>,
    /// Agents of that host that agents here depend on, for when its own
    /// manifest is not loaded: name -> readiness probe (`{tcp: 5562}`),
    /// probed on `address`. Dependents name them `HOST/NAME` or by name alone.
    #[serde(default)]
    pub agents: BTreeMap<String, ReadinessField>,
}

/// Where `up` serves `/metrics` (Prometheus text) and `/health` (JSON).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `host:port` to listen on, e.g. `127.0.0.1:9464`; a bare port means
    /// loopback. Port 0 picks a free port (logged).
    pub listen: String,
}

/// Resource limits of one agent's process tree (the agent and its children).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Resident memory above this many MiB for `grace` restarts the agent.
    pub memory_mb: Option<u64>,
    /// CPU above this percentage of one core is reported as a warning (no kill).
    pub cpu_percent: Option<f64>,
    /// How long memory may stay above the limit before the restart (default 5s).
    pub grace: Option<RawDuration>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only describes the schema
enum AgentsSchema {
    List(Vec<RawAgent>),
    Map(BTreeMap<String, RawAgent>),
}

/// What restarting one agent does to the others, as in Erlang/OTP.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawStrategy {
    /// Restart only the agent that stopped (its dependents are warned).
    OneForOne,
    /// Also restart the agents that depend on it, transitively.
    RestForOne,
    /// Restart every agent.
    OneForAll,
}

/// Defaults for every agent of the file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Environment for every agent; an agent's own `env` wins per variable.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of agents without their own `cwd`, relative to the
    /// manifest's directory.
    pub cwd: Option<String>,
    /// Program that runs `script_path` (default `python3`).
    pub interpreter: Option<String>,
    /// Whether an agent that cannot become ready fails `up` (default true).
    pub required: Option<bool>,
    /// Readiness check of agents without their own.
    pub readiness: Option<ReadinessField>,
    /// Liveness probe of agents without their own.
    pub liveness: Option<RawLiveness>,
    /// Restart policy of agents without their own.
    pub restart: Option<RestartField>,
    /// Heartbeat deadlines of agents without their own.
    pub heartbeat: Option<RawHeartbeat>,
    /// Stop signal and grace of agents without their own.
    pub stop: Option<RawStop>,
    /// Resource limits of agents without their own.
    pub limits: Option<RawLimits>,
    /// Error policy of agents without their own.
    pub on_error: Option<RawOnError>,
}

/// One agent.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Unique name (letters, digits, `_`, `-`, `.`). Taken from the key in the mapping form.
    pub name: Option<String>,
    /// Free text for readers of the manifest; the supervisor ignores it.
    pub description: Option<String>,
    /// A group name for operating several agents at once
    /// (`supervisor restart --group NAME`); legacy `agent_groups` set it.
    pub group: Option<String>,
    /// The program and its arguments: a list, or a string split like a shell
    /// would (quotes respected; no shell runs unless `shell: true`).
    pub command: Option<RawCommand>,
    /// Run `command` (a string) with `sh -c`.
    pub shell: Option<bool>,
    /// The container image `supervisor export kubernetes` runs this agent
    /// in (e.g. `registry.example/agents:1`); `up` ignores it. Wins over
    /// `--image IMAGE`; `--image NAME=IMAGE` wins over it.
    pub image: Option<String>,
    /// A script run with `interpreter` (default `python3`), relative to `cwd`.
    pub script_path: Option<String>,
    /// Program that runs `script_path` (default: `defaults.interpreter`,
    /// else `python3`).
    pub interpreter: Option<String>,
    /// Extra arguments after `script_path`: a list, a string, or a mapping
    /// (`{k: v}` becomes `--k v`).
    pub args: Option<RawArgs>,
    /// Working directory, relative to the manifest's directory (default: that directory).
    pub cwd: Option<String>,
    /// Environment added to the supervisor's own; wins over `defaults.env`
    /// per variable.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The machine this agent runs on. `localhost`, `127.0.0.1` and `0.0.0.0`
    /// mean the manifest's own machine (legacy files use them as bind addresses).
    pub host: Option<String>,
    /// The port the agent serves on (checked for conflicts per host). With
    /// `replicas`, `9100+`: instance i serves on 9100+i.
    pub port: Option<RawPort>,
    /// The port of the agent's health endpoint (checked for conflicts; the
    /// legacy ZMQ probe's port). With `replicas`, `9200+` as for `port`.
    pub health_check_port: Option<RawPort>,
    /// Run this many instances `NAME-0 … NAME-(N-1)` (default 1, one
    /// process under the agent's own name).
    pub replicas: Option<i64>,
    /// With `replicas`: how many instances must be ready before a
    /// dependent starts (1 to `replicas`; default all).
    pub min_ready: Option<i64>,
    /// Agents that must be ready before this one starts.
    #[serde(alias = "depends_on")]
    pub dependencies: Option<Vec<String>>,
    /// A required agent that cannot become ready fails `up` (default true).
    pub required: Option<bool>,
    /// `false`: checked and planned, never started (default true).
    pub enabled: Option<bool>,
    /// `sdk`, `none`, or a probe: when the agent counts as ready (default:
    /// still running after `start_period`, 1s).
    pub readiness: Option<ReadinessField>,
    /// A probe repeated while the agent is ready; `failures` in a row
    /// restart it (default: none).
    pub liveness: Option<RawLiveness>,
    /// `always`, `on-failure`, `never`, or the full form (default `always`,
    /// 100ms ×2 up to 30s, 5 restarts in 60s).
    pub restart: Option<RestartField>,
    /// For SDK agents: how many missed heartbeats (and how long without
    /// progress) make the agent hung (default 1s × 3).
    pub heartbeat: Option<RawHeartbeat>,
    /// For SDK agents (`readiness: sdk`): stop the agent gracefully once its
    /// heartbeats have reported no work (`in_flight: 0`, no `queue_depth`,
    /// `last_progress_ms` unchanged) for this long; shown as `idle`, started
    /// again by the next RESOLVE of it or `supervisor start` (default: never).
    pub idle_stop: Option<RawDuration>,
    /// The stop signal and the grace before SIGKILL (default SIGTERM, 10s).
    pub stop: Option<RawStop>,
    /// `{memory_mb, cpu_percent, grace}`: resource limits of the agent's process tree.
    pub limits: Option<RawLimits>,
    /// What errors the agent reports through the SDK do: `{fatal: restart}`,
    /// and an error-rate rule `rate: {severity, count, within, action}`.
    pub on_error: Option<RawOnError>,
    /// Free-form settings passed to the agent. Top-level keys named `port` or
    /// ending in `_port` with a number are checked as ports the agent uses.
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Keys a legacy manifest carried that have no meaning here; kept as they were.
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// `true`: a program built on the legacy BaseAgent (what `supervisor
    /// convert` writes for legacy entries): its health port defaults to
    /// `port+1`, its HTTP health server is at `health_check_port+1`, it is
    /// probed over ZMQ, and a relative `script_path` is found from the
    /// manifest's directory upwards, as the legacy launcher did.
    pub legacy: Option<bool>,
}

/// `"./db --port 7200"` or `["./db", "--port", "7200"]`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawCommand {
    /// One string, split like a shell would (quotes respected), unless
    /// `shell: true` hands it to `sh -c` whole.
    Line(String),
    /// The program and its arguments, used as they are.
    Argv(Vec<String>),
}

/// Arguments: a list, a string, or a mapping turned into `--key value` flags.
#[derive(Debug, Clone, PartialEq)]
pub enum RawArgs {
    /// One string, split like a shell would.
    Line(String),
    /// The arguments as they are.
    Argv(Vec<String>),
    /// `{k: v}` pairs in file order, each becoming `--k v`.
    Flags(Vec<(String, String)>),
}

/// When an exited agent is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RawRestartMode {
    /// After every exit, successful or not.
    Always,
    /// After an exit whose code is not in `success_codes`, or by a signal.
    #[serde(alias = "on_failure")]
    OnFailure,
    /// Never; the agent stays stopped (or failed) after it exits.
    Never,
}

/// `always` | `on-failure` | `never`, or the full form.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    /// Default `always`.
    pub policy: Option<RawRestartMode>,
    /// The delay before each restart (default 100ms, ×2, up to 30s).
    pub backoff: Option<RawBackoff>,
    /// The least wait before any restart, even after a long healthy run
    /// (default 0: such a run restarts at once).
    pub delay: Option<RawDuration>,
    /// More than this many restarts within `within` marks the agent failed (default 5).
    pub max_restarts: Option<u32>,
    /// Window for `max_restarts` (default 60s).
    pub within: Option<RawDuration>,
    /// Uptime after which the backoff starts over (default 30s).
    pub reset_after: Option<RawDuration>,
    /// Exit codes that count as success for `on-failure` (default `[0]`).
    pub success_codes: Option<Vec<i32>>,
    /// `shutdown` (default for required agents) or `keep-running`.
    pub on_give_up: Option<RawGiveUp>,
}

/// What happens once an agent's restarts are exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RawGiveUp {
    /// Stop every agent and exit 1.
    Shutdown,
    /// Mark the agent failed and keep the others running.
    #[serde(alias = "keep_running")]
    KeepRunning,
}

/// Exponential delay between restarts: `initial`, then × `multiplier` per
/// restart, never above `max`; starts over after `reset_after` of uptime.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    /// First delay (default 100ms).
    pub initial: Option<RawDuration>,
    /// Cap (default 30s).
    pub max: Option<RawDuration>,
    /// Growth per restart (default 2).
    pub multiplier: Option<f64>,
}

/// `sdk`, `none`, or a probe with timings: `{ tcp: 7200, timeout: 30s }`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawReadiness {
    /// Ready when the agent sends READY through the SDK.
    #[serde(default)]
    pub sdk: bool,
    /// A TCP connect succeeds: a port, or `host:port`.
    pub tcp: Option<RawTarget>,
    /// An HTTP GET answers 2xx.
    pub http: Option<String>,
    /// The command exits 0.
    pub exec: Option<RawCommand>,
    /// The legacy ZMQ health protocol (docs/legacy.md): a port or `host:port`.
    pub zmq: Option<RawTarget>,
    /// Give up after this long (default 30s).
    pub timeout: Option<RawDuration>,
    /// Between probe attempts (default 100ms).
    pub interval: Option<RawDuration>,
    /// Before the first probe (default 0).
    pub initial_delay: Option<RawDuration>,
    /// With no probe: ready once running this long (default 1s).
    pub start_period: Option<RawDuration>,
}

/// Probing a ready agent: `failures` failed probes in a row mean it hung.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLiveness {
    /// A TCP connect succeeds: a port, or `host:port`.
    pub tcp: Option<RawTarget>,
    /// An HTTP GET of this `http://` URL answers 2xx.
    pub http: Option<String>,
    /// The command (no shell) exits 0.
    pub exec: Option<RawCommand>,
    /// The legacy ZMQ health protocol (docs/legacy.md): a port or `host:port`.
    pub zmq: Option<RawTarget>,
    /// Time between probes (default 5s).
    pub interval: Option<RawDuration>,
    /// How long one probe may take before it counts as failed (default 1s).
    pub timeout: Option<RawDuration>,
    /// Failed probes in a row that restart the agent (default 3).
    pub failures: Option<u32>,
}

/// Heartbeat deadlines of an SDK agent: no heartbeat for `interval ×
/// misses` while the process lives SIGKILLs its group and restarts it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    /// The interval the agent is told to beat at (`AGENT_HEARTBEAT_INTERVAL_MS`;
    /// default 1s).
    pub interval: Option<RawDuration>,
    /// Missed intervals before the agent counts as hung (default 3).
    pub misses: Option<u32>,
    /// Restart when `last_progress_ms` in the heartbeats stops changing for
    /// this long (default: not watched).
    pub progress_timeout: Option<RawDuration>,
}

/// What one reported error of a severity does (default: logged only).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOnError {
    /// What one `debug` error does.
    pub debug: Option<RawErrorAction>,
    /// What one `info` error does.
    pub info: Option<RawErrorAction>,
    /// What one `warning` error does.
    pub warning: Option<RawErrorAction>,
    /// What one `error` error does.
    pub error: Option<RawErrorAction>,
    /// What one `critical` error does.
    pub critical: Option<RawErrorAction>,
    /// What one `fatal` error does (e.g. `restart`).
    pub fatal: Option<RawErrorAction>,
    /// `count` errors of `severity` or worse within `within` -> `action`.
    pub rate: Option<RawErrorRate>,
}

/// `restart` (kill the process group, restart under the restart policy),
/// `degraded` (mark the agent degraded in the status until it restarts), or
/// `ignore` (logged and journaled only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawErrorAction {
    /// SIGKILL the process group and restart under `restart` (cause `error`).
    Restart,
    /// Mark the agent degraded in `status` until its next restart.
    Degraded,
    /// Journal and log only.
    Ignore,
}

/// An error-rate rule: `count` errors of `severity` or worse within
/// `within` trigger `action`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawErrorRate {
    /// Errors of this severity or worse count (default `error`).
    pub severity: Option<crate::transport::messages::Severity>,
    /// How many errors trigger the action (at least 1).
    pub count: u32,
    /// The sliding window they must fall in (longer than 0).
    pub within: RawDuration,
    /// Default `restart`.
    pub action: Option<RawErrorAction>,
}

/// How an agent is stopped: `signal`, then SIGKILL after `grace`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    /// `SIGTERM` (default), `TERM`, `SIGINT`, ... or a number.
    pub signal: Option<String>,
    /// Time between the signal and SIGKILL (default 10s).
    pub grace: Option<RawDuration>,
}

/// A port, or `host:port`.
#[derive(Debug, Clone, PartialEq)]
pub enum RawTarget {
    /// A port on the agent's address (range checked by `validate`).
    Port(i64),
    /// `host:port`, as written.
    Address(String),
}

/// A port (`9100`), or with `replicas` the start of a range (`9100+`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawPort {
    /// One port (range checked by `validate`).
    Fixed(i64),
    /// `9100+`: instance i of a replicated agent uses 9100+i.
    RangeStart(i64),
}

impl RawPort {
    /// The port written (the first of a range).
    pub fn first(self) -> i64 {
        match self {
            RawPort::Fixed(port) | RawPort::RangeStart(port) => port,
        }
    }
}

/// `500ms`, `1s`, `2m`, `1h`, or a plain number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawDuration(pub Duration);

/// Parses `500ms`, `1.5s`, `2m`, `1h`, `30` (seconds); also `us`/`µs`,
/// `sec`, `secs`, `min`, `mins`. `None` for any other unit, a negative or
/// unreadable number.
///
/// ```
/// use std::time::Duration;
/// use supervisor::manifest::raw::parse_duration;
/// assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
/// assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
/// assert_eq!(parse_duration("3 days"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "us" | "µs" => value / 1_000_000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 500ms, 1s, 2m or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawDuration, E> {
                Ok(RawDuration(Duration::from_secs(value)))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawDuration, E> {
                u64::try_from(value)
                    .map(|seconds| RawDuration(Duration::from_secs(seconds)))
                    .map_err(|_| E::custom(format!("a duration cannot be negative ({value})")))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<RawDuration, E> {
                Duration::try_from_secs_f64(value)
                    .map(RawDuration)
                    .map_err(|_| E::custom(format!("invalid duration {value}")))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawDuration, E> {
                parse_duration(text)
                    .map(RawDuration)
                    .ok_or_else(|| E::custom(format!("invalid duration `{text}` (expected e.g. 500ms, 1s, 2m or a number of seconds)")))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl JsonSchema for RawDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: `500ms`, `1s`, `2m`, `1h`, or a number of seconds.",
            "anyOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9.]+ ?(us|ms|s|sec|secs|m|min|mins|h)?$" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = RawPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port, or with `replicas` the start of a range such as `9100+`")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawPort, E> {
                Ok(RawPort::Fixed(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawPort, E> {
                Ok(RawPort::Fixed(i64::try_from(value).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawPort, E> {
                let text = text.trim();
                let (number, range) = match text.strip_suffix('+') {
                    Some(start) => (start.trim_end(), true),
                    None => (text, false),
                };
                match number.parse::<i64>() {
                    Ok(port) if range => Ok(RawPort::RangeStart(port)),
                    Ok(port) => Ok(RawPort::Fixed(port)),
                    Err(_) => Err(E::custom(format!(
                        "expected an integer (a port), or with `replicas` the start of a range such as `9100+`, found `{text}`"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

impl JsonSchema for RawPort {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A port, or with `replicas` the start of a range: `9100+` (instance i uses 9100+i).",
            "anyOf": [
                { "type": "integer", "minimum": 1, "maximum": 65535 },
                { "type": "string", "pattern": "^[0-9]+ ?\\+?$" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for RawTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TargetVisitor;
        impl Visitor<'_> for TargetVisitor {
            type Value = RawTarget;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port or host:port")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawTarget, E> {
                Ok(RawTarget::Port(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawTarget, E> {
                Ok(RawTarget::Port(i64::try_from(value).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawTarget, E> {
                match text.trim().parse::<i64>() {
                    Ok(port) => Ok(RawTarget::Port(port)),
                    Err(_) => Ok(RawTarget::Address(text.to_string())),
                }
            }
        }
        deserializer.deserialize_any(TargetVisitor)
    }
}

impl JsonSchema for RawTarget {
    fn schema_name() -> Cow<'static, str> {
        "Target".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A port on the agent's address, or `host:port`.",
            "anyOf": [{ "type": "integer", "minimum": 1, "maximum": 65535 }, { "type": "string" }]
        })
    }
}

/// Reads a string or a list of strings (anything else is an error at its line).
struct StringOrList;

impl<'de> Visitor<'de> for StringOrList {
    type Value = Result<String, Vec<String>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Ok(text.to_string()))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Ok(value.to_string()))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<ScalarText>()? {
            items.push(item.0);
        }
        Ok(Err(items))
    }
}

/// Any scalar read as its text (`7200`, `true` and `x` alike).
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(ScalarText)
    }
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match deserializer.deserialize_any(StringOrList)? {
            Ok(line) => RawCommand::Line(line),
            Err(argv) => RawCommand::Argv(argv),
        })
    }
}

impl JsonSchema for RawCommand {
    fn schema_name() -> Cow<'static, str> {
        "Command".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A command: a string split like a shell would (no shell runs), or a list of arguments.",
            "anyOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }]
        })
    }
}

impl<'de> Deserialize<'de> for RawArgs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = RawArgs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a list of strings, or a mapping of flags")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawArgs, E> {
                Ok(RawArgs::Line(text.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawArgs, E> {
                Ok(RawArgs::Argv(Vec::new()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<RawArgs, A::Error> {
                match StringOrList.visit_seq(seq)? {
                    Ok(line) => Ok(RawArgs::Line(line)),
                    Err(argv) => Ok(RawArgs::Argv(argv)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawArgs, A::Error> {
                let mut flags = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, ScalarText>()? {
                    flags.push((key, value.0));
                }
                Ok(RawArgs::Flags(flags))
            }
        }
        deserializer.deserialize_any(ArgsVisitor)
    }
}

impl JsonSchema for RawArgs {
    fn schema_name() -> Cow<'static, str> {
        "Args".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Arguments: a string, a list, or a mapping turned into `--key value` flags.",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" } },
                { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } },
                { "type": "null" }
            ]
        })
    }
}

/// Lets a field be either a word or its full mapping form.
fn word_or_map<'de, D, T>(
    deserializer: D,
    word: impl FnOnce(&str) -> Option<T>,
    expected: &'static str,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct WordOrMap<F, T> {
        word: F,
        expected: &'static str,
        marker: std::marker::PhantomData<T>,
    }
    impl<'de, F: FnOnce(&str) -> Option<T>, T: Deserialize<'de>> Visitor<'de> for WordOrMap<F, T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expected)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.word)(text).ok_or_else(|| {
                E::custom(format!(
                    "`{text}` is not valid here; expected {}",
                    self.expected
                ))
            })
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(WordOrMap {
        word,
        expected,
        marker: std::marker::PhantomData,
    })
}

/// Deserializes `readiness:`: `sdk`, `none`, or the mapping form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadinessField(pub RawReadiness);

impl<'de> Deserialize<'de> for ReadinessField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        word_or_map(
            deserializer,
            |word| match word {
                "sdk" => Some(RawReadiness {
                    sdk: true,
                    ..RawReadiness::default()
                }),
                "none" => Some(RawReadiness::default()),
                _ => None,
            },
            "`sdk`, `none`, or a mapping like `{ tcp: 7200, timeout: 30s }`",
        )
        .map(ReadinessField)
    }
}

/// Deserializes `restart:`: `always`, `on-failure`, `never`, or the mapping form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartField(pub RawRestart);

impl<'de> Deserialize<'de> for RestartField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        word_or_map(
            deserializer,
            |word| {
                let policy = match word {
                    "always" => RawRestartMode::Always,
                    "on-failure" | "on_failure" => RawRestartMode::OnFailure,
                    "never" | "no" => RawRestartMode::Never,
                    _ => return None,
                };
                Some(RawRestart { policy: Some(policy), ..RawRestart::default() })
            },
            "`always`, `on-failure`, `never`, or a mapping with `policy`, `backoff`, `max_restarts`, `within`",
        )
        .map(RestartField)
    }
}

impl JsonSchema for ReadinessField {
    fn schema_name() -> Cow<'static, str> {
        "Readiness".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let full = generator.subschema_for::<RawReadiness>();
        json_schema!({
            "description": "When the agent counts as ready: `sdk`, `none`, or a probe with timings (at most one of tcp, http, exec, zmq).",
            "anyOf": [{ "type": "string", "enum": ["sdk", "none"] }, full]
        })
    }
}

impl JsonSchema for RestartField {
    fn schema_name() -> Cow<'static, str> {
        "Restart".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let full = generator.subschema_for::<RawRestart>();
        json_schema!({
            "description": "Restart policy: `always` (default), `on-failure`, `never`, or the full form.",
            "anyOf": [{ "type": "string", "enum": ["always", "on-failure", "never"] }, full]
        })
    }
}
