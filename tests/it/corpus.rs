//! `check`, `check-ports` and `plan` over every real legacy manifest of the
//! corpus (`legacy-startup-configs/` under `SUPERVISOR_CORPUS`, else under
//! `../shared/corpus`), with the findings of a hand-verified sample asserted;
//! per file (issue 15): no check aborts, every agent in a cycle is named and
//! every reported cycle is re-verified against the parsed graph, agent
//! counts match INDEX.tsv, `check-ports --fix` leaves no conflict, and
//! `convert` round-trips to the same agents, ports and problems.
//! The corpus lives outside the repository: without it every test here
//! prints `SKIPPED <test>: <reason>` and passes (see tests/common/corpus.rs);
//! the small per-format fixtures of tests/legacy_formats.rs always run.
//!
//! The three files INDEX.tsv marks `unparseable` are broken YAML (a
//! truncated quoted scalar, a mapping value inside a flow list); they must
//! exit 2 with the line of the break. Every other file must be read: exit 0
//! (clean) or 1 (problems found).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The corpus directory, or `None` once `test` has been reported skipped.
fn corpus_dir(test: &str) -> Option<PathBuf> {
    let dir = common::corpus::corpus_or_skip(&format!("corpus::{test}"))?;
    assert!(
        dir.join("INDEX.tsv").exists(),
        "the corpus at {} has no INDEX.tsv",
        dir.display()
    );
    Some(dir)
}

fn env_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus.env")
}

/// `check` is told not to look for the scripts the manifests name:
/// the corpus holds manifests only, not the
/// scripts they name.
fn no_file_check() -> &'static [&'static str] {
    &["--no-file-check"]
}

