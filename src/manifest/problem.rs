//! [`Problem`]: one finding about a manifest, with where it is and what to do.
//!
//! Used by the loader (read errors, duplicate keys, bad ports) and by
//! `crate::check` (cycles, conflicts). Serializes to the `--json` shape
//! documented in docs/manifest.md.

use std::fmt;

use serde::Serialize;

use super::Location;
/// How bad a problem is: the one severity type, shared with the error bus.
/// A manifest problem is an `Error` (nothing starts) or a `Warning`.
pub use crate::transport::messages::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The file cannot be read or is not YAML.
    Syntax,
    /// A value of the wrong type, an unknown field, a bad duration.
    InvalidValue,
    /// `${VAR}` with `VAR` unset and no default.
    UnsetVariable,
    DuplicateKey,
    DuplicateAgent,
    UnknownDependency,
    Cycle,
    PortConflict,
    InvalidPort,
    /// A port something else already holds on this machine.
    PortInUse,
    /// An agent that cannot be run as written (no command, bad name).
    InvalidAgent,
    /// A required agent depends on an optional one.
    RequiredOnOptional,
    /// An entry that is not an agent and is not used (legacy manifests).
    Ignored,
    /// The manifests define no agent at all.
    NoAgents,
    /// A script, program or working directory of this machine's agent
    /// that is not there.
    MissingFile,
    /// A Python script that does not parse (`check --compile`).
    ScriptSyntax,
    /// An enabled agent depends on a disabled one (`up` starts it without it).
    DisabledDependency,
    /// An entry inside legacy `agent_groups` that is not an agent mapping:
    /// the legacy agents' own config loader crashes on it.
    NotAnAgent,
    /// A legacy group written one level too deep inside another group; the
    /// legacy launcher did not start its agents.
    MisindentedGroup,
}

/// Who uses a port: an agent and the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct User {
    pub agent: String,
    pub field: String,
}

/// One finding. Kind-specific fields are `None` (and left out of JSON) when
/// they do not apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub severity: Severity,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// `cycle`: the agents in dependency order; `unset_variable`: the agents
    /// whose values use the variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    /// `port_conflict`, `invalid_port`, `port_in_use`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<User>>,
    /// A free port to use instead (`port_conflict`, `port_in_use`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<u16>,
    /// `unknown_dependency`, `duplicate_agent`, `invalid_port`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// `unset_variable`: the variable's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// `cycle`: each dependency edge of the cycle, with where it is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<Edge>>,
    /// How many problems of this kind were grouped into this one line
    /// (text output without `--verbose`); `None` when it stands alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
}

/// One dependency edge: `from` depends on `to`, written at `file:line`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub file: String,
    pub line: usize,
}

impl Problem {
    pub fn new(kind: ProblemKind, severity: Severity, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            severity,
            message: message.into(),
            file: None,
            line: None,
            column: None,
            suggestion: None,
            agents: None,
            port: None,
            host: None,
            users: None,
            replacement: None,
            agent: None,
            dependency: None,
            variable: None,
            edges: None,
            count: None,
        }
    }

    pub fn error(kind: ProblemKind, message: impl Into<String>) -> Problem {
        Problem::new(kind, Severity::Error, message)
    }

    pub fn warning(kind: ProblemKind, message: impl Into<String>) -> Problem {
        Problem::new(kind, Severity::Warning, message)
    }

    pub fn at(mut self, location: &Location) -> Problem {
        self.file = Some(location.file.display().to_string());
        self.line = Some(location.line);
        self.column = (location.column > 0).then_some(location.column);
        self
    }

    pub fn suggest(mut self, suggestion: impl Into<String>) -> Problem {
        self.suggestion = Some(suggestion.into());
        self
    }

    pub fn for_agent(mut self, agent: &str) -> Problem {
        self.agent = Some(agent.to_string());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            _ => {}
        }
        write!(f, "{}", self.message)?;
        if let Some(suggestion) = &self.suggestion {
            write!(f, " ({suggestion})")?;
        }
        Ok(())
    }
}
