//! `supervisor check`, `check-ports` and `plan` on small manifests written
//! for each case: every class of bad input, each check, and the JSON shape.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn supervisor(dir: &Path, args: &[&str]) -> Run {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .args(args)
        .current_dir(dir)
        .env_remove("PORT_OFFSET")
        .env("SUPERVISOR_LOG", "warn")
        .output()
        .expect("run supervisor");
    Run {
        code: output
            .status
            .code()
            .expect("exited normally, not by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path
}

/// `check --json` on one manifest text: (exit code, problems).
fn check_json(text: &str) -> (i32, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "m.yaml", text);
    let run = supervisor(
        dir.path(),
        &["check", "--no-bind-check", "--json", "-c", "m.yaml"],
    );
    let value: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}\n{}", run.stdout, run.stderr));
    (run.code, value["problems"].as_array().unwrap().clone())
}

fn of_kind<'a>(problems: &'a [Value], kind: &str) -> Vec<&'a Value> {
    problems
        .iter()
        .filter(|problem| problem["kind"] == kind)
        .collect()
}

const AGENT: &str = "command: [\"true\"]";

#[test]
fn bad_yaml_names_the_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.yaml",
        "version: 1\nagents:\n  a:\n    command: [\"x\"\n  b: {}\n",
    );
    let run = supervisor(dir.path(), &["check", "-c", "m.yaml"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("m.yaml:"), "{}", run.stderr);
    assert!(run.stderr.contains("invalid YAML"), "{}", run.stderr);
}

#[test]
fn wrong_types_name_field_and_line() {
    let (code, problems) = check_json(
        "version: 1\nagents:\n  db:\n    command: [\"true\"]\n    port: seventy\n    required: maybe\n  api:\n    command: [\"true\"]\n    dependencies: db\n",
    );
    assert_eq!(code, 2);
    let messages: Vec<String> = problems
        .iter()
        .map(|problem| format!("{}:{}", problem["line"], problem["message"]))
        .collect();
    assert!(
        messages.iter().any(|m| m.starts_with("5:")
            && m.contains("agents.db.port")
            && m.contains("expected an integer")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("9:") && m.contains("agents.api.dependencies")),
        "{messages:?}"
    );
}

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    let (code, problems) =
        check_json("version: 1\nagents:\n  db:\n    command: [\"true\"]\n    dependncies: []\n");
    assert_eq!(code, 2);
    assert_eq!(problems[0]["line"], 5);
    let message = problems[0]["message"].as_str().unwrap();
    assert!(
        message.contains("unknown field `dependncies`")
            && message.contains("did you mean `dependencies`"),
        "{message}"
    );
    let (code, problems) = check_json("version: 1\nagnets: {}\n");
    assert_eq!(code, 2);
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `agents`"),
        "{problems:?}"
    );
}

/// Issue 15: an unset variable is a located problem, not the end of the
/// check: exit 1 (errors found), and the other checks still run.
#[test]
fn unset_variables_are_named_with_their_line() {
    let (code, problems) = check_json(
        "version: 1\nagents:\n  db:\n    command: [\"run\", \"${SURELY_UNSET_VAR_1}\"]\n    env: { A: \"${SURELY_UNSET_VAR_2}\" }\n    dependencies: [ghost]\n",
    );
    assert_eq!(code, 1);
    assert_eq!(
        of_kind(&problems, "unknown_dependency").len(),
        1,
        "{problems:?}"
    );
    let unset = of_kind(&problems, "unset_variable");
    assert_eq!(unset.len(), 2, "{problems:?}");
    assert!(
        unset[0]["message"]
            .as_str()
            .unwrap()
            .contains("SURELY_UNSET_VAR_1")
    );
    assert_eq!(unset[0]["line"], 4);
    assert_eq!(unset[1]["line"], 5);
}

