//! `check`, `check-ports` and `plan` on one small manifest per legacy format
//! (tests/fixtures/legacy/, written for these tests, not copied from the
//! corpus), each with the defects its header comment lists: exit codes (0
//! clean, 1 problems, 2 unreadable), the format detected, the agents read,
//! and every finding exactly (cycle members, conflicting ports and their
//! users, unknown dependencies, lines). Needs nothing outside the
//! repository; tests/corpus.rs runs the same commands over the real corpus
//! when it is there.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `tests/fixtures/legacy/<name>` as a `--config` value (callers may add `@host`).
fn fixture(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy");
    format!("{}/{name}", dir.display())
}

/// `check` is told not to look for the scripts the manifests name:
/// the fixtures are manifests only, the
/// scripts they name do not exist, and the findings tested are about the
/// manifests.
fn no_file_check() -> &'static [&'static str] {
    &["--no-file-check"]
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `supervisor <command> -c <config> --env-file corpus.env <extra>`, with
/// PORT_OFFSET unset unless `env` sets it.
fn run(command: &str, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let env_file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus.env");
    let output = Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .arg(command)
        .arg("-c")
        .arg(config)
        .arg("--env-file")
        .arg(env_file)
        .args(if command == "check" {
            no_file_check()
        } else {
            &[]
        })
        .args(extra)
        .env_remove("PORT_OFFSET")
        .env_remove("SCENE_OPTIONAL")
        .env("SUPERVISOR_LOG", "warn")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run supervisor");
    let output = Output {
        code: output
            .status
            .code()
            .expect("exited, not killed by a signal"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !output.stderr.contains("panicked"),
        "{command} {config} panicked: {}",
        output.stderr
    );
    output
}

/// One problem of `--json` output as one comparable line:
/// `<severity> <kind> line <line>: <detail>`.
fn finding(problem: &Value) -> String {
    let text = |key: &str| problem[key].as_str().unwrap_or_default().to_string();
    let detail = match text("kind").as_str() {
        "cycle" => problem["agents"]
            .as_array()
            .expect("cycle agents")
            .iter()
            .map(|agent| agent.as_str().expect("an agent name"))
            .collect::<Vec<_>>()
            .join(" -> "),
        "port_conflict" => {
            let users: Vec<String> = problem["users"]
                .as_array()
                .expect("conflict users")
                .iter()
                .map(|user| {
                    format!(
                        "{}.{}",
                        user["agent"].as_str().unwrap(),
                        user["field"].as_str().unwrap()
                    )
                })
                .collect();
            format!(
                "{} on {}: {}",
                problem["port"],
                text("host"),
                users.join(", ")
            )
        }
        "unknown_dependency" | "required_on_optional" => {
            format!("{} -> {}", text("agent"), text("dependency"))
        }
        "duplicate_agent" => text("agent"),
        _ => text("message"),
    };
    let line = match &problem["line"] {
        Value::Null => "-".to_string(),
        line => line.to_string(),
    };
    format!(
        "{} {} line {line}: {detail}",
        text("severity"),
        text("kind")
    )
}

/// `check --json`: exit code and findings (sorted).
fn check(config: &str, env: &[(&str, &str)]) -> (i32, Vec<String>) {
    let output = run("check", config, &["--json", "--no-bind-check"], env);
    let value: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("check {config}: {error}: {}", output.stderr));
    let mut findings: Vec<String> = value["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(finding)
        .collect();
    findings.sort();
    (output.code, findings)
}

/// Plain `check`: the agents read and the format detected, from its summary
/// `checked N agents in FILE (FORMAT): ...`.
fn read(config: &str) -> (usize, String) {
    let output = run("check", config, &["--no-bind-check"], &[]);
    let summary = output
        .stdout
        .lines()
        .find(|line| line.starts_with("checked "))
        .unwrap_or_else(|| {
            panic!(
                "no summary for {config}: {}{}",
                output.stdout, output.stderr
            )
        });
    let agents = summary
        .split_whitespace()
        .nth(1)
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no agent count in {summary:?}"));
    let format = summary
        .rsplit_once(" (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(format, _)| format.to_string())
        .unwrap_or_else(|| panic!("no format in {summary:?}"));
    (agents, format)
}

/// `check-ports --json`: exit code, `agent.field=port (kind)` rows (in the
/// command's order), and the port findings.
fn check_ports(config: &str, env: &[(&str, &str)]) -> (i32, Vec<String>, Vec<String>) {
    let output = run("check-ports", config, &["--json", "--no-bind-check"], env);
    let value: Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("check-ports {config}: {error}: {}", output.stderr));
    // An unreadable manifest has problems and no `ports`.
    let rows = value["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|row| {
            format!(
                "{}.{}={} ({})",
                row["agent"].as_str().unwrap(),
                row["field"].as_str().unwrap(),
                row["port"],
                row["kind"].as_str().unwrap()
            )
        })
        .collect();
    let mut findings: Vec<String> = value["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(finding)
        .collect();
    findings.sort();
    (output.code, rows, findings)
}

/// `plan --format json`: exit code, levels (none when no plan was printed), stderr.
fn plan(config: &str) -> (i32, Option<Vec<Vec<String>>>, String) {
    let output = run("plan", config, &["--format", "json"], &[]);
    let levels = (!output.stdout.trim().is_empty()).then(|| {
        let value: Value = serde_json::from_str(&output.stdout)
            .unwrap_or_else(|error| panic!("plan {config}: {error}: {}", output.stdout));
        serde_json::from_value(value["levels"].clone()).expect("levels")
    });
    (output.code, levels, output.stderr)
}

fn levels(levels: &[&[&str]]) -> Option<Vec<Vec<String>>> {
    Some(
        levels
            .iter()
            .map(|level| level.iter().map(|name| name.to_string()).collect())
            .collect(),
    )
}

/// The three ports `check` counts for an agent with only `port`: the port,
/// the BaseAgent health socket (port + 1) and its HTTP server (port + 2).
fn implicit_ports(agent: &str, port: u16) -> [String; 3] {
    [
        format!("{agent}.port={port} (explicit)"),
        format!(
            "{agent}.health_check_port (implicit: port+1)={} (implicit)",
            port + 1
        ),
        format!(
            "{agent}.http health (implicit: health_check_port+1)={} (legacy-http)",
            port + 2
        ),
    ]
}

#[test]
fn top_level_groups_cycle_and_unknown_dependency() {
    let config = fixture("top_level_groups.yaml");
    assert_eq!(read(&config), (6, "legacy:groups".to_string()));
    assert_eq!(
        check(&config, &[]),
        (
            1,
            vec![
                "error cycle line 20: PlannerAgent -> ReflectionAgent -> ReasonerAgent".to_string(),
                "error unknown_dependency line 26: SummaryAgent -> KnowledgeBase".to_string(),
            ]
        )
    );
    // The unknown name is a near miss of a defined one.
    let output = run("check", &config, &["--no-bind-check"], &[]);
    assert!(
        output.stderr.contains("did you mean `KnowledgeBaseAgent`?"),
        "{}",
        output.stderr
    );
    // No two of its 18 ports (port, port+1, port+2 for six agents) meet.
    let (code, rows, findings) = check_ports(&config, &[]);
    assert_eq!((code, findings), (0, vec![]));
    assert_eq!(rows.len(), 18, "{rows:?}");
    for port in implicit_ports("GatewayRouter", 6210) {
        assert!(rows.contains(&port), "{port} not in {rows:?}");
    }
    // A plan around the knot (issue 15, class 9): the levels of what can
    // start, the knot listed; the cycle is printed, the exit code is 1.
    let (code, levels_found, stderr) = plan(&config);
    assert_eq!(
        (code, levels_found),
        (
            1,
            levels(&[&["GatewayRouter", "SummaryAgent"], &["KnowledgeBaseAgent"]])
        )
    );
    assert!(
        stderr.contains(
            "dependency cycle: PlannerAgent -> ReflectionAgent -> ReasonerAgent -> PlannerAgent"
        ),
        "{stderr}"
    );
}

#[test]
fn simple_agents_implicit_health_port_clash() {
    let config = fixture("simple_agents.yaml");
    assert_eq!(read(&config), (5, "legacy:simple".to_string()));
    let expected = vec![
        "error port_conflict line 25: 6321 on localhost: AudioBuffer.health_check_port (implicit: port+1), AudioBufferClient.port".to_string(),
        // A consequence of the same clash, on the BaseAgent HTTP ports: a warning.
        "warning port_conflict line 25: 6322 on localhost: AudioBuffer.http health (implicit: health_check_port+1), AudioBufferClient.health_check_port (implicit: port+1)".to_string(),
    ];
    assert_eq!(check(&config, &[]), (1, expected.clone()));
    let (code, rows, findings) = check_ports(&config, &[]);
    assert_eq!((code, findings), (1, expected));
    // Disabled agents' ports are counted too (they may be enabled later).
    assert_eq!(rows.len(), 15, "{rows:?}");
    for port in implicit_ports("AudioBuffer", 6320)
        .into_iter()
        .chain(implicit_ports("NoiseGate", 6340))
    {
        assert!(rows.contains(&port), "{port} not in {rows:?}");
    }
    // No dependencies in this format: one level; the clash fails the plan.
    let (code, levels_found, _) = plan(&config);
    assert_eq!(
        (code, levels_found),
        (
            1,
            levels(&[&[
                "AudioBuffer",
                "AudioBufferClient",
                "HotwordTrainer",
                "NoiseGate",
                "WakeWordDetector"
            ]])
        )
    );
}

#[test]
fn pc2_services_health_port_clash_and_agent_in_both_lists() {
    let config = fixture("pc2_services.yaml");
    // Both lists are read: five in pc2_services, one in core_services.
    assert_eq!(read(&config), (6, "legacy:pc2_services".to_string()));
    let (code, findings) = check(&config, &[]);
    assert_eq!(
        (code, findings),
        (
            1,
            vec![
                "error duplicate_agent line 24: MemoryKeeperService".to_string(),
                "error port_conflict line 20: 8331 on localhost: DreamSimulator.health_check_port, TutorService.health_check_port".to_string(),
                "warning port_conflict line 20: 8332 on localhost: DreamSimulator.http health (implicit: health_check_port+1), TutorService.http health (implicit: health_check_port+1)".to_string(),
            ]
        )
    );
    let (code, rows, findings) = check_ports(&config, &[]);
    assert_eq!(code, 1);
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(
        rows.contains(&"TutorService.health_check_port=8331 (explicit)".to_string()),
        "{rows:?}"
    );
    // `host: 0.0.0.0` is this machine; the duplicate is planned once.
    let (code, levels_found, _) = plan(&config);
    assert_eq!(
        (code, levels_found),
        (
            1,
            levels(&[
                &["ContextStore", "TutorService"],
                &["EpisodeIndexer", "MemoryKeeperService"],
                &["DreamSimulator"],
            ])
        )
    );
}

#[test]
fn settings_agents_is_clean() {
    let config = fixture("settings_agents.yaml");
    assert_eq!(read(&config), (5, "legacy:settings+agents".to_string()));
    // `${PC2_IP}` in `settings` is unset: settings are not read, so no error.
    assert_eq!(check(&config, &[]), (0, vec![]));
    let (code, rows, findings) = check_ports(&config, &[]);
    assert_eq!((code, findings), (0, vec![]));
    assert_eq!(rows.len(), 15, "{rows:?}");
    for row in [
        "SignalBus.port=7450 (explicit)",
        "SignalBus.health_check_port=7460 (explicit)",
        "RecallScheduler.health_check_port (implicit: port+1)=7473 (implicit)",
    ] {
        assert!(rows.contains(&row.to_string()), "{row} not in {rows:?}");
    }
    let (code, levels_found, stderr) = plan(&config);
    assert_eq!(
        (code, levels_found),
        (
            0,
            levels(&[
                &["SignalBus"],
                &["Registry"],
                &["MicListener", "RecallService"],
                &["RecallScheduler"],
            ])
        ),
        "{stderr}"
    );
}

#[test]
fn agent_groups_quirks_offsets_and_required_expression() {
    let config = fixture("agent_groups.yaml");
    // The agent of the nested group is left out, as the legacy launcher
    // did (issue 15, class 3); the empty group and the mis-indented
    // docker_groups block are not agents.
    assert_eq!(read(&config), (5, "legacy:agent_groups".to_string()));
    let ignored = "warning ignored line 79: `agent_groups.docker_groups.infra_core` is not an agent entry (no script_path, command or port); ignored".to_string();
    let nested = "warning misindented_group line 44: `agent_groups.foundation_services.utility_services` is indented one level too deep (inside group `foundation_services`): the legacy launcher reads agents two levels under `agent_groups`, saw `utility_services` as an entry without `script_path` and started none of its agents (LogShipper); the supervisor does the same, no other agent depends on them".to_string();
    // Issue 14, item 8: the dependency on the disabled CameraBridge.
    let disabled = "warning disabled_dependency line 64: agent `GestureTracker` depends on `CameraBridge`, which is disabled (`enabled: false`): `up` does not start `CameraBridge` and starts `GestureTracker` without it".to_string();
    let mut expected = vec![disabled.clone(), ignored.clone(), nested.clone()];
    expected.sort();
    assert_eq!(check(&config, &[]), (0, expected));
    // `required: ${SCENE_OPTIONAL:-false} == 'false'` is evaluated: with
    // SCENE_OPTIONAL=true SceneDescriber is optional, and the required
    // SceneNarrator depends on it.
    let (code, findings) = check(&config, &[("SCENE_OPTIONAL", "true")]);
    assert_eq!(code, 0, "{findings:?}");
    let mut expected = vec![
        disabled,
        ignored,
        nested,
        "warning required_on_optional line 76: SceneNarrator -> SceneDescriber".to_string(),
    ];
    expected.sort();
    assert_eq!(findings, expected);
    // "${PORT_OFFSET}+N" ports: N with PORT_OFFSET unset, N + offset with it.
    // `config.redis.port` is a client's port, not counted.
    let (code, rows, findings) = check_ports(&config, &[]);
    assert_eq!((code, findings), (0, vec![]));
    assert_eq!(rows.len(), 15, "{rows:?}");
    assert!(rows.contains(&"ConfigVault.port=7510 (explicit)".to_string()));
    assert!(rows.contains(&"SceneNarrator.health_check_port=8560 (explicit)".to_string()));
    assert!(!rows.iter().any(|row| row.contains("6379")), "{rows:?}");
    let (code, rows, _) = check_ports(&config, &[("PORT_OFFSET", "100")]);
    assert_eq!(code, 0);
    assert!(
        rows.contains(&"ConfigVault.port=7610 (explicit)".to_string()),
        "{rows:?}"
    );
    let (code, levels_found, stderr) = plan(&config);
    assert_eq!(
        (code, levels_found),
        (
            0,
            levels(&[
                &["ConfigVault"],
                &["CameraBridge", "SceneDescriber"],
                &["GestureTracker", "SceneNarrator"],
            ])
        ),
        "{stderr}"
    );
}

#[test]
fn machine_profiles_v3_clash_only_on_pc2() {
    let config = fixture("machine_profiles_v3.yaml");
    let format = "legacy:agent_groups+machine_profiles".to_string();
    // Without a machine every group is read, as for one host.
    assert_eq!(read(&config), (5, format.clone()));
    let clash = |host: &str| {
        format!(
            "error port_conflict line 49: 7600 on {host}: ServiceDirectory.port, ResponseRanker.port"
        )
    };
    assert_eq!(check(&config, &[]), (1, vec![clash("localhost")]));
    // PC2 runs core_services and pc2_services: the clash is there.
    let pc2 = format!("{config}@pc2");
    assert_eq!(read(&pc2), (3, format.clone()));
    assert_eq!(
        check(&pc2, &[]),
        (
            1,
            vec![
                clash("pc2"),
                "warning ignored line 33: `agent_groups.speech_services` is not in `machine_profiles.pc2.enabled_groups`; its agents are left out".to_string(),
            ]
        )
    );
    let (code, _, findings) = check_ports(&pc2, &[]);
    assert_eq!((code, findings), (1, vec![clash("pc2")]));
    let (code, levels_found, _) = plan(&pc2);
    assert_eq!(
        (code, levels_found),
        (
            1,
            levels(&[
                &["ServiceDirectory"],
                &["ResponseRanker"],
                &["DreamJournal"]
            ])
        )
    );
    // MainPC runs core_services and speech_services: no clash.
    let mainpc = format!("{config}@mainpc");
    assert_eq!(read(&mainpc), (3, format));
    assert_eq!(
        check(&mainpc, &[]),
        (
            0,
            vec!["warning ignored line 46: `agent_groups.pc2_services` is not in `machine_profiles.mainpc.enabled_groups`; its agents are left out".to_string()]
        )
    );
    let (code, _, findings) = check_ports(&mainpc, &[]);
    assert_eq!((code, findings), (0, vec![]));
    let (code, levels_found, stderr) = plan(&mainpc);
    assert_eq!(
        (code, levels_found),
        (
            0,
            levels(&[
                &["ServiceDirectory"],
                &["SpeechTranscriber"],
                &["VoiceSynth"]
            ])
        ),
        "{stderr}"
    );
}

#[test]
fn include_v3_defines_no_agents_and_names_the_way_out() {
    let config = fixture("include_v3.yaml");
    assert_eq!(read(&config), (0, "legacy:include".to_string()));
    assert_eq!(
        check(&config, &[]),
        (
            0,
            vec![
                "warning ignored line 12: `include:` lists other manifests; they are not read from here".to_string(),
                "warning no_agents line -: no agents are defined".to_string(),
            ]
        )
    );
    let output = run("check", &config, &["--no-bind-check"], &[]);
    assert!(
        output
            .stderr
            .contains("pass each included file with its own --config"),
        "{}",
        output.stderr
    );
    // The included file, passed on its own as suggested: clean.
    let included = fixture("include_v3_mainpc.yaml");
    assert_eq!(read(&included), (4, "legacy:agent_groups".to_string()));
    assert_eq!(check(&included, &[]), (0, vec![]));
    let (code, _, findings) = check_ports(&included, &[]);
    assert_eq!((code, findings), (0, vec![]));
    let (code, levels_found, stderr) = plan(&included);
    assert_eq!(
        (code, levels_found),
        (
            0,
            levels(&[
                &["FrontDoor"],
                &["ReplyAuditor", "SessionTracker"],
                &["ReplyComposer"]
            ])
        ),
        "{stderr}"
    );
}

#[test]
fn mvs_services_unknown_dependency_and_config_port_clash() {
    let config = fixture("mvs_services.yaml");
    assert_eq!(read(&config), (4, "legacy:mvs_services".to_string()));
    let clash = "error port_conflict line 49: 7820 on localhost: VectorStore.config.grpc_port, QueryPlanner.port".to_string();
    assert_eq!(
        check(&config, &[]),
        (
            1,
            vec![
                clash.clone(),
                // Listed in startup_sequence, which defines no agent.
                "error unknown_dependency line 52: QueryPlanner -> IndexCache".to_string(),
            ]
        )
    );
    let (code, rows, findings) = check_ports(&config, &[]);
    assert_eq!((code, findings), (1, vec![clash]));
    assert!(
        rows.contains(&"VectorStore.config.grpc_port=7820 (explicit)".to_string()),
        "{rows:?}"
    );
    // The plan is printed without the unknown dependency, and fails.
    let (code, levels_found, _) = plan(&config);
    assert_eq!(
        (code, levels_found),
        (
            1,
            levels(&[
                &["Registry"],
                &["VectorStore"],
                &["QueryPlanner"],
                &["AnswerWriter"]
            ])
        )
    );
}

#[test]
fn unparseable_exits_2_with_the_line_of_the_break() {
    let config = fixture("unparseable.yaml");
    let syntax = vec![
        "error syntax line 25: invalid YAML: mapping values are not allowed in this context"
            .to_string(),
    ];
    assert_eq!(check(&config, &[]), (2, syntax.clone()));
    let (code, rows, findings) = check_ports(&config, &[]);
    assert_eq!((code, rows, findings), (2, vec![], syntax));
    let (code, levels_found, stderr) = plan(&config);
    assert_eq!((code, levels_found), (2, None));
    assert!(
        stderr.contains("unparseable.yaml:25: invalid YAML"),
        "{stderr}"
    );
}
