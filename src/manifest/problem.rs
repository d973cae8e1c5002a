//! [`Problem`]: one finding about a manifest, with where it is and what to do.
//!
//! Used by the loader (read errors, duplicate keys, bad ports) and by
//! `crate::check` (cycles, conflicts). Serializes to the `--json` shape
//! documented in docs/manifest.md.
//!
//! Owns the problem vocabulary ([`ProblemKind`], [`Severity`]) and the
//! one-line text form. Does not own how problems are grouped or sorted for
//! printing (`cli::check`).

use std::fmt;

use serde::Serialize;

use super::Location;
/// How bad a problem is: the one severity type, shared with the error bus.
/// A manifest problem is an `Error` (nothing starts) or a `Warning`.
pub use crate::transport::messages::Severity;

/// What kind of problem; the `kind` of `--json` output and the
/// `severity[kind]` of text output (docs/manifest.md lists each with its
/// severity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The file cannot be read or is not YAML.
    Syntax,
    /// A value of the wrong type, an unknown field, a bad duration.
    InvalidValue,
    /// `${VAR}` with `VAR` unset and no default.
    UnsetVariable,
    /// A key written twice in one mapping (the last one is used).
    DuplicateKey,
    /// Two agents with one name, or names whose `*_ENDPOINT` variables and
    /// log files collide (`Db`/`DB`, `a-b`/`a_b`).
    DuplicateAgent,
    /// A dependency on an agent no file defines.
    UnknownDependency,
    /// An elementary dependency cycle, with the edges that form it.
    Cycle,
    /// One port used twice on one host.
    PortConflict,
    /// A port outside 1-65535.
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
    /// The agent's name.
    pub agent: String,
    /// The field the port came from, as in [`super::PortUse::field`].
    pub field: String,
}

/// One finding. Kind-specific fields are `None` (and left out of JSON) when
/// they do not apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Whether it stops the run.
    pub severity: Severity,
    /// One line saying what is wrong, without the location (that is
    /// `file`/`line`, printed before it).
    pub message: String,
    /// The manifest file it is in; `None` for problems of no one file
    /// (e.g. `no_agents`). Serialised as `null` then.
    pub file: Option<String>,
    /// 1-based line in `file`.
    pub line: Option<usize>,
    /// 1-based column, when known.
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
    /// Port problems: the machine the port is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `port_conflict`: every agent and field using the port, first user
    /// first (it keeps the port; the others get suggestions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<User>>,
    /// A free port to use instead (`port_conflict`, `port_in_use`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<u16>,
    /// `unknown_dependency`, `duplicate_agent`, `invalid_port`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// `unknown_dependency`, `disabled_dependency`,
    /// `required_on_optional`: the agent depended on.
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
    /// The dependent agent.
    pub from: String,
    /// The agent it depends on.
    pub to: String,
    /// The file the dependency is written in.
    pub file: String,
    /// The 1-based line of the dependency's name.
    pub line: usize,
}

impl Problem {
    /// A problem with only kind, severity and message; the builder methods
    /// below add the rest.
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

    /// [`Problem::new`] with [`Severity::Error`].
    pub fn error(kind: ProblemKind, message: impl Into<String>) -> Problem {
        Problem::new(kind, Severity::Error, message)
    }

    /// [`Problem::new`] with [`Severity::Warning`].
    pub fn warning(kind: ProblemKind, message: impl Into<String>) -> Problem {
        Problem::new(kind, Severity::Warning, message)
    }

    /// Sets `file`, `line` and (when known, i.e. above 0) `column`.
    ///
    /// ```
    /// use supervisor::manifest::{Location, Problem, ProblemKind};
    /// let location = Location { file: "agents.yaml".into(), line: 4, column: 3 };
    /// let problem = Problem::error(ProblemKind::Cycle, "a -> b -> a").at(&location);
    /// assert_eq!((problem.line, problem.column), (Some(4), Some(3)));
    /// ```
    pub fn at(mut self, location: &Location) -> Problem {
        self.file = Some(location.file.display().to_string());
        self.line = Some(location.line);
        self.column = (location.column > 0).then_some(location.column);
        self
    }

    /// Sets what to do about it (printed as `help:`).
    pub fn suggest(mut self, suggestion: impl Into<String>) -> Problem {
        self.suggestion = Some(suggestion.into());
        self
    }

    /// Sets the agent it concerns.
    pub fn for_agent(mut self, agent: &str) -> Problem {
        self.agent = Some(agent.to_string());
        self
    }

    /// True for [`Severity::Error`]: the problem fails `check` and `up`.
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
