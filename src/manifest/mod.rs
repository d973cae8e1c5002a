//! Manifests: YAML text -> [`yaml::Node`] tree (with line numbers, from
//! `saphyr-parser` events) ->
//! variables expanded -> legacy formats rewritten to the native shape ->
//! [`raw::RawManifest`] (serde, unknown fields rejected) -> `validate` ->
//! [`Manifest`]. `convert.rs` writes any format out as a native manifest.
//!
//! Owns reading and validating; does not own cross-agent checks (duplicate
//! names, cycles, ports: see `crate::check`) beyond reporting what it finds
//! while reading (duplicate YAML keys, ports out of range).

mod convert;
mod legacy;
mod model;
pub mod names;
mod problem;
pub mod raw;
pub mod replicas;
mod validate;
mod vars;
pub mod yaml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use model::*;
pub use problem::{Edge, Problem, ProblemKind, Severity, User};
pub use vars::Variables;

/// A manifest file named on the command line, with the machine its agents
/// run on when the file says `FILE@HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigArg {
    /// The file, as given (relative to the current directory).
    pub path: PathBuf,
    /// The `@HOST` suffix: the machine of this file's agents that set no
    /// `host` (and, for legacy v3 files, the `machine_profiles` entry).
    pub host: Option<String>,
}

impl ConfigArg {
    /// `main.yaml` or `pc2.yaml@pc2`. An `@` followed by a path separator is
    /// part of the file name, not a host.
    ///
    /// ```
    /// use supervisor::manifest::ConfigArg;
    /// assert_eq!(ConfigArg::parse("pc2.yaml@pc2").host.as_deref(), Some("pc2"));
    /// assert_eq!(ConfigArg::parse("runs/@old/main.yaml").host, None);
    /// ```
    pub fn parse(text: &str) -> ConfigArg {
        match text.rsplit_once('@') {
            Some((path, host)) if !path.is_empty() && !host.is_empty() && !host.contains('/') => {
                ConfigArg {
                    path: PathBuf::from(path),
                    host: Some(host.to_string()),
                }
            }
            _ => ConfigArg {
                path: PathBuf::from(text),
                host: None,
            },
        }
    }
}

impl From<&Path> for ConfigArg {
    fn from(path: &Path) -> Self {
        ConfigArg {
            path: path.to_path_buf(),
            host: None,
        }
    }
}

/// Where variables come from besides the manifest.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A dotenv file; its values win over the process environment.
    pub env_file: Option<PathBuf>,
    /// Use these variables instead of the process environment (tests).
    pub environment: Option<HashMap<String, String>>,
}

/// The manifest could not be read at all: bad YAML, a wrong type, an unknown
/// field, an unreadable file. (An unset variable is not fatal: it is a
/// located problem in [`Loaded::problems`].) Carries every such problem
/// found (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.iter().map(|problem| problem.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ManifestError {
    /// Every fatal problem, each with file and line; never empty.
    pub problems: Vec<Problem>,
}

/// A manifest that was read, with the problems found while reading it
/// (duplicate YAML keys, ports out of range, ...), which `check` reports
/// together with its own.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Every agent of every file, validated.
    pub manifest: Manifest,
    /// Problems found while reading; none of them stopped the load.
    pub problems: Vec<Problem>,
}

/// Writes the manifests (any format, with their `FILE@HOST`) as one native
/// manifest: `${VARS}` kept, groups kept, comments for legacy decisions.
pub fn convert(configs: &[ConfigArg]) -> Result<String, ManifestError> {
    convert::convert(configs)
}

/// Reads every file and validates it into one [`Manifest`].
pub fn load(configs: &[ConfigArg], options: &LoadOptions) -> Result<Loaded, ManifestError> {
    validate::load(configs, options)
}

/// Reads a manifest from text (as if it were the file `path`). For tests,
/// fuzzing and benchmarks.
pub fn load_str(path: &Path, text: &str, options: &LoadOptions) -> Result<Loaded, ManifestError> {
    validate::load_text(&ConfigArg::from(path), text.to_string(), options)
}

/// Small builders for unit tests of code that consumes a [`Manifest`].
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// `text` loaded as `test.yaml` with an empty environment.
    pub fn load_text(text: &str) -> Loaded {
        load_str(
            Path::new("test.yaml"),
            text,
            &LoadOptions {
                environment: Some(HashMap::new()),
                ..Default::default()
            },
        )
        .expect("test manifest can be read")
    }

    /// A manifest whose agents have the given dependencies and default settings.
    pub fn manifest_from_edges(edges: &[(&str, &[&str])]) -> Manifest {
        let mut text = String::from("version: 1\nagents:\n");
        for (name, deps) in edges {
            text.push_str(&format!(
                "  {name}:\n    command: [\"true\"]\n    dependencies: [{}]\n",
                deps.join(", ")
            ));
        }
        load_str(
            Path::new("test.yaml"),
            &text,
            &LoadOptions {
                environment: Some(HashMap::new()),
                ..Default::default()
            },
        )
        .expect("test manifest is valid")
        .manifest
    }
}
