//! The agent wire protocol, version 1 (`docs/protocol.md` is its prose
//! form): the JSON an agent sends ([`AgentMessage`]), the JSON the supervisor
//! answers ([`Reply`]), the error record of the error bus ([`ErrorRecord`],
//! also one line of `errors.jsonl`) and the normalisation of the four legacy
//! `ERROR:` wire shapes into that record.
//!
//! Owns encoding, decoding and validation of single messages. Does not own
//! sockets, frames routing, authentication or any state.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version every message carries in `"v"`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message body (the JSON frame) the endpoint accepts; larger
/// ones are rejected and counted as oversized.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Longest agent name or resolve target accepted.
pub const MAX_NAME_BYTES: usize = 256;

/// What an agent message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// First message after connecting: announces `pid` and `sdk`; answered
    /// by `welcome`.
    Hello,
    /// The agent is ready (for `readiness: sdk`), optionally with the
    /// `endpoint` it serves; answered by `ack`.
    Ready,
    /// The agent is alive, optionally with a progress `payload`; answered
    /// only when `ack` is true.
    Heartbeat,
    /// An error report in `error`; journaled, published on the error bus
    /// and handed to the agent's `on_error` policy.
    Error,
    /// Where is agent `name`, and in which state? Answered by `resolved`.
    Resolve,
}

/// One message from an agent: the JSON frame after the optional empty
/// delimiter. Fields not used by `kind` are ignored; unknown fields too, so
/// later versions can add optional ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMessage {
    /// Must be [`PROTOCOL_VERSION`].
    pub v: u32,
    /// What the message is (the JSON key is `"type"`).
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// The sender's agent name (1 to [`MAX_NAME_BYTES`] bytes); must be an
    /// agent the supervisor started.
    pub agent: String,
    /// The sender's current `AGENT_TOKEN`; a message with another token is
    /// rejected (`bad token`).
    pub token: String,
    /// Chosen by the agent, echoed in the reply (0 when the agent does not care).
    #[serde(default)]
    pub seq: u64,
    /// HEARTBEAT and ERROR are answered only when this is true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ack: bool,
    /// HELLO: the agent's process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// HELLO: SDK name and version, e.g. `rust/0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
    /// HEARTBEAT: the optional progress payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<HeartbeatPayload>,
    /// ERROR: the error itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorFields>,
    /// RESOLVE: the agent to look up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// READY (optional): where this agent serves, e.g. `tcp://127.0.0.1:41234`
    /// after binding port 0; RESOLVE answers it to other agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// For `skip_serializing_if`: `ack` is left out when false.
fn is_false(value: &bool) -> bool {
    !*value
}

impl AgentMessage {
    /// A message of `kind` with nothing but the envelope filled in.
    pub fn new(kind: MessageKind, agent: &str, token: &str, seq: u64) -> AgentMessage {
        AgentMessage {
            v: PROTOCOL_VERSION,
            kind,
            agent: agent.to_string(),
            token: token.to_string(),
            seq,
            ack: false,
            pid: None,
            sdk: None,
            payload: None,
            error: None,
            name: None,
            endpoint: None,
        }
    }

