//! `supervisor convert`: manifests of any format (docs/legacy.md), each
//! with its `FILE@HOST`, written out as one native manifest.
//!
//! Owns the writing: a block-style YAML emitter for [`Node`] trees and the
//! comments that record what a legacy behaviour became. Does not own reading
//! the legacy formats (`legacy.rs` rewrites them to the native shape, with
//! `${VARS}` still unexpanded) nor validation: the converted text is read
//! back by the ordinary loader, and `check` finds in it the agents,
//! dependencies, ports and problems it finds in the original.

use std::fmt::Write as _;

use super::validate::{Unexpanded, unexpanded};
use super::yaml::{Node, Value};
use super::{ConfigArg, ManifestError};

/// The native manifest text for `configs`.
pub fn convert(configs: &[ConfigArg]) -> Result<String, ManifestError> {
    let mut errors = Vec::new();
    let mut files: Vec<(&ConfigArg, Unexpanded)> = Vec::new();
    for config in configs {
        match unexpanded(config) {
            Ok(file) => files.push((config, file)),
            Err(error) => errors.extend(error.problems),
        }
    }
    if !errors.is_empty() {
        return Err(ManifestError { problems: errors });
    }
    let mut out = String::from("# Written by `supervisor convert` from:\n");
    for (config, file) in &files {
        let host = config
            .host
            .as_deref()
            .map(|host| format!(", agents on host `{host}`"))
            .unwrap_or_default();
        let _ = writeln!(out, "#   {} ({}{host})", config.path.display(), file.format);
    }
    let any_legacy = files.iter().any(|(_, file)| file.format != "native");
    if any_legacy {
        out.push_str(concat!(
            "#\n",
            "# Decisions the legacy formats needed:\n",
            "# - Agents marked `legacy: true` are programs built on the legacy BaseAgent:\n",
            "#   without `health_check_port` their health port is port+1, their HTTP\n",
            "#   health server listens on health_check_port+1 (both checked for\n",
            "#   conflicts), they are probed over ZMQ, and a relative `script_path` is\n",
            "#   found from this file's directory upwards, as the legacy launcher did\n",
            "#   from the repository root: keep this file beside the original.\n",
            "# - The legacy MainPC launcher passed `--port <port>` to each script: it is\n",
            "#   written in `args`; `params` became `--key value` flags.\n",
            "# - `${VARS}` are kept; `${PORT_OFFSET}` is 0 when unset, and\n",
            "#   `${X:-false} == 'false'` is evaluated to true/false when read.\n",
            "# - Each agent keeps its legacy group in `group`; keys with no meaning\n",
            "#   here are kept under `extra`.\n",
        ));
    }
    let notes: Vec<String> = files
        .iter()
        .flat_map(|(config, file)| {
            file.notes.iter().map(move |(problem, line)| {
                format!(
                    "#   {}:{line}: {}",
                    config.path.display(),
                    problem.message.replace('\n', " ")
                )
            })
        })
        .collect();
    if !notes.is_empty() {
        out.push_str("#\n# Not converted (what `check` said about the original):\n");
        for note in notes {
            out.push_str(&note);
            out.push('\n');
        }
    }
    out.push_str("\nversion: 1\n");
    // Top-level settings: the first file that sets one wins, as when loading.
    for key in ["strategy", "metrics"] {
        if let Some(value) = files.iter().find_map(|(_, file)| file.root.get(key)) {
            emit_entry(&mut out, key, value, 0);
        }
    }
    let single = files.len() == 1;
    if single && let Some(defaults) = files[0].1.root.get("defaults") {
        emit_entry(&mut out, "defaults", defaults, 0);
    }
    out.push_str("agents:\n");
    for (config, file) in &files {
        let legacy = file.format != "native";
        let file_env = file.root.get("defaults").and_then(|d| d.get("env"));
        let file_host = file.root.get("host").and_then(Node::as_str);
        for agent in file
            .root
            .get("agents")
            .and_then(Node::as_sequence)
            .unwrap_or_default()
        {
            let Some(entries) = agent.as_mapping() else {
                continue;
            };
            let mut fields: Vec<(Node, Node)> = entries.to_vec();
            let mut insert_at = usize::from(
                fields
                    .first()
                    .is_some_and(|(key, _)| key.as_str() == Some("name")),
            );
            if legacy {
                fields.insert(insert_at, (scalar("legacy"), scalar("true")));
                insert_at += 1;
            }
            let host = config.host.as_deref().or(file_host);
            if let Some(host) = host {
                let local = fields.iter().position(|(key, value)| {
                    key.as_str() == Some("host")
                        && value.as_str().is_some_and(|text| {
                            matches!(
                                text,
                                "localhost" | "127.0.0.1" | "0.0.0.0" | "::" | "::1" | "*"
                            )
                        })
                });
                match local {
                    Some(position) => fields[position].1 = scalar(host),
                    None if !fields.iter().any(|(key, _)| key.as_str() == Some("host")) => {
                        fields.insert(insert_at, (scalar("host"), scalar(host)));
                    }
                    None => {}
                }
            }
            if !single && let Some(file_env) = file_env.and_then(Node::as_mapping) {
                // Several files: each file's defaults go with its own agents.
                let mut env: Vec<(Node, Node)> = file_env.to_vec();
                if let Some(position) = fields
                    .iter()
                    .position(|(key, _)| key.as_str() == Some("env"))
                {
                    for (key, value) in fields[position].1.as_mapping().unwrap_or_default() {
                        env.retain(|(existing, _)| existing.as_str() != key.as_str());
                        env.push((key.clone(), value.clone()));
                    }
                    fields.remove(position);
                }
                fields.push((scalar("env"), Node::with_value(Value::Mapping(env), agent)));
            }
            // Readable order: who it is and where it runs first.
            fields.sort_by_key(|(key, _)| match key.as_str() {
                Some("name") => 0,
                Some("legacy") => 1,
                Some("host") => 2,
                Some("group") => 3,
                _ => 4,
            });
            let node = Node::with_value(Value::Mapping(fields), agent);
            emit_item(&mut out, &node, 2);
        }
    }
    Ok(out)
}

