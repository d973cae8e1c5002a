//! `supervisor plan --format svg` and `--format mermaid` (issue 21): the SVG
//! is well-formed XML with one box per agent and one arrow per dependency,
//! the critical path marked, on the README's example and on every manifest
//! of the legacy corpus (skipped visibly without it); Mermaid has the same
//! counts.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `(exit code, stdout)` of `supervisor plan -c FILE --format FORMAT`.
fn plan(file: &Path, format: &str, extra: &[&str]) -> (i32, String) {
    let output = Command::new(common::SUPERVISOR)
        .args(["plan", "-c"])
        .arg(file)
        .args(["--format", format])
        .args(extra)
        .env_remove("PORT_OFFSET")
        .output()
        .expect("run supervisor plan");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).expect("utf-8"),
    )
}

/// What the drawing must show, from `--format json`: every agent, and the
/// edges when the plan lists them all (no knots).
struct Expected {
    agents: BTreeSet<String>,
    edges: Option<BTreeSet<(String, String)>>,
    critical: Vec<String>,
}

/// `None` when `plan` cannot read the manifest (it prints problems, no JSON).
fn expected(file: &Path, extra: &[&str]) -> Option<Expected> {
    let (_, json) = plan(file, "json", extra);
    let value: Value = serde_json::from_str(&json).ok()?;
    let names = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|name| name.as_str().map(str::to_string))
            .collect()
    };
    let mut agents: BTreeSet<String> = value["levels"]
        .as_array()
        .expect("levels")
        .iter()
        .flat_map(names)
        .collect();
    agents.extend(names(&value["blocked"]));
    let knots = value["knots"].as_array().expect("knots");
    for knot in knots {
        agents.extend(names(&knot["members"]));
    }
    let edges =
        (knots.is_empty() && value["blocked"].as_array().is_none_or(Vec::is_empty)).then(|| {
            value["dependencies"]
                .as_object()
                .expect("dependencies")
                .iter()
                .flat_map(|(agent, dependencies)| {
                    names(dependencies)
                        .into_iter()
                        .map(move |dependency| (agent.clone(), dependency))
                })
                .collect()
        });
    Some(Expected {
        agents,
        edges,
        critical: names(&value["critical_path"]),
    })
}

/// Parses the SVG as XML and checks it against `expected`.
fn check_svg(file: &Path, svg: &str, expected: &Expected) {
    let document = roxmltree::Document::parse(svg)
        .unwrap_or_else(|error| panic!("{}: the SVG is not XML: {error}", file.display()));
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let class_has = |node: &roxmltree::Node, class: &str| {
        node.attribute("class")
            .is_some_and(|classes| classes.split_whitespace().any(|part| part == class))
    };
    let nodes: Vec<roxmltree::Node> = document
        .descendants()
        .filter(|node| node.tag_name().name() == "g" && class_has(node, "node"))
        .collect();
    let drawn: Vec<String> = nodes
        .iter()
        .map(|node| {
            node.attribute("data-agent")
                .expect("data-agent")
                .to_string()
        })
        .collect();
    let unique: BTreeSet<String> = drawn.iter().cloned().collect();
    assert_eq!(
        drawn.len(),
        unique.len(),
        "{}: an agent drawn twice",
        file.display()
    );
    assert_eq!(
        unique,
        expected.agents,
        "{}: one box per agent",
        file.display()
    );
    for node in &nodes {
        let label = node
            .descendants()
            .find(|child| child.tag_name().name() == "text")
            .and_then(|text| text.text());
        assert_eq!(
            label,
            node.attribute("data-agent"),
            "{}: box label",
            file.display()
        );
    }
    let edges: Vec<(String, String)> = document
        .descendants()
        .filter(|node| node.tag_name().name() == "path" && class_has(node, "edge"))
        .map(|node| {
            (
                node.attribute("data-from").expect("data-from").to_string(),
                node.attribute("data-to").expect("data-to").to_string(),
            )
        })
        .collect();
    let unique_edges: BTreeSet<(String, String)> = edges.iter().cloned().collect();
    assert_eq!(
        edges.len(),
        unique_edges.len(),
        "{}: an arrow drawn twice",
        file.display()
    );
    if let Some(expected_edges) = &expected.edges {
        assert_eq!(
            &unique_edges,
            expected_edges,
            "{}: one arrow per dependency",
            file.display()
        );
    }
    let critical: BTreeSet<String> = nodes
        .iter()
        .filter(|node| class_has(node, "critical"))
        .map(|node| node.attribute("data-agent").unwrap().to_string())
        .collect();
    assert_eq!(
        critical,
        expected.critical.iter().cloned().collect(),
        "{}: the critical path is marked",
        file.display()
    );
}

fn check_mermaid(file: &Path, text: &str, expected: &Expected) {
    assert!(text.starts_with("flowchart TB\n"), "{}", file.display());
    let boxes = text
        .lines()
        .filter(|line| line.starts_with("    n"))
        .count();
    assert_eq!(
        boxes,
        expected.agents.len(),
        "{}: mermaid boxes",
        file.display()
    );
    if let Some(edges) = &expected.edges {
        assert_eq!(
            text.matches(" --> ").count(),
            edges.len(),
            "{}",
            file.display()
        );
    }
}

#[test]
fn the_example_manifest_is_drawn_as_valid_svg_and_mermaid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/startup.yaml");
    let expected = expected(&file, &[]).expect("the example plans");
    assert_eq!(expected.agents.len(), 8);
    assert_eq!(expected.edges.as_ref().map(BTreeSet::len), Some(5));
    let (code, svg) = plan(&file, "svg", &[]);
    assert_eq!(code, 0);
    check_svg(&file, &svg, &expected);
    let (code, mermaid) = plan(&file, "mermaid", &[]);
    assert_eq!(code, 0);
    check_mermaid(&file, &mermaid, &expected);
}

#[test]
fn every_corpus_manifest_is_drawn_as_valid_svg() {
    let Some(dir) =
        common::corpus::corpus_or_skip("plan_draw::every_corpus_manifest_is_drawn_as_valid_svg")
    else {
        return;
    };
    let env_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus.env");
    let env_file = env_file.to_str().expect("utf-8 path");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifest in {}", dir.display());
    let mut drawn = 0;
    for file in &files {
        let extra = ["--env-file", env_file];
        let Some(expected) = expected(file, &extra) else {
            continue; // unreadable: `plan` printed its problems instead
        };
        let (_, svg) = plan(file, "svg", &extra);
        check_svg(file, &svg, &expected);
        let (_, mermaid) = plan(file, "mermaid", &extra);
        check_mermaid(file, &mermaid, &expected);
        drawn += 1;
    }
    eprintln!(
        "{drawn} of {} corpus manifests drawn and checked",
        files.len()
    );
    assert!(
        drawn * 2 > files.len(),
        "most corpus manifests can be planned"
    );
}