    /// The JSON frame. Nothing is checked: [`AgentMessage::decode`] is
    /// where limits are enforced.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a message of strings and numbers always serialises")
    }

    /// Parses and checks one JSON frame: version, names, required fields.
    ///
    /// # Errors
    ///
    /// A one-line reason (sent back to the agent as `malformed message:
    /// <reason>`) when the frame is not JSON of this shape, `v` is not
    /// [`PROTOCOL_VERSION`], `agent` is empty or longer than
    /// [`MAX_NAME_BYTES`], an ERROR has no `error` object or a RESOLVE no
    /// valid `name`. The size limit [`MAX_MESSAGE_BYTES`] is checked by the
    /// endpoint before this is called.
    ///
    /// ```
    /// use supervisor::transport::messages::{AgentMessage, MessageKind};
    /// let frame = br#"{"v":1,"type":"heartbeat","agent":"api","token":"t"}"#;
    /// let message = AgentMessage::decode(frame).unwrap();
    /// assert_eq!(message.kind, MessageKind::Heartbeat);
    /// assert!(AgentMessage::decode(br#"{"v":2,"type":"hello","agent":"api","token":"t"}"#).is_err());
    /// ```
    pub fn decode(frame: &[u8]) -> Result<AgentMessage, String> {
        let message: AgentMessage =
            serde_json::from_slice(frame).map_err(|error| format!("invalid JSON: {error}"))?;
        if message.v != PROTOCOL_VERSION {
            return Err(format!(
                "unsupported protocol version {} (this supervisor speaks {PROTOCOL_VERSION})",
                message.v
            ));
        }
        if message.agent.is_empty() || message.agent.len() > MAX_NAME_BYTES {
            return Err("`agent` must be 1 to 256 bytes".into());
        }
        match message.kind {
            MessageKind::Error if message.error.is_none() => {
                Err("ERROR without an `error` object".into())
            }
            MessageKind::Resolve
                if message
                    .name
                    .as_ref()
                    .is_none_or(|name| name.is_empty() || name.len() > MAX_NAME_BYTES) =>
            {
                Err("RESOLVE without a valid `name`".into())
            }
            _ => Ok(message),
        }
    }
}

/// The small progress payload a heartbeat may carry; the supervisor keeps the
/// latest one per agent and shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatPayload {
    /// Work waiting to be processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    /// Work being processed now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    /// When the agent last made progress, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_ms: Option<u64>,
    /// Anything else the agent wants shown (kept small: the whole message is
    /// limited to [`MAX_MESSAGE_BYTES`]).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub custom: Map<String, Value>,
    /// The agent's circuit breakers (filled in by the SDK at each heartbeat
    /// from its [`super::Breakers`]); the supervisor derives `degraded`
    /// from the open ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breakers: Vec<super::breaker::BreakerReport>,
}

/// How bad an error is, from least to most severe (the derived order is
/// that order, so `severity >= Severity::Error` means "error or worse"):
/// the one severity type of the crate (error bus messages, `on_error`
/// policies, manifest problems, where only `Error` and `Warning` occur).
///
/// The supervisor itself only logs and journals a severity; what it does
/// beyond that (restart, mark degraded) is the agent's `on_error` policy in
/// the manifest.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Diagnostic detail; logged at debug level.
    Debug,
    /// Worth knowing, nothing is wrong.
    Info,
    /// Something is off but the agent carries on as normal.
    Warning,
    /// An operation failed; the agent carries on.
    Error,
    /// The agent can barely do its job (e.g. a dependency is gone).
    Critical,
    /// The agent cannot continue; typically mapped to `restart` by
    /// `on_error: {fatal: restart}`.
    Fatal,
}

impl Severity {
    /// Every severity, least severe first.
    pub const ALL: [Severity; 6] = [
        Severity::Debug,
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
        Severity::Fatal,
    ];