/// A plain scalar (written unquoted when it can be).
fn scalar(text: &str) -> Node {
    Node::with_value(
        Value::Scalar {
            text: text.to_string(),
            plain: true,
        },
        &Node::empty_mapping(),
    )
}

/// `key: value` at `indent`.
fn emit_entry(out: &mut String, key: &str, value: &Node, indent: usize) {
    let pad = " ".repeat(indent);
    match &value.value {
        Value::Mapping(entries) if !entries.is_empty() => {
            let _ = writeln!(out, "{pad}{}:", plain_or_quoted(key, true));
            for (key, value) in entries {
                emit_entry(out, &key_text(key), value, indent + 2);
            }
        }
        Value::Sequence(items) if !items.is_empty() => {
            let _ = writeln!(out, "{pad}{}:", plain_or_quoted(key, true));
            for item in items {
                emit_item(out, item, indent + 2);
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "{pad}{}: {}",
                plain_or_quoted(key, true),
                inline(value)
            );
        }
    }
}

/// `- item` at `indent`; a mapping's first key goes on the dash's line.
fn emit_item(out: &mut String, item: &Node, indent: usize) {
    let pad = " ".repeat(indent);
    match &item.value {
        Value::Mapping(entries) if !entries.is_empty() => {
            let mut inner = String::new();
            for (key, value) in entries {
                emit_entry(&mut inner, &key_text(key), value, indent + 2);
            }
            let _ = write!(out, "{pad}- {}", &inner[indent + 2..]);
        }
        Value::Sequence(items) if !items.is_empty() => {
            let _ = writeln!(out, "{pad}-");
            for item in items {
                emit_item(out, item, indent + 2);
            }
        }
        _ => {
            let _ = writeln!(out, "{pad}- {}", inline(item));
        }
    }
}

fn key_text(key: &Node) -> String {
    match &key.value {
        Value::Scalar { text, .. } => text.clone(),
        _ => key.to_json().to_string(),
    }
}