/// (exit code, stdout, stderr) of `supervisor <command> -c FILE ...`.
fn run(command: &str, file: &Path, extra: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .arg(command)
        .arg("-c")
        .arg(file)
        .arg("--env-file")
        .arg(env_file())
        .args(if command == "check" {
            no_file_check()
        } else {
            &[]
        })
        .args(extra)
        .env_remove("PORT_OFFSET")
        .env("SUPERVISOR_LOG", "warn")
        .output()
        .expect("run supervisor");
    (
        output.status.code().expect("no signal"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// (file name, format kind) from INDEX.tsv.
fn index(corpus: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(corpus.join("INDEX.tsv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields[0].to_string(), fields[5].to_string())
        })
        .collect()
}

#[test]
fn every_corpus_file_is_read_by_check_check_ports_and_plan() {
    let Some(corpus) = corpus_dir("every_corpus_file_is_read_by_check_check_ports_and_plan") else {
        return;
    };
    let files = index(&corpus);
    assert_eq!(files.len(), 129);
    let mut counts = std::collections::BTreeMap::new();
    for (name, kind) in &files {
        let path = corpus.join(name);
        let expect_unreadable = kind.starts_with("unparseable");
        for command in ["check", "check-ports", "plan"] {
            let extra: &[&str] = if command == "plan" {
                &[]
            } else {
                &["--no-bind-check"]
            };
            let (code, stdout, stderr) = run(command, &path, extra);
            assert!(
                !stderr.contains("panicked"),
                "{command} {name} panicked: {stderr}"
            );
            if expect_unreadable {
                assert_eq!(
                    code, 2,
                    "{command} {name} ({kind}) should not parse: {stderr}"
                );
                assert!(
                    stderr.contains(&format!("{name}:")) && stderr.contains("invalid YAML"),
                    "{command} {name}: {stderr}"
                );
            } else {
                assert!(
                    code == 0 || code == 1,
                    "{command} {name} ({kind}) exited {code}:\n{stdout}\n{stderr}"
                );
            }
            *counts.entry((command, code)).or_insert(0) += 1;
        }
    }
    eprintln!("exit codes per command: {counts:?}");
}

fn problems(corpus: &Path, name: &str) -> Vec<Value> {
    let (_, stdout, stderr) = run("check", &corpus.join(name), &["--no-bind-check", "--json"]);
    let value: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{name}: {error}: {stderr}"));
    value["problems"].as_array().unwrap().clone()
}

fn cycles(problems: &[Value]) -> Vec<Vec<String>> {
    problems
        .iter()
        .filter(|p| p["kind"] == "cycle")
        .map(|p| serde_json::from_value(p["agents"].clone()).unwrap())
        .collect()
}

fn conflict_users(problems: &[Value], port: u64) -> Vec<String> {
    problems
        .iter()
        .filter(|p| p["kind"] == "port_conflict" && p["port"] == port)
        .flat_map(|p| {
            p["users"].as_array().unwrap().iter().map(|u| {
                format!(
                    "{}.{}",
                    u["agent"].as_str().unwrap(),
                    u["field"].as_str().unwrap()
                )
            })
        })
        .collect()
}

/// MainPC 07-12..07-23: StreamingInterruptHandler depends on StreamingTTSAgent,
/// which depends on TTSService, which depends on StreamingInterruptHandler.
#[test]
fn sample_mainpc_streaming_cycle() {
    let Some(corpus) = corpus_dir("sample_mainpc_streaming_cycle") else {
        return;
    };
    let found = problems(&corpus, "5aa46d427277.yaml");
    assert_eq!(
        cycles(&found),
        vec![vec![
            "StreamingInterruptHandler",
            "StreamingTTSAgent",
            "TTSService"
        ]]
    );
}

/// June MainPC list: TaskRouter lists DynamicIdentityAgent among its
/// dependencies (line 10) and DynamicIdentityAgent depends on TaskRouter (line 57).
#[test]
fn sample_june_two_agent_cycle() {
    let Some(corpus) = corpus_dir("sample_june_two_agent_cycle") else {
        return;
    };
    let found = problems(&corpus, "ca17afa9cae3.yaml");
    assert!(
        cycles(&found).contains(&vec![
            "DynamicIdentityAgent".to_string(),
            "TaskRouter".to_string()
        ]),
        "{:?}",
        cycles(&found)
    );
}

/// PC2 list: the health agents depend on each other in a ring of four.
#[test]
fn sample_pc2_health_ring() {
    let Some(corpus) = corpus_dir("sample_pc2_health_ring") else {
        return;
    };
    let found = problems(&corpus, "e76c806a65de.yaml");
    assert_eq!(
        cycles(&found),
        vec![vec![
            "HealthMonitor",
            "PerformanceMonitor",
            "PerformanceLoggerAgent",
            "SelfHealingAgent"
        ]]
    );
}

/// MainPC agent_groups: EmotionEngine and CloudTranslationService both use
/// `${PORT_OFFSET}+5590` / `+6590` (lines 472-473 and 547-548).
#[test]
fn sample_emotion_engine_translation_port_clash() {
    let Some(corpus) = corpus_dir("sample_emotion_engine_translation_port_clash") else {
        return;
    };
    let found = problems(&corpus, "1cf5b6b2872c.yaml");
    let mut users = conflict_users(&found, 5590);
    users.sort();
    assert_eq!(
        users,
        ["CloudTranslationService.port", "EmotionEngine.port"]
    );
    let mut users = conflict_users(&found, 6590);
    users.sort();
    assert_eq!(
        users,
        [
            "CloudTranslationService.health_check_port",
            "EmotionEngine.health_check_port"
        ]
    );
}

/// PC2 list: CentralErrorBus and VisionProcessingAgent both on 7150/8150.
#[test]
fn sample_pc2_error_bus_vision_clash() {
    let Some(corpus) = corpus_dir("sample_pc2_error_bus_vision_clash") else {
        return;
    };
    let found = problems(&corpus, "1e3e9d6f31aa.yaml");
    let mut users = conflict_users(&found, 7150);
    users.sort();
    assert_eq!(
        users,
        ["CentralErrorBus.port", "VisionProcessingAgent.port"]
    );
}

/// The `simple` format: MemoryOrchestrator on 5576 has the implicit health
/// port 5577, which MemoryClient uses as its port.
#[test]
fn sample_simple_format_implicit_health_clash() {
    let Some(corpus) = corpus_dir("sample_simple_format_implicit_health_clash") else {
        return;
    };
    let found = problems(&corpus, "a30800ac3272.yaml");
    let conflict = found
        .iter()
        .find(|p| p["kind"] == "port_conflict" && p["port"] == 5577)
        .expect("a 5577 conflict");
    assert_eq!(conflict["severity"], "error");
    assert_eq!(
        conflict_users(&found, 5577),
        [
            "MemoryOrchestrator.health_check_port (implicit: port+1)",
            "MemoryClient.port"
        ]
    );
}

/// HEAD of MainPC (49 agents) has no cycle; its one error is the
/// mis-indented `docker_groups` block (line 618 on) that the agents' own
/// config loader crashes on (issue 14, item 10).
#[test]
fn sample_mainpc_head_is_clean_of_errors() {
    let Some(corpus) = corpus_dir("sample_mainpc_head_is_clean_of_errors") else {
        return;
    };
    let found = problems(&corpus, "3dd45d008fc4.yaml");
    let errors: Vec<&Value> = found.iter().filter(|p| p["severity"] == "error").collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["kind"], "not_an_agent");
    assert_eq!(errors[0]["line"], 632);
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("'str' object has no attribute 'get'"),
        "{errors:?}"
    );
    let (code, stdout, _) = run("plan", &corpus.join("3dd45d008fc4.yaml"), &[]);
    assert_eq!(code, 1, "the loader-crash error");
    assert!(stdout.contains("critical path"), "{stdout}");
}

/// v3 HEAD: `name.yaml@pc2` reads only the groups that
/// `machine_profiles.pc2.enabled_groups` lists (core_services, memory_system,
/// pc2_services, utility_services), as the legacy loader did.
#[test]
fn sample_v3_machine_profiles_pick_groups() {
    let Some(corpus) = corpus_dir("sample_v3_machine_profiles_pick_groups") else {
        return;
    };
    let path = corpus.join("ba45e739ec58.yaml");
    let agents = |suffix: &str| -> Vec<String> {
        let output = Command::new(env!("CARGO_BIN_EXE_supervisor"))
            .args(["plan", "--format", "json", "-c"])
            .arg(format!("{}{suffix}", path.display()))
            .env_remove("PORT_OFFSET")
            .output()
            .unwrap();
        let value: Value = serde_json::from_slice(&output.stdout).unwrap();
        value["levels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|level| {
                level
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|name| name.as_str().unwrap().to_string())
            })
            .collect()
    };
    let all = agents("");
    let pc2 = agents("@pc2");
    assert_eq!(all.len(), 79);
    assert!(
        pc2.contains(&"TieredResponder".to_string())
            && pc2.contains(&"ServiceRegistry".to_string()),
        "{pc2:?}"
    );
    assert!(
        !pc2.contains(&"SpeechToTextAgent".to_string()),
        "speech_services is MainPC only"
    );
    assert!(all.contains(&"SpeechToTextAgent".to_string()));
    assert_eq!(pc2.len(), 39);
}