#[test]
fn variables_defaults_arithmetic_and_legacy_booleans() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "vars.env",
        "OFFSET_HOST=10.1.2.3\nPORT_OFFSET=100\n",
    );
    write(
        dir.path(),
        "m.yaml",
        "pc2_services:\n  - name: A\n    script_path: a.py\n    host: ${OFFSET_HOST}\n    port: ${PORT_OFFSET}+7200\n    health_check_port: \"${PORT_OFFSET}+8200\"\n    required: ${RTAP_UNSET_FLAG:-false} == 'false'\n    config: { backend: \"${BACKEND:-redis}\" }\n",
    );
    let run = supervisor(
        dir.path(),
        &[
            "check-ports",
            "--no-bind-check",
            "--json",
            "-c",
            "m.yaml",
            "--env-file",
            "vars.env",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    let ports: Vec<(u64, String)> = value["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["port"].as_u64().unwrap(),
                row["host"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(ports.contains(&(7300, "10.1.2.3".to_string())), "{ports:?}");
    assert!(ports.contains(&(8300, "10.1.2.3".to_string())), "{ports:?}");
}

#[test]
fn cycles_of_length_one_two_and_many_are_printed_in_order() {
    let text = format!(
        "version: 1\nagents:\n  self: {{ {AGENT}, dependencies: [self] }}\n  x: {{ {AGENT}, dependencies: [y] }}\n  y: {{ {AGENT}, dependencies: [x] }}\n  a: {{ {AGENT}, dependencies: [b] }}\n  b: {{ {AGENT}, dependencies: [c] }}\n  c: {{ {AGENT}, dependencies: [d] }}\n  d: {{ {AGENT}, dependencies: [a] }}\n  ok: {{ {AGENT}, dependencies: [a] }}\n"
    );
    let (code, problems) = check_json(&text);
    assert_eq!(code, 1);
    let cycles: Vec<(Vec<String>, String, u64)> = of_kind(&problems, "cycle")
        .iter()
        .map(|problem| {
            (
                serde_json::from_value(problem["agents"].clone()).unwrap(),
                problem["message"].as_str().unwrap().to_string(),
                problem["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(cycles.len(), 3, "{problems:?}");
    assert_eq!(cycles[0].0, ["a", "b", "c", "d"]);
    assert!(
        cycles[0].1.contains("a -> b -> c -> d -> a"),
        "{}",
        cycles[0].1
    );
    assert_eq!(cycles[0].2, 6);
    assert_eq!(cycles[1].0, ["self"]);
    assert!(cycles[1].1.contains("depends on itself"));
    assert_eq!(cycles[2].0, ["x", "y"]);
    assert!(cycles[2].1.contains("x -> y -> x"));
}

#[test]
fn ports_zero_and_too_large_are_invalid() {
    let (code, problems) = check_json(&format!(
        "version: 1\nagents:\n  a: {{ {AGENT}, port: 0 }}\n  b: {{ {AGENT}, port: 70000 }}\n  c: {{ {AGENT}, port: -5 }}\n"
    ));
    assert_eq!(code, 1);
    let invalid = of_kind(&problems, "invalid_port");
    let ports: Vec<i64> = invalid
        .iter()
        .map(|problem| problem["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [0, 70000, -5]);
    assert_eq!(invalid[1]["line"], 4);
}

#[test]
fn an_empty_manifest_reads_with_a_warning() {
    for text in ["", "# nothing\n", "version: 1\n", "version: 1\nagents:\n"] {
        let (code, problems) = check_json(text);
        assert_eq!(code, 0, "{text:?}: {problems:?}");
        assert_eq!(of_kind(&problems, "no_agents").len(), 1, "{text:?}");
    }
    let (code, problems) = check_json("- just\n- a list\n");
    assert_eq!(code, 2, "{problems:?}");
}

#[test]
fn duplicates_unknown_dependencies_and_optional_dependencies() {
    let text = format!(
        "version: 1\nagents:\n  - {{ name: db, {AGENT} }}\n  - {{ name: db, {AGENT} }}\n  - {{ name: api, {AGENT}, depends_on: [dbb, cache] }}\n  - {{ name: cache, {AGENT}, required: false }}\n  - {{ name: web, {AGENT}, dependencies: [api], dependencies: [db] }}\n"
    );
    let (code, problems) = check_json(&text);
    assert_eq!(code, 1);
    let duplicate = of_kind(&problems, "duplicate_agent");
    assert_eq!(
        (
            duplicate.len(),
            duplicate[0]["agent"].as_str(),
            duplicate[0]["line"].as_u64()
        ),
        (1, Some("db"), Some(4))
    );
    let unknown = of_kind(&problems, "unknown_dependency");
    assert_eq!(unknown.len(), 1);
    assert_eq!(
        (
            unknown[0]["agent"].as_str(),
            unknown[0]["dependency"].as_str()
        ),
        (Some("api"), Some("dbb"))
    );
    assert!(
        unknown[0]["suggestion"]
            .as_str()
            .unwrap()
            .contains("did you mean `db`")
    );
    let optional = of_kind(&problems, "required_on_optional");
    assert_eq!(
        (optional.len(), optional[0]["severity"].as_str()),
        (1, Some("warning"))
    );
    let duplicate_key = of_kind(&problems, "duplicate_key");
    assert_eq!(
        (duplicate_key.len(), duplicate_key[0]["line"].as_u64()),
        (1, Some(7))
    );
}

#[test]
fn port_conflicts_get_a_free_replacement_not_used_in_the_manifest() {
    let text = format!(
        "version: 1\nagents:\n  a: {{ {AGENT}, port: 47100, health_check_port: 47101 }}\n  b: {{ {AGENT}, port: 47100, config: {{ zmq_port: 47102 }} }}\n  c: {{ {AGENT}, port: 47103, config: {{ grpc_port: 47101 }} }}\n"
    );
    let (code, problems) = check_json(&text);
    assert_eq!(code, 1);
    let conflicts = of_kind(&problems, "port_conflict");
    assert_eq!(conflicts.len(), 2, "{problems:?}");
    assert_eq!(conflicts[0]["port"], 47100);
    assert_eq!(conflicts[0]["host"], "localhost");
    assert_eq!(
        conflicts[0]["users"],
        serde_json::json!([{"agent": "a", "field": "port"}, {"agent": "b", "field": "port"}])
    );
    assert_eq!(
        conflicts[1]["users"][1],
        serde_json::json!({"agent": "c", "field": "config.grpc_port"})
    );
    let replacements: Vec<u64> = conflicts
        .iter()
        .map(|problem| problem["replacement"].as_u64().unwrap())
        .collect();
    for replacement in &replacements {
        assert!(
            ![47100, 47101, 47102, 47103].contains(replacement),
            "{replacement} is used in the manifest"
        );
    }
    assert_ne!(replacements[0], replacements[1]);
}

#[test]
fn ports_bound_by_another_process_are_reported() {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (code, problems) = {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "m.yaml",
            &format!(
                "version: 1\nagents:\n  a: {{ {AGENT}, port: {port} }}\n  far: {{ {AGENT}, port: {port}, host: far-away-machine }}\n"
            ),
        );
        let run = supervisor(dir.path(), &["check", "--json", "-c", "m.yaml"]);
        let value: Value = serde_json::from_str(&run.stdout).unwrap();
        (run.code, value["problems"].as_array().unwrap().clone())
    };
    assert_eq!(code, 1);
    let in_use = of_kind(&problems, "port_in_use");
    assert_eq!(in_use.len(), 1, "only the agent of this host: {problems:?}");
    assert_eq!(in_use[0]["agent"], "a");
    drop(listener);
}

/// The bind check tests only the ports the kernel says may be held: a
/// listener on one loopback address is found and reported, a free port is not.
#[test]
fn a_loopback_listener_is_reported_and_a_free_port_is_not() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let free = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.yaml",
        &format!(
            "version: 1\nagents:\n  held: {{ {AGENT}, port: {port} }}\n  open: {{ {AGENT}, port: {free} }}\n"
        ),
    );
    let run = supervisor(dir.path(), &["check", "--json", "-c", "m.yaml"]);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    let problems = value["problems"].as_array().unwrap().clone();
    assert_eq!(run.code, 1, "{problems:?}");
    let in_use = of_kind(&problems, "port_in_use");
    assert_eq!(in_use.len(), 1, "only the held port: {problems:?}");
    assert_eq!(in_use[0]["agent"], "held");
    assert_eq!(in_use[0]["port"], port);
    assert!(
        in_use[0]["replacement"]
            .as_u64()
            .is_some_and(|replacement| replacement != u64::from(port))
    );
    drop(listener);

    // Once the listener is gone, the same manifest passes.
    let run = supervisor(dir.path(), &["check", "--json", "-c", "m.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

#[test]
fn check_ports_fix_changes_only_the_conflicting_values() {
    let dir = tempfile::tempdir().unwrap();
    let original = "# keep this comment\nversion: 1\nagents:\n  a:\n    command: [\"true\"]\n    port: 47200   # the first one\n  b:\n    command: [\"true\"]\n    port: \"47200\"\n  c:\n    command: [\"true\"]\n    port: ${PORT_OFFSET}+47200\n";
    write(dir.path(), "m.yaml", original);
    let run = supervisor(
        dir.path(),
        &["check-ports", "--no-bind-check", "--fix", "-c", "m.yaml"],
    );
    // Three users of one port: two of them move (issue 15, class 8), so
    // the fixed file is clean.
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("every port conflict is fixed"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("m.yaml")).unwrap(),
        original,
        "the original is untouched"
    );
    let fixed = std::fs::read_to_string(dir.path().join("m.fixed.yaml")).unwrap();
    let changed: Vec<(&str, &str)> = original
        .lines()
        .zip(fixed.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed.len(),
        2,
        "one conflict (three users), two values changed:\n{fixed}"
    );
    assert!(
        changed[0].0.contains("\"47200\"") && changed[0].1.starts_with("    port: \"472"),
        "{changed:?}"
    );
    assert!(
        changed[1].0.contains("${PORT_OFFSET}+47200")
            && changed[1].1.starts_with("    port: ${PORT_OFFSET}+472"),
        "{changed:?}"
    );
    assert!(
        fixed.contains("# keep this comment") && fixed.contains("# the first one"),
        "{fixed}"
    );
    let run = supervisor(
        dir.path(),
        &["check-ports", "--no-bind-check", "-c", "m.fixed.yaml"],
    );
    assert!(run.stdout.contains("0 conflicts"), "{}", run.stdout);
}

#[test]
fn check_ports_fix_keeps_the_comment_after_a_quoted_port() {
    let dir = tempfile::tempdir().unwrap();
    let original = "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    port: 47210\n  b:\n    command: [\"true\"]\n    port: '47210'   # shared by mistake\n";
    write(dir.path(), "m.yaml", original);
    let run = supervisor(
        dir.path(),
        &["check-ports", "--no-bind-check", "--fix", "-c", "m.yaml"],
    );
    // Everything found was fixed: the fixed file is checked again, clean.
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("every port conflict is fixed"),
        "{}",
        run.stderr
    );
    let fixed = std::fs::read_to_string(dir.path().join("m.fixed.yaml")).unwrap();
    let line = fixed.lines().last().unwrap();
    assert!(
        line.starts_with("    port: '472")
            && line.ends_with("'   # shared by mistake")
            && !line.contains("47210"),
        "{fixed}"
    );
}

#[test]
fn several_manifests_form_one_graph_with_hosts() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.yaml",
        &format!(
            "version: 1\nagents:\n  hub: {{ {AGENT}, port: 47300 }}\n  relay: {{ {AGENT}, port: 47301, dependencies: [remote] }}\n"
        ),
    );
    write(
        dir.path(),
        "pc2.yaml",
        &format!(
            "version: 1\nhost: pc2\nagents:\n  remote: {{ {AGENT}, port: 47300, dependencies: [hub] }}\n"
        ),
    );
    let run = supervisor(
        dir.path(),
        &[
            "check",
            "--no-bind-check",
            "-c",
            "main.yaml",
            "-c",
            "pc2.yaml",
        ],
    );
    assert_eq!(
        run.code, 0,
        "same port on two hosts is fine, cross-file dependencies resolve: {}{}",
        run.stdout, run.stderr
    );
    let run = supervisor(
        dir.path(),
        &[
            "check",
            "--no-bind-check",
            "-c",
            "main.yaml",
            "-c",
            "pc2.yaml@localhost",
        ],
    );
    assert_eq!(run.code, 1, "on one host the ports clash: {}", run.stderr);
    assert!(run.stderr.contains("port 47300"), "{}", run.stderr);
    let run = supervisor(dir.path(), &["plan", "-c", "main.yaml", "-c", "pc2.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("level 0:\n  hub [localhost]\nlevel 1:\n  remote [pc2] <- hub\nlevel 2:\n  relay [localhost] <- remote"), "{}", run.stdout);
    assert!(
        run.stdout.contains("critical path (3 agents"),
        "{}",
        run.stdout
    );
}

#[test]
fn plan_writes_dot_and_refuses_cycles() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.yaml",
        &format!(
            "version: 1\nagents:\n  a: {{ {AGENT} }}\n  b: {{ {AGENT}, dependencies: [a] }}\n"
        ),
    );
    let run = supervisor(dir.path(), &["plan", "--format", "dot", "-c", "m.yaml"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.starts_with("digraph plan {") && run.stdout.contains("\"b\" -> \"a\";"),
        "{}",
        run.stdout
    );
    write(
        dir.path(),
        "cycle.yaml",
        &format!(
            "version: 1\nagents:\n  a: {{ {AGENT}, dependencies: [b] }}\n  b: {{ {AGENT}, dependencies: [a] }}\n"
        ),
    );
    let run = supervisor(dir.path(), &["plan", "-c", "cycle.yaml"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("a -> b -> a"), "{}", run.stderr);
}

#[test]
fn missing_files_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = supervisor(dir.path(), &["check", "-c", "nope.yaml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("nope.yaml") && run.stderr.contains("cannot read"),
        "{}",
        run.stderr
    );
    assert_eq!(supervisor(dir.path(), &["check"]).code, 2);
    assert_eq!(supervisor(dir.path(), &["no-such-command"]).code, 2);
}

#[test]
fn help_lists_the_exit_codes() {
    let run = supervisor(Path::new("."), &["--help"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("Exit codes:")
            && run.stdout.contains("2  the manifest could not be read"),
        "{}",
        run.stdout
    );
}

/// Issue 14, item 8: `plan` marks disabled agents and leaves them off the
/// critical path (as `up` starts their dependents without them); `check`
/// warns about the dependency with its line.
#[test]
fn plan_marks_disabled_agents_and_check_warns_about_depending_on_them() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.yaml",
        &format!(
            "version: 1\nagents:\n  slow: {{ {AGENT}, enabled: false, readiness: {{ start_period: 30s }} }}\n  api: {{ {AGENT}, dependencies: [slow] }}\n"
        ),
    );
    let run = supervisor(dir.path(), &["plan", "-c", "m.yaml"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("  slow [localhost] (disabled: not started; dependents start without it)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("critical path (1 agents, about 1.0s"),
        "{}",
        run.stdout
    );
    let run = supervisor(dir.path(), &["plan", "--format", "json", "-c", "m.yaml"]);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["disabled"], serde_json::json!(["slow"]));
    let (code, problems) = check_json(&std::fs::read_to_string(dir.path().join("m.yaml")).unwrap());
    assert_eq!(code, 0);
    let warned = of_kind(&problems, "disabled_dependency");
    assert_eq!(warned.len(), 1, "{problems:?}");
    assert_eq!(warned[0]["line"], 4);
}

/// Issue 15, class 9: `plan` with a knot shows the levels outside it, the
/// knot with its cycles, and what waits behind it.
#[test]
fn plan_shows_levels_around_a_knot() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.yaml",
        &format!(
            "version: 1\nagents:\n  base: {{ {AGENT} }}\n  x: {{ {AGENT}, dependencies: [y, base] }}\n  y: {{ {AGENT}, dependencies: [x] }}\n  after: {{ {AGENT}, dependencies: [x] }}\n"
        ),
    );
    let run = supervisor(dir.path(), &["plan", "-c", "m.yaml"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("level 0:\n  base [localhost]\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("knot (cannot start: 1 cycles): x, y\n  x -> y -> x\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("blocked (wait on a knot): after"),
        "{}",
        run.stdout
    );
}

/// Issue 15, class 7: errors first; warnings of one kind grouped into one
/// line with a count unless `--verbose`; `--severity` filters.
#[test]
fn warnings_of_one_kind_are_grouped_errors_come_first_and_severity_filters() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("version: 1\nagents:\n  off: {{ {AGENT}, enabled: false }}\n");
    for index in 0..5 {
        text.push_str(&format!("  a{index}: {{ {AGENT}, dependencies: [off] }}\n"));
    }
    text.push_str(&format!("  z: {{ {AGENT}, dependencies: [ghost] }}\n"));
    write(dir.path(), "m.yaml", &text);
    let run = supervisor(dir.path(), &["check", "--no-file-check", "-c", "m.yaml"]);
    assert_eq!(run.code, 1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines[0].starts_with("error[unknown_dependency]: m.yaml:9:"),
        "{}",
        run.stderr
    );
    let grouped: Vec<&&str> = lines
        .iter()
        .filter(|line| line.starts_with("warning[disabled_dependency]"))
        .collect();
    assert_eq!(grouped.len(), 1, "{}", run.stderr);
    assert!(
        grouped[0].contains("5 warnings of this kind (--verbose lists them); the first: m.yaml:4:"),
        "{}",
        run.stderr
    );
    let run = supervisor(
        dir.path(),
        &["check", "--no-file-check", "--verbose", "-c", "m.yaml"],
    );
    assert_eq!(
        run.stderr.matches("warning[disabled_dependency]").count(),
        5,
        "{}",
        run.stderr
    );
    let run = supervisor(
        dir.path(),
        &[
            "check",
            "--no-file-check",
            "--severity",
            "error",
            "-c",
            "m.yaml",
        ],
    );
    assert_eq!(run.code, 1);
    assert!(!run.stderr.contains("warning["), "{}", run.stderr);
    let run = supervisor(
        dir.path(),
        &[
            "check",
            "--no-file-check",
            "--severity",
            "warning",
            "--json",
            "-c",
            "m.yaml",
        ],
    );
    assert_eq!(run.code, 1, "the exit code still counts the error");
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    let problems = value["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 5);
    assert!(
        problems
            .iter()
            .all(|problem| problem["severity"] == "warning")
    );
}