/// A scalar or an empty collection on one line.
fn inline(node: &Node) -> String {
    match &node.value {
        Value::Mapping(_) => "{}".into(),
        Value::Sequence(_) => "[]".into(),
        Value::Scalar { text, plain } => {
            if *plain || !reads_as_other_type(text) {
                plain_or_quoted(text, false)
            } else {
                quoted(text)
            }
        }
    }
}

/// Plain when YAML reads it back as the same plain scalar; else quoted.
/// A plain scalar stays plain (numbers, booleans and null keep their type).
fn plain_or_quoted(text: &str, is_key: bool) -> String {
    let first = text.chars().next();
    let safe = !text.is_empty()
        && text.trim() == text
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with(':')
        && !text.contains(['\n', '\r', '\t', '"', '\'', '{', '}', '[', ']', ',', '`'])
        && !first.is_some_and(|c| "-?:#&*!|>%@".contains(c))
        && !text.chars().any(char::is_control);
    if safe || (!is_key && text.is_empty()) {
        text.to_string()
    } else {
        quoted(text)
    }
}

/// Whether `text`, written plain, would read as something other than a
/// string (null, a boolean, a number), or as nothing.
fn reads_as_other_type(text: &str) -> bool {
    text.is_empty()
        || matches!(
            text.to_ascii_lowercase().as_str(),
            "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
        )
        || text.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '.')
        || text.parse::<f64>().is_ok()
}

/// A double-quoted YAML scalar (JSON string syntax is valid YAML).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::manifest::{LoadOptions, load};

    #[test]
    fn a_legacy_file_becomes_a_native_one_with_variables_groups_and_hosts_kept() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("pc2.yaml");
        std::fs::write(
            &legacy,
            concat!(
                "pc2_services:\n",
                "  - {name: Hub, script_path: hub.py, host: 0.0.0.0, port: \"${PORT_OFFSET}+7100\", dependencies: []}\n",
                "  - {name: Relay, script_path: relay.py, port: 7110, health_check_port: 8110, dependencies: [Hub], env_vars: {HUB: \"${MAINPC_OBS_HUB}\"}}\n",
            ),
        )
        .unwrap();
        let config = ConfigArg::parse(&format!("{}@pc2", legacy.display()));
        let text = convert(std::slice::from_ref(&config)).unwrap();
        assert!(
            text.contains("legacy:pc2_services, agents on host `pc2`"),
            "{text}"
        );
        assert!(text.contains("port: \"${PORT_OFFSET}+7100\""), "{text}");
        assert!(text.contains("HUB: \"${MAINPC_OBS_HUB}\""), "{text}");
        assert!(text.contains("    group: pc2_services\n"), "{text}");
        assert!(
            text.contains(
                "  - name: Relay\n    legacy: true\n    host: pc2\n    group: pc2_services\n"
            ),
            "{text}"
        );
        let native = dir.path().join("native.yaml");
        std::fs::write(&native, &text).unwrap();
        let options = LoadOptions {
            environment: Some(HashMap::from([(
                "MAINPC_OBS_HUB".to_string(),
                "tcp://hub:1".to_string(),
            )])),
            ..LoadOptions::default()
        };
        let before = load(&[config], &options).unwrap().manifest;
        let after = load(&[ConfigArg::from(native.as_path())], &options)
            .unwrap()
            .manifest;
        assert_eq!(after.files[0].format, "native");
        for (a, b) in before.agents.iter().zip(&after.agents) {
            assert_eq!(
                (
                    &a.name,
                    &a.host,
                    &a.group,
                    a.port,
                    a.health_check_port,
                    &a.env
                ),
                (
                    &b.name,
                    &b.host,
                    &b.group,
                    b.port,
                    b.health_check_port,
                    &b.env
                )
            );
            let ports = |agent: &crate::manifest::Agent| -> Vec<(String, u16)> {
                agent
                    .ports
                    .iter()
                    .map(|p| (p.field.clone(), p.port))
                    .collect()
            };
            assert_eq!(ports(a), ports(b));
        }
        assert_eq!(
            after.agents[0].health_check_port, None,
            "still implicit (port+1)"
        );
        assert!(Path::new(&native).exists());
    }
}