    /// The lowercase wire name (also the first part of the bus topic).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
            Severity::Fatal => "fatal",
        }
    }

    /// Lenient parsing for legacy senders: case-insensitive, common aliases;
    /// `None` when unrecognised.
    ///
    /// ```
    /// use supervisor::transport::Severity;
    /// assert_eq!(Severity::parse_lenient(" WARN "), Some(Severity::Warning));
    /// assert_eq!(Severity::parse_lenient("high"), Some(Severity::Error));
    /// assert_eq!(Severity::parse_lenient("bad"), None);
    /// ```
    pub fn parse_lenient(text: &str) -> Option<Severity> {
        match text.trim().to_ascii_lowercase().as_str() {
            "debug" | "trace" => Some(Severity::Debug),
            "info" | "low" | "notice" => Some(Severity::Info),
            "warning" | "warn" | "medium" => Some(Severity::Warning),
            "error" | "high" | "err" => Some(Severity::Error),
            "critical" | "crit" | "severe" => Some(Severity::Critical),
            "fatal" | "emergency" | "panic" => Some(Severity::Fatal),
            _ => None,
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The `error` object of an ERROR message (the agent and token are in the envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFields {
    /// How bad it is; chooses the `on_error` action and the bus topic.
    pub severity: Severity,
    /// The human-readable text, one line preferred.
    pub message: String,
    /// A short machine-readable category, e.g. `timeout`, `database`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Free-form key/value detail (host, attempt, request id ...); secrets
    /// are redacted by the supervisor before it is written or published.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
    /// RFC 3339 UTC time the error happened; the supervisor's receive time
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Ties this error to a request or job that crosses agents, so
    /// `supervisor errors` can group them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// Where an error record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorSource {
    /// An authenticated ERROR message on the agent endpoint.
    Sdk,
    /// A legacy `ERROR:` message on the legacy port (not authenticated).
    Legacy,
    /// The supervisor itself.
    Supervisor,
    /// Another host's error bus, forwarded by the peer link (`context.host`
    /// names the host; `agent` is `HOST/NAME`).
    Peer,
}

/// One error on the bus: a line of `errors.jsonl` and the body of a PUB message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// RFC 3339 UTC, millisecond precision.
    pub timestamp: String,
    /// The agent that reported it (for [`ErrorSource::Legacy`], the name
    /// the legacy sender claims; it is not authenticated).
    pub agent: String,
    /// How bad it is; the first part of [`ErrorRecord::topic`].
    pub severity: Severity,
    /// A short machine-readable category; empty when the sender gave none.
    #[serde(default)]
    pub kind: String,
    /// The human-readable text.
    pub message: String,
    /// Free-form detail, after redaction; legacy fields without a home of
    /// their own end up here.
    #[serde(default)]
    pub context: Map<String, Value>,
    /// See [`ErrorFields::correlation_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Which door it came in by; only [`ErrorSource::Sdk`] is authenticated.
    pub source: ErrorSource,
}

impl ErrorRecord {
    /// The record of an authenticated ERROR message from `agent`.
    pub fn from_agent(agent: &str, fields: ErrorFields) -> ErrorRecord {
        ErrorRecord {
            timestamp: fields.timestamp.unwrap_or_else(now_rfc3339),
            agent: agent.to_string(),
            severity: fields.severity,
            kind: fields.kind,
            message: fields.message,
            context: fields.context,
            correlation_id: fields.correlation_id,
            source: ErrorSource::Sdk,
        }
    }

    /// The PUB topic: `<severity>.<agent>`, so subscribers filter by prefix
    /// (`fatal.`, `error.api`).
    pub fn topic(&self) -> String {
        format!("{}.{}", self.severity.as_str(), self.agent)
    }
}

/// An agent's state as RESOLVE reports it: the wire form of the
/// supervisor's own states (`supervisor status` shows the same words).
/// Unknown words decode to [`AgentState::Unknown`], so an older SDK keeps
/// working against a newer supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Not started: waiting for its dependencies to be ready (also said of
    /// an agent blocked by a dependency that failed for good).
    Pending,
    /// Its process runs but readiness has not been confirmed.
    Starting,
    /// Ready: its readiness check passed; safe to connect to.
    Ready,
    /// Exited; waiting out the restart backoff before the next start.
    BackingOff,
    /// Asked to stop; waiting for the process to exit within its grace.
    Stopping,
    /// Exited for good without fault, or stopped by shutdown or an operator.
    Stopped,
    /// Cannot be started, or its restarts are exhausted.
    Failed,
    /// Not known to the supervisor, or a state this SDK does not know yet.
    #[serde(other)]
    Unknown,
}

/// What a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// To HELLO.
    Welcome,
    /// To READY, and to HEARTBEAT/ERROR sent with `"ack": true`.
    Ack,
    /// To RESOLVE.
    Resolved,
    /// The message was refused; `reason` says why.
    Rejected,
}

