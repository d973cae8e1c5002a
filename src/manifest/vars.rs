//! Variable expansion in manifest values: `${VAR}`, `${VAR:-default}`, `$$`
//! for a literal `$`, the legacy port arithmetic `${PORT_OFFSET}+7200`, and the
//! legacy boolean expression `${X:-false} == 'false'`.
//!
//! Owns the variable grammar and where values come from (environment, then
//! `--env-file`, then built-in defaults). Values are never expanded again, so
//! a variable that names another cannot loop.

use std::collections::HashMap;
use std::path::Path;

use super::yaml::{Node, Value};

/// Variables that have a value even when unset, as the legacy launchers gave them.
const BUILT_IN_DEFAULTS: &[(&str, &str)] = &[
    // Every legacy launcher treated an unset offset as 0.
    ("PORT_OFFSET", "0"),
    // `PYTHONPATH: ${PYTHONPATH}:...` extends an inherited path that may be unset.
    ("PYTHONPATH", ""),
];

/// The values `${VAR}` can take.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    /// Name -> value; the built-in defaults are not in it (see
    /// [`Variables::get`]).
    values: HashMap<String, String>,
}

impl Variables {
    /// `environment` (or the process environment), overridden by the dotenv
    /// file's values.
    pub fn new(
        environment: Option<&HashMap<String, String>>,
        env_file: Option<&Path>,
    ) -> Result<Variables, String> {
        let mut values: HashMap<String, String> = match environment {
            Some(map) => map.clone(),
            None => std::env::vars().collect(),
        };
        if let Some(path) = env_file {
            let entries = dotenvy::from_path_iter(path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            for entry in entries {
                let (key, value) = entry.map_err(|error| format!("{}: {error}", path.display()))?;
                values.insert(key, value);
            }
        }
        // Where this `supervisor` binary lives: the example agents that cargo
        // builds beside it can be named `${SUPERVISOR_BIN_DIR}/agent-...`.
        if !values.contains_key("SUPERVISOR_BIN_DIR")
            && let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.display().to_string()))
        {
            values.insert("SUPERVISOR_BIN_DIR".into(), dir);
        }
        if !values.contains_key("PWD")
            && let Ok(dir) = std::env::current_dir()
        {
            values.insert("PWD".into(), dir.display().to_string());
        }
        Ok(Variables { values })
    }

    /// Variables from a fixed list (tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Variables {
        Variables {
            values: pairs
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        }
    }

    /// The value of `name`; `PORT_OFFSET` (`0`) and `PYTHONPATH` (empty)
    /// have built-in defaults, as the legacy launchers had.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).or_else(|| {
            BUILT_IN_DEFAULTS
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| *value)
        })
    }
}

/// What a scalar became after expansion.
#[derive(Debug, Clone, PartialEq)]
pub enum Expanded {
    Text(String),
    /// `${PORT_OFFSET}+7200`.
    Integer(i64),
    /// `${X:-false} == 'false'`.
    Boolean(bool),
}

/// Why a scalar could not be expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandError {
    /// What is wrong, naming the variable or the expression.
    pub message: String,
    /// The variable that is unset (with no default); `None` for bad syntax
    /// or arithmetic.
    pub unset: Option<String>,
}

impl From<String> for ExpandError {
    fn from(message: String) -> ExpandError {
        ExpandError {
            message,
            unset: None,
        }
    }
}

/// A scalar that could not be expanded, where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Why.
    pub error: ExpandError,
    /// 1-based line of the scalar.
    pub line: usize,
    /// 1-based column of the scalar.
    pub column: usize,
}

/// Expands one scalar. Errors name the variable (or the bad arithmetic).
pub fn expand(text: &str, variables: &Variables) -> Result<Expanded, ExpandError> {
    if let Some((left, right)) = split_arithmetic(text) {
        let value = substitute(left, variables)?;
        let base: i64 = value
            .trim()
            .parse()
            .map_err(|_| format!("`{left}` is `{value}`, not a whole number, in `{text}`"))?;
        let offset: i64 = right
            .parse()
            .map_err(|_| format!("`{right}` is not a whole number in `{text}`"))?;
        return base
            .checked_add(offset)
            .map(Expanded::Integer)
            .ok_or_else(|| format!("`{text}` overflows").into());
    }
    if let Some((left, equal, literal)) = split_comparison(text) {
        let value = substitute(left, variables)?;
        let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
        return Ok(Expanded::Boolean((value == literal) == equal));
    }
    substitute(text, variables).map(Expanded::Text)
}

/// `${NAME}+123` with nothing else around it.
fn split_arithmetic(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let (left, right) = text.rsplit_once('+')?;
    let is_reference = left.starts_with("${")
        && left.ends_with('}')
        && left[2..].find('}') == Some(left.len() - 3);
    (is_reference && !right.is_empty() && right.bytes().all(|byte| byte.is_ascii_digit()))
        .then_some((left, right))
}

/// `<something with ${..}> == 'literal'` (or `!=`, or double quotes).
fn split_comparison(text: &str) -> Option<(&str, bool, &str)> {
    if !text.contains("${") {
        return None;
    }
    let text = text.trim();
    let quote = text.chars().last().filter(|c| *c == '\'' || *c == '"')?;
    let body = &text[..text.len() - 1];
    let start = body.rfind(quote)?;
    let literal = &body[start + 1..];
    let before = body[..start].trim_end();
    let (left, equal) = if let Some(left) = before.strip_suffix("==") {
        (left, true)
    } else if let Some(left) = before.strip_suffix("!=") {
        (left, false)
    } else {
        return None;
    };
    Some((left.trim(), equal, literal))
}