/// Each agent's dependencies on defined agents.
type Graph = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

/// The agent entries and the dependency graph as the manifest was parsed.
fn parsed_graph(path: &Path) -> Option<(Vec<String>, Graph)> {
    let options = supervisor::manifest::LoadOptions {
        env_file: Some(env_file()),
        environment: Some(std::collections::HashMap::new()),
    };
    let loaded =
        supervisor::manifest::load(&[supervisor::manifest::ConfigArg::from(path)], &options)
            .ok()?;
    let names: Vec<String> = loaded
        .manifest
        .agents
        .iter()
        .map(|agent| agent.name.clone())
        .collect();
    let defined: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut graph = Graph::new();
    for agent in &loaded.manifest.agents {
        let entry = graph.entry(agent.name.clone()).or_default();
        for dependency in &agent.dependencies {
            if defined.contains(dependency.name.as_str()) {
                entry.insert(dependency.name.clone());
            }
        }
    }
    Some((names, graph))
}

/// Issue 15: no corpus file stops the check (the three broken YAML files
/// are rejected with a located error); every agent that sits in a
/// dependency cycle of the parsed graph is named in some reported cycle;
/// every reported cycle is a real elementary cycle of that graph. Also
/// prints how many files' agent counts agree with INDEX.tsv (an
/// independent, two-level, last-key-wins reading).
#[test]
fn every_agent_in_a_cycle_is_named_and_every_reported_cycle_is_real() {
    let Some(corpus) =
        corpus_dir("every_agent_in_a_cycle_is_named_and_every_reported_cycle_is_real")
    else {
        return;
    };
    let mut agree = 0;
    let mut disagree = Vec::new();
    let mut files_with_cycles = 0;
    for (name, kind) in index(&corpus) {
        let path = corpus.join(&name);
        let (code, stdout, stderr) = run("check", &path, &["--no-bind-check", "--json"]);
        if kind.starts_with("unparseable") {
            assert_eq!(code, 2, "{name}: {stderr}");
            let value: Value = serde_json::from_str(&stdout).expect("problems as JSON");
            assert!(value["problems"][0]["line"].is_number(), "{name}: {stdout}");
            continue;
        }
        assert!(code == 0 || code == 1, "{name} exited {code}: {stderr}");
        let value: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{name}: {error}"));
        let reported = cycles(value["problems"].as_array().unwrap());
        let (names, graph) = parsed_graph(&path).unwrap_or_else(|| panic!("{name} reads"));
        // Every reported cycle is real: each agent once, each step an edge.
        for cycle in &reported {
            let unique: std::collections::BTreeSet<&String> = cycle.iter().collect();
            assert_eq!(
                unique.len(),
                cycle.len(),
                "{name}: {cycle:?} repeats an agent"
            );
            for index in 0..cycle.len() {
                let from = &cycle[index];
                let to = &cycle[(index + 1) % cycle.len()];
                assert!(
                    graph.get(from).is_some_and(|deps| deps.contains(to)),
                    "{name}: {from} -> {to} of {cycle:?} is not a dependency"
                );
            }
        }
        // Every agent that reaches itself is named (knots of more than 50
        // cycles are reported as their members).
        let named: std::collections::BTreeSet<&String> = reported.iter().flatten().collect();
        let mut in_cycle = 0;
        for agent in graph.keys() {
            let mut seen = std::collections::BTreeSet::new();
            let mut stack: Vec<&String> = graph[agent].iter().collect();
            let mut reaches_itself = false;
            while let Some(next) = stack.pop() {
                if next == agent {
                    reaches_itself = true;
                    break;
                }
                if seen.insert(next) {
                    stack.extend(graph.get(next).into_iter().flatten());
                }
            }
            if reaches_itself {
                in_cycle += 1;
                assert!(
                    named.contains(agent),
                    "{name}: {agent} is in a cycle but no reported cycle names it: {reported:?}"
                );
            }
        }
        if in_cycle > 0 {
            files_with_cycles += 1;
        }
        let expected: usize = std::fs::read_to_string(corpus.join("INDEX.tsv"))
            .unwrap()
            .lines()
            .find(|line| line.starts_with(&format!("{name}\t")))
            .and_then(|line| line.split('\t').nth(4))
            .and_then(|count| count.parse().ok())
            .unwrap_or(usize::MAX);
        if names.len() == expected {
            agree += 1;
        } else {
            disagree.push(format!("{name} ({kind}): {} vs {expected}", names.len()));
        }
    }
    eprintln!(
        "agent counts agree with INDEX.tsv on {agree} of 126 readable files; {files_with_cycles} files have cycles; differing: {disagree:?}"
    );
    assert_eq!(agree, 126, "{disagree:?}");
    assert_eq!(
        files_with_cycles, 24,
        "docs/legacy-system notes: 24 versions have cycles"
    );
}