/// A message from the supervisor to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The protocol version, always [`PROTOCOL_VERSION`] from this
    /// supervisor.
    pub v: u32,
    /// What the reply answers (the JSON key is `"type"`).
    #[serde(rename = "type")]
    pub kind: ReplyKind,
    /// The `seq` of the message answered (0 when it could not be read).
    #[serde(default)]
    pub seq: u64,
    /// `rejected`: why, e.g. `bad token`, `unknown agent`, `busy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RESOLVE: the name asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// RESOLVE: whether the supervisor knows that agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    /// RESOLVE: where to connect, e.g. `tcp://127.0.0.1:7200`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// RESOLVE: the agent's current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<AgentState>,
    /// RESOLVE of an agent with `replicas` (`worker`): each of its
    /// instances by index; `endpoint` and `state` are then those of the
    /// first ready instance (else the first). Absent for a plain agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<Instance>>,
}

/// One instance of an agent with `replicas`, in a RESOLVE reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `worker-2`.
    pub name: String,
    /// Where to connect; absent when it has no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Its current state.
    pub state: AgentState,
}

impl Reply {
    /// A reply of `kind` to message `seq` with no other field.
    pub fn new(kind: ReplyKind, seq: u64) -> Reply {
        Reply {
            v: PROTOCOL_VERSION,
            kind,
            seq,
            reason: None,
            name: None,
            found: None,
            endpoint: None,
            state: None,
            instances: None,
        }
    }

    /// A rejection with its reason.
    pub fn rejected(seq: u64, reason: &str) -> Reply {
        Reply {
            reason: Some(reason.to_string()),
            ..Reply::new(ReplyKind::Rejected, seq)
        }
    }

    /// The JSON frame sent to the agent.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reply of strings and numbers always serialises")
    }

    /// Parses a reply frame (agent side). Lenient: unknown fields are
    /// ignored and the version is not checked, so a newer supervisor's
    /// replies still read. Fails only when the frame is not a reply's JSON.
    pub fn decode(frame: &[u8]) -> Result<Reply, String> {
        serde_json::from_slice(frame).map_err(|error| format!("invalid reply: {error}"))
    }
}

/// Current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339_millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds since the Unix epoch now.
pub fn now_unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// `1700000000123` -> `2023-11-14T22:13:20.123Z` (proleptic Gregorian, UTC).
pub fn format_rfc3339_millis(unix_millis: u64) -> String {
    let seconds = unix_millis / 1000;
    let millis = unix_millis % 1000;
    let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX / 2);
    let seconds_of_day = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        seconds_of_day / 3600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60
    )
}

/// Normalises one legacy error-bus message (the frames of a SUB socket
/// subscribed to `ERROR`) into an [`ErrorRecord`]. Accepted shapes:
///
/// 1. one frame `ERROR:` + JSON object;
/// 2. two frames `ERROR`, JSON object;
/// 3. two frames `ERROR:`, JSON object;
/// 4. one frame of text `ERROR:<agent>:<type>:<message>`.
///
/// JSON field names vary between legacy senders; every known alias is read
/// (see `docs/protocol.md`), and fields without a home go into `context`.
pub fn parse_legacy_error(frames: &[Vec<u8>]) -> Result<ErrorRecord, String> {
    let body: &[u8] = match frames {
        [single] => single
            .strip_prefix(b"ERROR:")
            .ok_or("single frame does not start with `ERROR:`")?,
        [topic, body] if topic.as_slice() == b"ERROR" || topic.as_slice() == b"ERROR:" => body,
        [topic, ..] => {
            return Err(format!(
                "unknown legacy shape: {} frame(s), topic {:?}",
                frames.len(),
                String::from_utf8_lossy(&topic[..topic.len().min(32)])
            ));
        }
        [] => return Err("empty message".into()),
    };
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let value: Value =
            serde_json::from_str(trimmed).map_err(|error| format!("invalid JSON: {error}"))?;
        match value {
            Value::Object(object) => Ok(normalise_legacy_object(object)),
            _ => Err("JSON body is not an object".into()),
        }
    } else if frames.len() == 1 {
        // Shape 4: ERROR:<agent>:<type>:<message>; the message may contain ':'.
        let mut parts = text.splitn(3, ':');
        let agent = parts.next().unwrap_or_default();
        let kind = parts
            .next()
            .ok_or("text shape without `:<type>:<message>`")?;
        let message = parts.next().ok_or("text shape without `:<message>`")?;
        if agent.is_empty() {
            return Err("text shape with an empty agent".into());
        }
        Ok(ErrorRecord {
            timestamp: now_rfc3339(),
            agent: agent.to_string(),
            severity: Severity::Error,
            kind: kind.to_string(),
            message: message.to_string(),
            context: Map::new(),
            correlation_id: None,
            source: ErrorSource::Legacy,
        })
    } else {
        Err("second frame is not a JSON object".into())
    }
}