/// Replaces every `${NAME}` / `${NAME:-default}` and `$$`.
fn substitute(text: &str, variables: &Variables) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find('$') {
        out.push_str(&rest[..position]);
        let after = &rest[position + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("`${{` without a closing `}}` in `{text}`"))?;
            let reference = &inner[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{reference}}}` is not a variable reference (expected ${{NAME}} or ${{NAME:-default}})"
                )
                .into());
            }
            // `${REPLICA}` is each instance's own index: replaced when an
            // agent with `replicas` is expanded (`super::replicas`).
            if reference == "REPLICA" {
                out.push_str(super::replicas::REPLICA_VARIABLE);
                rest = &inner[end + 1..];
                continue;
            }
            match (variables.get(name), default) {
                // `:-` also replaces an empty value, as in the shell.
                (Some(""), Some(default)) => out.push_str(default),
                (Some(value), _) => out.push_str(value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(ExpandError {
                        message: format!("variable `{name}` is not set and has no default"),
                        unset: Some(name.to_string()),
                    });
                }
            }
            rest = &inner[end + 1..];
        } else {
            // A lone `$` (as in a shell command) stays as written.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands every scalar under `node` (not mapping keys). Returns each failure
/// with the node it happened at. A mapping value that fails becomes null (as
/// if not written), so one unset variable does not stop the other checks; a
/// list item keeps its text.
pub fn expand_tree(node: &mut Node, variables: &Variables, errors: &mut Vec<Failure>) {
    expand_node(node, variables, errors, false);
}

fn expand_node(node: &mut Node, variables: &Variables, errors: &mut Vec<Failure>, in_list: bool) {
    match &mut node.value {
        Value::Scalar { text, plain } => {
            if !text.contains('$') {
                return;
            }
            match expand(text, variables) {
                Ok(Expanded::Text(value)) => *text = value,
                Ok(Expanded::Integer(value)) => {
                    *text = value.to_string();
                    *plain = true;
                }
                Ok(Expanded::Boolean(value)) => {
                    *text = value.to_string();
                    *plain = true;
                }
                Err(error) => {
                    if !in_list {
                        *text = String::new();
                        *plain = true;
                    }
                    errors.push(Failure {
                        error,
                        line: node.line,
                        column: node.column,
                    });
                }
            }
        }
        Value::Sequence(items) => items
            .iter_mut()
            .for_each(|item| expand_node(item, variables, errors, true)),
        Value::Mapping(entries) => entries
            .iter_mut()
            .for_each(|(_, value)| expand_node(value, variables, errors, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        Variables::from_pairs(&[
            ("HOST", "10.0.0.2"),
            ("OFFSET", "100"),
            ("EMPTY", ""),
            ("WORD", "abc"),
        ])
    }

    #[test]
    fn plain_references_and_defaults() {
        assert_eq!(
            expand("tcp://${HOST}:1", &vars()),
            Ok(Expanded::Text("tcp://10.0.0.2:1".into()))
        );
        assert_eq!(
            expand("${MISSING:-redis}", &vars()),
            Ok(Expanded::Text("redis".into()))
        );
        assert_eq!(
            expand("${EMPTY:-fallback}", &vars()),
            Ok(Expanded::Text("fallback".into()))
        );
        assert_eq!(
            expand("cost $$5 and $PATH", &vars()),
            Ok(Expanded::Text("cost $5 and $PATH".into()))
        );
    }

    #[test]
    fn unset_variables_are_errors_naming_them() {
        let error = expand("${NOPE}", &vars()).unwrap_err();
        assert!(error.message.contains("`NOPE` is not set"), "{error:?}");
        assert_eq!(error.unset.as_deref(), Some("NOPE"));
        assert!(expand("${NOT CLOSED", &vars()).is_err());
        assert!(expand("${}", &vars()).is_err());
    }

    #[test]
    fn port_arithmetic_gives_an_integer() {
        assert_eq!(
            expand("${PORT_OFFSET}+7200", &vars()),
            Ok(Expanded::Integer(7200))
        );
        assert_eq!(
            expand("${OFFSET}+7200", &vars()),
            Ok(Expanded::Integer(7300))
        );
        assert!(
            expand("${WORD}+1", &vars())
                .unwrap_err()
                .message
                .contains("not a whole number")
        );
        assert_eq!(expand("a+1", &vars()), Ok(Expanded::Text("a+1".into())));
    }

    #[test]
    fn legacy_boolean_expressions_are_evaluated() {
        assert_eq!(
            expand("${RTAP_ENABLED:-false} == 'false'", &vars()),
            Ok(Expanded::Boolean(true))
        );
        let enabled = Variables::from_pairs(&[("RTAP_ENABLED", "true")]);
        assert_eq!(
            expand("${RTAP_ENABLED:-false} == 'false'", &enabled),
            Ok(Expanded::Boolean(false))
        );
        assert_eq!(
            expand("${RTAP_ENABLED:-false} != \"false\"", &enabled),
            Ok(Expanded::Boolean(true))
        );
    }

    #[test]
    fn values_are_not_expanded_twice() {
        let looping = Variables::from_pairs(&[("A", "${B}"), ("B", "${A}")]);
        assert_eq!(expand("${A}", &looping), Ok(Expanded::Text("${B}".into())));
    }
}