/// Issue 15, class 8: on every readable corpus file `check-ports --fix`
/// applies every suggestion it makes (errors and warnings alike), and the
/// fixed file has no port conflict left: the suggestions hold together.
#[test]
fn check_ports_fix_leaves_no_conflict_in_any_corpus_file() {
    let Some(corpus) = corpus_dir("check_ports_fix_leaves_no_conflict_in_any_corpus_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut fixed_files = 0;
    for (name, kind) in index(&corpus) {
        if kind.starts_with("unparseable") {
            continue;
        }
        let copy = dir.path().join(&name);
        std::fs::copy(corpus.join(&name), &copy).unwrap();
        let (code, _, stderr) = run("check-ports", &copy, &["--no-bind-check", "--fix"]);
        assert!(code == 0 || code == 1, "{name}: {stderr}");
        assert!(!stderr.contains("not fixed"), "{name}: {stderr}");
        let fixed = dir.path().join(name.replace(".yaml", ".fixed.yaml"));
        if !fixed.exists() {
            continue;
        }
        fixed_files += 1;
        let (_, stdout, stderr) = run("check-ports", &fixed, &["--no-bind-check", "--json"]);
        let value: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{name}: {e}: {stderr}"));
        let left: Vec<&Value> = value["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|problem| problem["kind"] == "port_conflict")
            .collect();
        assert!(left.is_empty(), "{name}: {left:?}");
    }
    eprintln!("check-ports --fix resolved every conflict in {fixed_files} files");
}

/// What `check` found, without where: kinds the conversion itself resolves
/// (entries that are not agents, mis-indented groups, duplicate YAML keys)
/// are left out; they become comments in the converted file.
fn comparable_problems(problems: &[Value]) -> Vec<String> {
    let mut found: Vec<String> = problems
        .iter()
        .filter(|problem| {
            !matches!(
                problem["kind"].as_str(),
                Some("ignored" | "not_an_agent" | "misindented_group" | "duplicate_key")
            )
        })
        .map(|problem| {
            let users: Vec<String> = problem["users"]
                .as_array()
                .map(|users| {
                    users
                        .iter()
                        .map(|user| format!("{}.{}", user["agent"], user["field"]))
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{} {} agent={} dependency={} port={} variable={} agents={} users={users:?}",
                problem["kind"],
                problem["severity"],
                problem["agent"],
                problem["dependency"],
                problem["port"],
                problem["variable"],
                problem["agents"],
            )
        })
        .collect();
    found.sort();
    found
}

/// Agent, group, host, dependencies and ports, as loaded.
fn agent_summary(path: &Path) -> Vec<String> {
    let options = supervisor::manifest::LoadOptions {
        env_file: Some(env_file()),
        environment: Some(std::collections::HashMap::new()),
    };
    let loaded =
        supervisor::manifest::load(&[supervisor::manifest::ConfigArg::from(path)], &options)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    loaded
        .manifest
        .agents
        .iter()
        .map(|agent| {
            let dependencies: Vec<&str> = agent
                .dependencies
                .iter()
                .map(|dependency| dependency.name.as_str())
                .collect();
            let ports: Vec<String> = agent
                .ports
                .iter()
                .map(|port| format!("{}={}", port.field, port.port))
                .collect();
            format!(
                "{} group={:?} host={} enabled={} required={} deps={dependencies:?} ports={ports:?} command={:?}",
                agent.name, agent.group, agent.host, agent.enabled, agent.required, agent.command
            )
        })
        .collect()
}

/// Issue 15, `convert`: every readable corpus file, converted to a native
/// manifest beside a copy of it, is checked to the same agents (groups,
/// hosts, dependencies, ports, commands) and the same problems.
#[test]
fn convert_round_trips_every_corpus_file() {
    let Some(corpus) = corpus_dir("convert_round_trips_every_corpus_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut converted = 0;
    for (name, kind) in index(&corpus) {
        if kind.starts_with("unparseable") {
            continue;
        }
        let original = dir.path().join(&name);
        std::fs::copy(corpus.join(&name), &original).unwrap();
        let native = dir.path().join(name.replace(".yaml", ".native.yaml"));
        let output = Command::new(env!("CARGO_BIN_EXE_supervisor"))
            .args(["convert", "-c"])
            .arg(&original)
            .arg("-o")
            .arg(&native)
            .output()
            .expect("run supervisor convert");
        assert!(
            output.status.success(),
            "convert {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::fs::read_to_string(&native).unwrap();
        assert!(
            text.starts_with("# Written by `supervisor convert`"),
            "{name}"
        );
        assert_eq!(
            agent_summary(&original),
            agent_summary(&native),
            "{name}: the agents differ"
        );
        let before = problems(dir.path(), &name);
        let after = problems(dir.path(), &name.replace(".yaml", ".native.yaml"));
        assert_eq!(
            comparable_problems(&before),
            comparable_problems(&after),
            "{name}: the problems differ"
        );
        converted += 1;
    }
    assert_eq!(converted, 126);

    // Both machines of HEAD into one file, each with its host.
    let main = dir.path().join("3dd45d008fc4.yaml");
    let pc2 = dir.path().join("46e8c89b8412.yaml");
    let both = dir.path().join("both.native.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .args(["convert", "-c"])
        .arg(format!("{}@mainpc", main.display()))
        .arg("-c")
        .arg(format!("{}@pc2", pc2.display()))
        .arg("-o")
        .arg(&both)
        .output()
        .expect("run supervisor convert");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pair = |args: &[String]| -> (Vec<String>, Vec<String>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_supervisor"));
        command.args(["check", "--json", "--no-bind-check", "--no-file-check"]);
        for arg in args {
            command.arg("-c").arg(arg);
        }
        let output = command
            .arg("--env-file")
            .arg(env_file())
            .env_remove("PORT_OFFSET")
            .output()
            .expect("run supervisor check");
        let value: Value = serde_json::from_slice(&output.stdout).expect("problems");
        let problems = value["problems"].as_array().unwrap().clone();
        let plan = Command::new(env!("CARGO_BIN_EXE_supervisor"))
            .args(["plan", "--format", "json"])
            .args(args.iter().flat_map(|arg| ["-c".to_string(), arg.clone()]))
            .arg("--env-file")
            .arg(env_file())
            .env_remove("PORT_OFFSET")
            .output()
            .expect("run supervisor plan");
        let plan: Value = serde_json::from_slice(&plan.stdout).expect("plan");
        let mut levels: Vec<String> = plan["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|level| level.to_string())
            .collect();
        levels.sort();
        (comparable_problems(&problems), levels)
    };
    assert_eq!(
        pair(&[
            format!("{}@mainpc", main.display()),
            format!("{}@pc2", pc2.display())
        ]),
        pair(&[both.display().to_string()]),
        "MainPC + PC2 converted together"
    );
}