/// Removes and returns the first of `keys` present and not null, as text
/// (a number or object becomes its JSON); later aliases stay in `object`.
fn take_string(object: &mut Map<String, Value>, keys: &[&str]) -> Option<String> {
    for key in keys {
        match object.remove(*key) {
            Some(Value::String(text)) => return Some(text),
            Some(Value::Null) | None => {}
            Some(other) => return Some(other.to_string()),
        }
    }
    None
}

/// One legacy JSON error object as a record: each field read from its
/// known aliases (and from `error_data` where `error_publisher.py` nests
/// them), everything left over kept in `context`.
fn normalise_legacy_object(mut object: Map<String, Value>) -> ErrorRecord {
    // error_publisher.py nests the details under `error_data`.
    let mut nested = match object.remove("error_data") {
        Some(Value::Object(nested)) => nested,
        Some(other) => {
            object.insert("error_data".into(), other);
            Map::new()
        }
        None => Map::new(),
    };
    let message_type = take_string(&mut object, &["message_type"]);
    let agent = take_string(
        &mut object,
        &["agent", "source", "agent_name", "source_agent"],
    )
    .unwrap_or_else(|| "unknown".into());
    let kind = take_string(&mut object, &["error_type", "type", "category", "kind"])
        .or_else(|| take_string(&mut nested, &["error_type", "type", "category"]))
        .unwrap_or_default();
    let severity_text = take_string(&mut object, &["severity", "level"])
        .or_else(|| take_string(&mut nested, &["severity", "level"]));
    let severity = severity_text
        .as_deref()
        .and_then(Severity::parse_lenient)
        .unwrap_or(if message_type.as_deref() == Some("critical_alert") {
            Severity::Critical
        } else {
            Severity::Error
        });
    let correlation_id = take_string(&mut object, &["correlation_id", "error_id", "id"])
        .or_else(|| take_string(&mut nested, &["error_id", "correlation_id"]));
    let timestamp = match object.remove("timestamp") {
        Some(Value::String(text)) => text,
        Some(Value::Number(number)) => number
            .as_f64()
            .map(|seconds| format_rfc3339_millis((seconds * 1000.0).max(0.0) as u64))
            .unwrap_or_else(now_rfc3339),
        _ => now_rfc3339(),
    };
    let mut context = Map::new();
    for key in ["context", "details"] {
        match object.remove(key).or_else(|| nested.remove(key)) {
            Some(Value::Object(map)) => context.extend(map),
            Some(Value::Null) | None => {}
            Some(other) => {
                context.insert(key.to_string(), other);
            }
        }
    }
    let message = take_string(&mut object, &["message", "error", "msg"])
        .or_else(|| take_string(&mut nested, &["message", "error"]))
        .or_else(|| {
            context
                .get("details")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    if let Some(message_type) = message_type {
        context.insert("message_type".into(), Value::String(message_type));
    }
    // Nothing is dropped: what has no field of its own goes into the context.
    context.extend(nested);
    context.extend(object);
    ErrorRecord {
        timestamp,
        agent,
        severity,
        kind,
        message,
        context,
        correlation_id,
        source: ErrorSource::Legacy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_message_round_trips_and_is_validated() {
        let mut message = AgentMessage::new(MessageKind::Heartbeat, "worker", "secret", 7);
        message.payload = Some(HeartbeatPayload {
            queue_depth: Some(3),
            ..HeartbeatPayload::default()
        });
        let decoded = AgentMessage::decode(&message.encode()).unwrap();
        assert_eq!(decoded, message);

        let mut wrong_version = message.clone();
        wrong_version.v = 2;
        assert!(
            AgentMessage::decode(&wrong_version.encode())
                .unwrap_err()
                .contains("version")
        );
        let resolve = AgentMessage::new(MessageKind::Resolve, "worker", "secret", 1);
        assert!(AgentMessage::decode(&resolve.encode()).is_err());
        let error = AgentMessage::new(MessageKind::Error, "worker", "secret", 1);
        assert!(AgentMessage::decode(&error.encode()).is_err());
        assert!(AgentMessage::decode(b"{not json").is_err());
        assert!(
            AgentMessage::decode(br#"{"v":1,"type":"dance","agent":"a","token":"t"}"#).is_err()
        );
    }

    #[test]
    fn minimal_wire_json_is_accepted() {
        let message =
            AgentMessage::decode(br#"{"v":1,"type":"ready","agent":"a","token":"t","extra":1}"#)
                .unwrap();
        assert_eq!(message.kind, MessageKind::Ready);
        assert_eq!(message.seq, 0);
        assert!(!message.ack);
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_rfc3339_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn legacy_single_frame_json() {
        let frame = br#"ERROR:{"source":"TTS","timestamp":"2025-07-01T10:00:00","severity":"warning","message":"slow","context":{"ms":900}}"#.to_vec();
        let record = parse_legacy_error(&[frame]).unwrap();
        assert_eq!(record.agent, "TTS");
        assert_eq!(record.severity, Severity::Warning);
        assert_eq!(record.message, "slow");
        assert_eq!(record.context["ms"], 900);
        assert_eq!(record.timestamp, "2025-07-01T10:00:00");
        assert_eq!(record.source, ErrorSource::Legacy);
        assert_eq!(record.topic(), "warning.TTS");
    }

    #[test]
    fn legacy_two_frames_with_and_without_colon() {
        for topic in [b"ERROR".to_vec(), b"ERROR:".to_vec()] {
            let body =
                br#"{"timestamp":1700000000.5,"agent":"Memory","type":"db","message":"locked"}"#;
            let record = parse_legacy_error(&[topic, body.to_vec()]).unwrap();
            assert_eq!(record.agent, "Memory");
            assert_eq!(record.kind, "db");
            assert_eq!(record.severity, Severity::Error);
            assert_eq!(record.timestamp, "2023-11-14T22:13:20.500Z");
        }
    }

    #[test]
    fn legacy_text_shape() {
        let record =
            parse_legacy_error(&[b"ERROR:Vision:camera:device busy: retry".to_vec()]).unwrap();
        assert_eq!(record.agent, "Vision");
        assert_eq!(record.kind, "camera");
        assert_eq!(record.message, "device busy: retry");
    }

    #[test]
    fn legacy_error_publisher_shape() {
        let frame = br#"ERROR:{"message_type":"critical_alert","source":"ModelManager","timestamp":"t","error_data":{"error_id":"e-1","error_type":"oom","severity":"critical","details":{"vram":"full"}}}"#.to_vec();
        let record = parse_legacy_error(&[frame]).unwrap();
        assert_eq!(record.agent, "ModelManager");
        assert_eq!(record.kind, "oom");
        assert_eq!(record.severity, Severity::Critical);
        assert_eq!(record.correlation_id.as_deref(), Some("e-1"));
        assert_eq!(record.context["vram"], "full");
        assert_eq!(record.context["message_type"], "critical_alert");
    }

    #[test]
    fn legacy_garbage_is_refused() {
        assert!(parse_legacy_error(&[b"WARN:x".to_vec()]).is_err());
        assert!(parse_legacy_error(&[b"ERROR".to_vec(), b"[1]".to_vec()]).is_err());
        assert!(parse_legacy_error(&[b"ERROR:{bad".to_vec()]).is_err());
        assert!(parse_legacy_error(&[b"ERROR:nocolons".to_vec()]).is_err());
        assert!(parse_legacy_error(&[]).is_err());
    }

    #[test]
    fn lenient_severities() {
        assert_eq!(Severity::parse_lenient("WARN"), Some(Severity::Warning));
        assert_eq!(Severity::parse_lenient("high"), Some(Severity::Error));
        assert_eq!(Severity::parse_lenient("???"), None);
        assert!(Severity::Debug < Severity::Fatal);
    }
}
