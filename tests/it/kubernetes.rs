//! Issue 20: `supervisor export kubernetes`, `run-one` and `wait-for`.
//!
//! - the export of config/startup.yaml against a golden file
//!   (`UPDATE_GOLDEN=1` rewrites it), validated against the Kubernetes 1.30
//!   and newest OpenAPI schemas offline with `kubernetes-validate` (PyPI;
//!   skipped visibly when missing), and checked semantically: every
//!   dependency has an init wait, every probe targets a declared
//!   containerPort, names are DNS-1123 and unique, no IP literal anywhere,
//!   standard labels, NetworkPolicy ingress from exactly the dependents;
//! - every corpus manifest that `check` accepts exports, validates and
//!   passes the same checks, and MainPC + PC2 together get node selectors;
//! - `run-one` with real processes: `/readyz` flips on READY, `/livez`
//!   fails once a SIGSTOPped agent misses heartbeats, errors are JSON lines
//!   on stdout; `wait-for` returns once a port answers and times out with
//!   a message naming the target.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{SUPERVISOR, cli, corpus, port, wait_until};
use supervisor::check::{self, CheckOptions};
use supervisor::export::kubernetes::{self, Options, dns_name, ip_literals};
use supervisor::manifest::{ConfigArg, LoadOptions, Manifest};

const FAULTY: &str = env!("CARGO_BIN_EXE_agent-faulty");
const NAMESPACE: &str = "agents";
const IMAGE: &str = "registry.example/agents:1";

/// `text` as `m.yaml` in a new temporary directory (removed with it).
fn manifest_in_temp(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("m.yaml");
    std::fs::write(&manifest, text).expect("write");
    (dir, manifest)
}

/// `supervisor export kubernetes --config CONFIG ARGS...`, 30 s at most.
fn export_cli(config: &str, args: &[&str]) -> common::CliOutput {
    let mut all = vec!["export", "kubernetes", "--config", config];
    all.extend_from_slice(args);
    cli(&all, Duration::from_secs(30))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubernetes-validate`, or `None` after a visible skip.
fn validator(test: &str) -> Option<&'static str> {
    let found = Command::new("kubernetes-validate")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        corpus::skip(
            test,
            "kubernetes-validate is missing (`pip install kubernetes-validate`; .ci/run installs it)",
        );
        return None;
    }
    Some("kubernetes-validate")
}

/// Validates every YAML file against the schemas of `version` (strict: no
/// unknown fields); panics with the validator's output on a failure.
fn validate(program: &str, files: &[PathBuf], version: &str) {
    let output = Command::new(program)
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate {version} failed:\n{}",
        text.lines()
            .filter(|line| !line.contains(" passed "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let passed = text.matches(" passed ").count();
    assert!(passed > 0, "kubernetes-validate checked nothing:\n{text}");
}

fn options(source_root: &Path) -> Options {
    Options {
        namespace: NAMESPACE.into(),
        image: Some(IMAGE.into()),
        images: BTreeMap::new(),
        part_of: "supervisor".into(),
        source_root: source_root.to_path_buf(),
        app_dir: "/app".into(),
    }
}

/// Loads and checks as `export` does; `None` when `check` finds errors.
fn checked(configs: &[&str]) -> Option<Manifest> {
    let configs: Vec<ConfigArg> = configs.iter().map(|text| ConfigArg::parse(text)).collect();
    let report = check::run_with(
        &configs,
        &LoadOptions::default(),
        &CheckOptions {
            bind_check: false,
            files: false,
            ..CheckOptions::default()
        },
    )
    .ok()?;
    (!report.has_errors()).then_some(report.manifest)
}

/// Every way the export can be wrong that the schemas cannot see.
fn semantic_problems(manifest: &Manifest, objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let dns_label = |name: &str| {
        !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let mut names = BTreeSet::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or("?");
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        if !dns_label(name) {
            problems.push(format!("{kind} `{name}`: not a DNS-1123 label"));
        }
        if !names.insert((kind.to_string(), name.to_string())) {
            problems.push(format!("{kind} `{name}`: name used twice"));
        }
        let labels = &object["metadata"]["labels"];
        for label in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/managed-by",
        ] {
            if labels[label].as_str().is_none() {
                problems.push(format!("{kind} `{name}`: no label {label}"));
            }
        }
        if object["metadata"]["namespace"] != NAMESPACE {
            problems.push(format!("{kind} `{name}`: not in namespace {NAMESPACE}"));
        }
        let text = object.to_string();
        for literal in ip_literals(&text) {
            // The wildcard bind address is no machine's address.
            if literal != "0.0.0.0" {
                problems.push(format!("{kind} `{name}`: IP literal {literal}"));
            }
        }
    }
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
    };
    let config_map = find("ConfigMap", kubernetes::CONFIG_MAP);
    for agent in manifest.agents.iter().filter(|agent| agent.enabled) {
        let name = dns_name(&agent.name);
        let Some(deployment) = find("Deployment", &name).or_else(|| find("StatefulSet", &name))
        else {
            problems.push(format!("agent `{}`: no Deployment `{name}`", agent.name));
            continue;
        };
        if find("Service", &name).is_none() {
            problems.push(format!("agent `{}`: no Service", agent.name));
        }
        if config_map.is_none_or(|map| map["data"][format!("{name}.yaml")].as_str().is_none()) {
            problems.push(format!("agent `{}`: no in-pod manifest", agent.name));
        }
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let ports: BTreeMap<String, u64> = container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|port| {
                (
                    port["name"].as_str().unwrap_or("").to_string(),
                    port["containerPort"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        for kind in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let probe = &container[kind];
            if probe.is_null() {
                problems.push(format!("agent `{}`: no {kind}", agent.name));
                continue;
            }
            let target = probe["tcpSocket"]["port"].clone();
            let target = if target.is_null() {
                probe["httpGet"]["port"].clone()
            } else {
                target
            };
            let declared = match &target {
                Value::Null => probe["exec"]["command"].is_array(),
                Value::String(port_name) => ports.contains_key(port_name),
                Value::Number(number) => ports.values().any(|port| Some(*port) == number.as_u64()),
                _ => false,
            };
            if !declared {
                problems.push(format!(
                    "agent `{}`: {kind} targets {target}, not a declared containerPort",
                    agent.name
                ));
            }
        }
        let init: Vec<String> = pod["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|container| container["command"].to_string())
            .collect();
        for dependency in &agent.dependencies {
            if !manifest
                .agent(&dependency.name)
                .is_some_and(|dependency| dependency.enabled)
            {
                continue;
            }
            let service = format!("{}.{NAMESPACE}.svc", dns_name(&dependency.name));
            if !init
                .iter()
                .any(|command| command.contains("\"wait-for\"") && command.contains(&service))
            {
                problems.push(format!(
                    "agent `{}`: no init container waits for `{}` ({service})",
                    agent.name, dependency.name
                ));
            }
        }
        let local = matches!(agent.host.as_str(), "localhost" | "127.0.0.1" | "0.0.0.0");
        let selector = pod["nodeSelector"][kubernetes::HOST_LABEL].as_str();
        if local != selector.is_none() {
            problems.push(format!(
                "agent `{}` on host `{}`: node selector {selector:?}",
                agent.name, agent.host
            ));
        }
        let Some(policy) = find("NetworkPolicy", &name) else {
            problems.push(format!("agent `{}`: no NetworkPolicy", agent.name));
            continue;
        };
        let allowed: BTreeSet<String> = policy["spec"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|rule| rule["from"].as_array().cloned().unwrap_or_default())
            .filter_map(|peer| {
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        let dependents: BTreeSet<String> = manifest
            .agents
            .iter()
            .filter(|other| {
                other.enabled
                    && other
                        .dependencies
                        .iter()
                        .any(|dependency| dependency.name == agent.name)
            })
            .map(|other| dns_name(&other.name))
            .collect();
        if allowed != dependents {
            problems.push(format!(
                "agent `{}`: ingress from {allowed:?}, dependents are {dependents:?}",
                agent.name
            ));
        }
    }
    problems
}

/// `export kubernetes --format json` of config/startup.yaml, parsed.
fn startup_objects() -> Vec<Value> {
    let output = export_cli(
        "config/startup.yaml",
        &[
            "--image",
            IMAGE,
            "--namespace",
            NAMESPACE,
            "--format",
            "json",
        ],
    );
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    let list: Value = serde_json::from_str(&output.stdout).expect("JSON output");
    list["items"].as_array().expect("items").clone()
}

#[test]
fn startup_export_matches_the_golden_file() {
    let output = export_cli(
        "config/startup.yaml",
        &["--image", IMAGE, "--namespace", NAMESPACE],
    );
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    let golden = repo().join("tests/fixtures/kubernetes/startup.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().expect("parent")).expect("mkdir");
        std::fs::write(&golden, &output.stdout).expect("write golden");
    }
    let expected = std::fs::read_to_string(&golden).expect("the golden file");
    assert!(
        output.stdout == expected,
        "the export of config/startup.yaml differs from {} (UPDATE_GOLDEN=1 rewrites it):\n{}",
        golden.display(),
        output.stdout
    );
    // Warnings name the agent, its line and the field.
    assert!(
        output
            .stderr
            .contains("config/startup.yaml:25: agent `api`: `restart.policy`: `on-failure`"),
        "{}",
        output.stderr
    );
}

#[test]
fn startup_export_is_valid_for_kubernetes_1_30_and_newest() {
    let Some(program) = validator("startup_export_is_valid_for_kubernetes_1_30_and_newest") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("startup.yaml");
    std::fs::copy(repo().join("tests/fixtures/kubernetes/startup.yaml"), &file).expect("copy");
    validate(program, std::slice::from_ref(&file), "1.30.0");
    validate(program, std::slice::from_ref(&file), "1.37.0");
    // The validator does reject a broken object (so passing means something).
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&file).expect("read").replacen(
        "containerPort: 17200",
        "containerPort: seventeen",
        1,
    );
    std::fs::write(&broken, text).expect("write");
    let status = Command::new(program)
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .arg(&broken)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run kubernetes-validate");
    assert!(
        !status.success(),
        "a string containerPort passed validation"
    );
    // The corpus's faster validator agrees, and is strict about unknown fields.
    validate_many(std::slice::from_ref(&file), "1.30.0");
    let unknown = dir.path().join("unknown.yaml");
    let text = std::fs::read_to_string(&file).expect("read").replacen(
        "  replicas: 1\n",
        "  replicas: 1\n  surplus: 1\n",
        1,
    );
    std::fs::write(&unknown, text).expect("write");
    let output = Command::new("python3")
        .arg(repo().join("tests/fixtures/kubernetes/validate_many.py"))
        .arg("1.30.0")
        .arg(&unknown)
        .output()
        .expect("run validate_many.py");
    assert!(
        !output.status.success(),
        "an unknown field passed validation"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("'surplus' was unexpected"));
}

#[test]
fn startup_export_is_semantically_sound() {
    let objects = startup_objects();
    let manifest = checked(&["config/startup.yaml"]).expect("config/startup.yaml passes check");
    let problems = semantic_problems(&manifest, &objects);
    assert!(problems.is_empty(), "{problems:#?}");
    // One ConfigMap, then a Deployment, Service and NetworkPolicy per agent.
    assert_eq!(objects.len(), 1 + 3 * manifest.agents.len());
    let deployment = objects
        .iter()
        .find(|object| object["kind"] == "Deployment" && object["metadata"]["name"] == "api")
        .expect("api");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        pod["initContainers"][0]["command"],
        serde_json::json!([
            "supervisor",
            "wait-for",
            "tcp://store.agents.svc:17200",
            "--timeout",
            "300"
        ])
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["livenessProbe"]["failureThreshold"], 3);
    // 10s readiness timeout at 1s periods: the startup probe allows 10 tries.
    assert_eq!(container["startupProbe"]["failureThreshold"], 10);
    assert_eq!(pod["terminationGracePeriodSeconds"], 7);
    assert_eq!(container["workingDir"], "/app/config");
    // An SDK agent is probed through run-one's /readyz and /livez.
    let echo = objects
        .iter()
        .find(|object| {
            object["kind"] == "Deployment" && object["metadata"]["name"] == "echo-service"
        })
        .expect("echo-service");
    let container = &echo["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["args"][0], "/usr/local/bin/agent-echo-service");
    // The in-pod manifest of a dependent names its dependency by Service.
    let map = objects
        .iter()
        .find(|object| object["kind"] == "ConfigMap")
        .expect("config map");
    let client = map["data"]["echo-client.yaml"]
        .as_str()
        .expect("echo-client.yaml");
    assert!(client.contains("host: echo-service.agents.svc"), "{client}");
    assert!(client.contains("restart: never"), "{client}");
}

/// The in-pod manifest is read by the ordinary loader, and `run-one`
/// gives the agent its dependency's Service address.
#[test]
fn in_pod_manifest_loads_and_names_dependencies_by_service() {
    let objects = startup_objects();
    let map = objects
        .iter()
        .find(|object| object["kind"] == "ConfigMap")
        .expect("config map");
    let dir = tempfile::tempdir().expect("temp dir");
    for (key, text) in map["data"].as_object().expect("data") {
        let path = dir.path().join(key);
        std::fs::write(&path, text.as_str().expect("text")).expect("write");
        let path = path.to_str().expect("utf-8").to_string();
        let manifest = checked(&[&path]).unwrap_or_else(|| panic!("{key} fails check"));
        assert!(
            manifest
                .agents
                .iter()
                .any(|agent| dns_name(&agent.name) == key.trim_end_matches(".yaml"))
        );
    }
}

#[test]
fn missing_image_is_a_located_error_and_unmapped_fields_are_warned() {
    let (dir, manifest) = manifest_in_temp(
        "version: 1\nstrategy: one_for_all\nagents:\n  ModelOpsCoordinator:\n    command: [\"sleep\", \"60\"]\n    port: 7211\n    restart: { policy: always, backoff: { initial: 1s, max: 1m, multiplier: 3 }, max_restarts: 2, within: 10s }\n    on_error: { rate: { count: 5, within: 10s } }\n    limits: { memory_mb: 256 }\n  worker:\n    command: [\"sleep\", \"60\"]\n    dependencies: [ModelOpsCoordinator]\n",
    );
    let path = manifest.to_str().expect("utf-8");
    let output = export_cli(path, &[]);
    assert_eq!(output.code, Some(1), "{}", output.stderr);
    assert!(
        output.stderr.contains(&format!(
            "{path}:4: agent `ModelOpsCoordinator` has no image: pass `--image IMAGE`"
        )),
        "{}",
        output.stderr
    );
    assert!(output.stdout.is_empty(), "{}", output.stdout);

    let out = dir.path().join("out");
    let output = export_cli(
        path,
        &[
            "--image",
            "worker=example/worker:2",
            "--image",
            IMAGE,
            "--out",
            out.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    for field in [
        "`strategy`: `one_for_all`",
        "agent `ModelOpsCoordinator`: `restart.backoff`",
        "agent `ModelOpsCoordinator`: `restart.max_restarts`",
        "agent `ModelOpsCoordinator`: `on_error`",
    ] {
        assert!(
            output.stderr.contains(field),
            "no warning {field}:\n{}",
            output.stderr
        );
    }
    let kustomization =
        std::fs::read_to_string(out.join("kustomization.yaml")).expect("kustomization.yaml");
    let mut listed = 0;
    for line in kustomization
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
    {
        assert!(out.join(line).is_file(), "{line} is listed but not written");
        listed += 1;
    }
    assert_eq!(listed, 7, "{kustomization}");
    let deployment =
        std::fs::read_to_string(out.join("deployment-model-ops-coordinator.yaml")).expect("file");
    assert!(deployment.contains("memory: \"268435456\""), "{deployment}");
    let worker = std::fs::read_to_string(out.join("deployment-worker.yaml")).expect("file");
    assert!(worker.contains("image: example/worker:2"), "{worker}");
    assert!(
        worker.contains("http://model-ops-coordinator.default.svc:8086/readyz"),
        "{worker}"
    );
}

/// Every corpus manifest `check` accepts exports, validates and is sound;
/// MainPC and PC2 together get node selectors per machine.
#[test]
fn corpus_manifests_export_and_validate() {
    let Some(dir) = corpus::corpus_or_skip("corpus_manifests_export_and_validate") else {
        return;
    };
    let program = validator("corpus_manifests_export_and_validate");
    let out = tempfile::tempdir().expect("temp dir");
    let mut unique = BTreeSet::new();
    let mut objects = Vec::new();
    let mut exported = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    entries.sort();
    let mut sets: Vec<Vec<String>> = entries
        .iter()
        .map(|path| vec![path.display().to_string()])
        .collect();
    // MainPC (2025-07-11) and the PC2 file of that week, on two machines.
    let pair = vec![
        format!("{}@mainpc", dir.join("0e3821f7b5b9.yaml").display()),
        format!("{}@pc2", dir.join("44816d1bcf91.yaml").display()),
    ];
    sets.push(pair.clone());
    for set in &sets {
        let configs: Vec<&str> = set.iter().map(String::as_str).collect();
        let Some(manifest) = checked(&configs) else {
            assert!(set != &pair, "the MainPC + PC2 pair no longer passes check");
            continue;
        };
        let export = kubernetes::export(&manifest, &options(&dir))
            .unwrap_or_else(|error| panic!("{set:?}: {error}"));
        let problems = semantic_problems(&manifest, &export.objects);
        assert!(problems.is_empty(), "{set:?}: {problems:#?}");
        if set == &pair {
            let hosts: BTreeMap<String, usize> = export
                .objects
                .iter()
                .filter(|object| object["kind"] == "Deployment")
                .map(|object| {
                    object["spec"]["template"]["spec"]["nodeSelector"][kubernetes::HOST_LABEL]
                        .as_str()
                        .unwrap_or("none")
                        .to_string()
                })
                .fold(BTreeMap::new(), |mut counts, host| {
                    *counts.entry(host).or_default() += 1;
                    counts
                });
            assert_eq!(
                hosts.keys().collect::<Vec<_>>(),
                ["mainpc", "pc2"],
                "{hosts:?}"
            );
            assert!(hosts["mainpc"] > 40 && hosts["pc2"] > 20, "{hosts:?}");
        }
        // Versions of one file share most objects: each distinct one is
        // validated once.
        for object in export.objects {
            let text = object.to_string();
            if unique.insert(text) {
                objects.push(object);
            }
        }
        exported += 1;
    }
    assert!(
        exported >= 10,
        "only {exported} corpus manifests pass check"
    );
    eprintln!("corpus: {exported} manifest sets exported");
    if program.is_some() {
        let file = out.path().join("corpus.yaml");
        std::fs::write(&file, kubernetes::to_yaml(&objects).expect("yaml")).expect("write");
        validate_many(&[file], "1.30.0");
    }
}

/// `tests/fixtures/kubernetes/validate_many.py`: the same schemas and
/// strictness as `kubernetes-validate`, one validator per kind (the CLI
/// takes minutes for the corpus); panics naming every invalid object.
fn validate_many(files: &[PathBuf], version: &str) {
    let output = Command::new("python3")
        .arg(repo().join("tests/fixtures/kubernetes/validate_many.py"))
        .arg(version)
        .args(files)
        .output()
        .expect("run validate_many.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schema validation failed:\n{text}");
    assert!(text.contains(": 0 invalid"), "{text}");
    eprintln!("{}", text.trim());
}

/// A child process killed (by pid) when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on loopback: status and body, or `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_secs(1),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())?;
    Some((status, body))
}

fn run_one(dir: &Path, manifest: &str, health: u16) -> (Running, PathBuf) {
    let path = dir.join("manifest.yaml");
    std::fs::write(&path, manifest.replace("FAULTY", FAULTY)).expect("write manifest");
    let stdout = dir.join("stdout.txt");
    let child = Command::new(SUPERVISOR)
        .args(["run-one", "faulty", "--config"])
        .arg(&path)
        .args([
            "--health-port",
            &health.to_string(),
            "--health-bind",
            "127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(dir.join("stderr.txt")).expect("stderr file"))
        .spawn()
        .expect("start run-one");
    (Running(child), stdout)
}

#[test]
fn run_one_readyz_flips_on_ready_and_livez_fails_after_sigstop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let health = port();
    // READY comes a second after the start (the shell sleeps first); two
    // seconds later the agent SIGSTOPs itself.
    let (_running, _) = run_one(
        dir.path(),
        "version: 1\nagents:\n  faulty:\n    command: [\"sh\", \"-c\", \"sleep 1 && exec FAULTY --mode stop --after 2\"]\n    readiness: sdk\n    heartbeat: { interval: 200ms, misses: 3 }\n",
        health,
    );
    let mut first = None;
    wait_until("run-one serving /readyz", Duration::from_secs(20), || {
        first = get(health, "/readyz");
        first.is_some()
    });
    let (status, body) = first.expect("an answer");
    assert_eq!(status, 503, "before READY: {body}");
    assert!(body.starts_with("starting"), "{body}");
    let flipped = Instant::now();
    wait_until("/readyz 200 after READY", Duration::from_secs(20), || {
        get(health, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    assert_eq!(get(health, "/livez").map(|(status, _)| status), Some(200));
    // Heartbeats every 200ms; after 3 misses (600ms) of silence, 503.
    let mut body = String::new();
    wait_until(
        "/livez 503 after the agent stopped itself",
        Duration::from_secs(20),
        || match get(health, "/livez") {
            Some((503, text)) => {
                body = text;
                true
            }
            _ => false,
        },
    );
    assert!(body.starts_with("missed "), "{body}");
    assert!(
        flipped.elapsed() >= Duration::from_millis(1500),
        "/livez failed {:?} after READY, before the agent stopped",
        flipped.elapsed()
    );
    // Still ready and still running: kubelet, not run-one, restarts it.
    assert_eq!(get(health, "/readyz").map(|(status, _)| status), Some(200));
}

#[test]
fn run_one_prints_reported_errors_as_json_and_ends_with_the_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let health = port();
    let (mut running, stdout) = run_one(
        dir.path(),
        "version: 1\nagents:\n  faulty:\n    command: [FAULTY, \"--mode\", \"crash\", \"--after\", \"0.5\", \"--exit-code\", \"4\"]\n    readiness: sdk\n",
        health,
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = running.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run-one did not end with its agent"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The agent's own exit code passed through (docs/kubernetes.md),
    // nothing restarted.
    assert_eq!(status.code(), Some(4));
    let text = std::fs::read_to_string(&stdout).expect("stdout");
    let errors: Vec<Value> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0]["agent"], "faulty");
    assert_eq!(errors[0]["severity"], "fatal");
    assert_eq!(errors[0]["message"], "crashing on purpose");
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).expect("stderr");
    assert_eq!(
        stderr.matches("starting").count(),
        1,
        "restarted:\n{stderr}"
    );
}

#[test]
fn wait_for_returns_once_the_target_answers() {
    let target = port();
    let address = format!("tcp://127.0.0.1:{target}");
    let child = Command::new(SUPERVISOR)
        .args(["wait-for", &address, "--timeout", "30", "--interval", "0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wait-for");
    let mut running = Running(child);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        running.0.try_wait().expect("try_wait").is_none(),
        "wait-for returned before anything listened"
    );
    let _listener = std::net::TcpListener::bind(("127.0.0.1", target)).expect("bind");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = running.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "wait-for did not see the listener"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    running
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(
        stderr.contains(&format!("waiting for {address}: ")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("ready: {address}")), "{stderr}");
}

#[test]
fn wait_for_times_out_naming_the_target() {
    let target = port();
    let output = cli(
        &[
            "wait-for",
            &format!("127.0.0.1:{target}"),
            "--timeout",
            "1",
            "--interval",
            "0.2",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(output.code, Some(1), "{}", output.stderr);
    assert!(
        output.stderr.contains(&format!(
            "error: gave up waiting for tcp://127.0.0.1:{target} after 1s (--timeout 1): tcp 127.0.0.1:{target}: connection refused"
        )),
        "{}",
        output.stderr
    );
    assert!(
        output.took < Duration::from_secs(5),
        "took {:?}",
        output.took
    );
    let output = cli(&["wait-for", "udp://x:1"], Duration::from_secs(20));
    assert_eq!(output.code, Some(2), "{}", output.stderr);
    assert!(
        output.stderr.contains("unknown scheme"),
        "{}",
        output.stderr
    );
}

/// Issue 20: an agent's `image:` is its image; `--image NAME=IMAGE` wins
/// over it and it wins over `--image IMAGE`. A bad value is a located error.
#[test]
fn the_image_field_comes_before_the_default_image() {
    let (dir, manifest) = manifest_in_temp(
        "version: 1\nagents:\n  own:\n    command: [\"sleep\", \"60\"]\n    image: example/own:1\n  plain:\n    command: [\"sleep\", \"60\"]\n  pinned:\n    command: [\"sleep\", \"60\"]\n    image: example/pinned:1\n",
    );
    let path = manifest.to_str().expect("utf-8");
    // Without `--image`, only the agent without `image:` is a problem.
    let output = export_cli(path, &[]);
    assert_eq!(output.code, Some(1), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains(&format!("{path}:6: agent `plain` has no image")),
        "{}",
        output.stderr
    );
    assert!(
        !output.stderr.contains("`own` has no image")
            && !output.stderr.contains("`pinned` has no image"),
        "{}",
        output.stderr
    );

    let out = dir.path().join("out");
    let output = export_cli(
        path,
        &[
            "--image",
            "pinned=override/pinned:9",
            "--image",
            "default/all:3",
            "--out",
            out.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    for (agent, image) in [
        ("own", "example/own:1"),
        ("plain", "default/all:3"),
        ("pinned", "override/pinned:9"),
    ] {
        let deployment = std::fs::read_to_string(out.join(format!("deployment-{agent}.yaml")))
            .expect("deployment file");
        let images: Vec<&str> = deployment
            .lines()
            .filter_map(|line| line.trim().strip_prefix("image: "))
            .collect();
        assert!(
            !images.is_empty() && images.iter().all(|found| *found == image),
            "{agent} should run {image}: {images:?}\n{deployment}"
        );
    }

    std::fs::write(
        &manifest,
        "version: 1\nagents:\n  own:\n    command: [\"sleep\", \"60\"]\n    image: \"example/own 1\"\n",
    )
    .expect("write");
    let output = cli(&["check", "--config", path], Duration::from_secs(30));
    assert_eq!(output.code, Some(2), "{} {}", output.stdout, output.stderr);
    let text = format!("{}{}", output.stdout, output.stderr);
    assert!(
        text.contains(&format!("{path}:5"))
            && text.contains("image")
            && text.contains("example/own 1"),
        "{text}"
    );
}

/// `run-one NAME` with `manifest` until it ends (bounded); `signal` is sent
/// to run-one once its agent runs. Gives run-one's exit code.
fn run_one_exit(manifest: &str, signal: Option<nix::sys::signal::Signal>) -> Option<i32> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut running, _) = run_one(dir.path(), manifest, port());
    let started = Instant::now();
    let mut signalled = signal.is_none();
    loop {
        if let Some(status) = running.0.try_wait().expect("try_wait") {
            let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
            eprintln!("run-one stderr:\n{stderr}");
            return status.code();
        }
        if !signalled
            && std::fs::read_to_string(dir.path().join("stderr.txt"))
                .unwrap_or_default()
                .contains("starting")
        {
            std::thread::sleep(Duration::from_millis(500));
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(running.0.id() as i32),
                signal.expect("a signal"),
            )
            .expect("signal run-one");
            signalled = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "run-one did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 20: `run-one` exits with the agent's own exit status (its code,
/// 128 + the signal that killed it), 1 when the agent could not run, 0
/// after kubelet's SIGTERM stopped it.
#[test]
fn run_one_passes_the_agents_exit_status_through() {
    let agent = |command: &str| format!("version: 1\nagents:\n  faulty:\n    command: {command}\n");
    assert_eq!(
        run_one_exit(&agent(r#"["sh", "-c", "sleep 0.5; exit 7"]"#), None),
        Some(7),
        "its own exit code"
    );
    assert_eq!(
        run_one_exit(&agent(r#"["sh", "-c", "sleep 0.5; exit 0"]"#), None),
        Some(0),
        "a clean exit of its own"
    );
    assert_eq!(
        run_one_exit(
            &agent(r#"["sh", "-c", "sleep 0.5; kill -KILL $$$$"]"#),
            None
        ),
        Some(128 + 9),
        "killed by SIGKILL"
    );
    assert_eq!(
        run_one_exit(&agent(r#"["/nonexistent/agent"]"#), None),
        Some(1),
        "an agent that cannot start"
    );
    assert_eq!(
        run_one_exit(
            &agent(r#"["sleep", "60"]"#),
            Some(nix::sys::signal::Signal::SIGTERM)
        ),
        Some(0),
        "stopped by SIGTERM (kubelet)"
    );
}

/// Issue 20: `wait-for zmq://HOST:PORT` against a real legacy ZMQ health
/// responder (tests/fixtures/legacy_agent.py, the BaseAgent imitation): it
/// keeps waiting while nothing answers and while the agent answers
/// "initialising" (`ready: false`), and returns once the reply says ready.
#[test]
fn wait_for_zmq_returns_once_the_legacy_health_reply_says_ready() {
    let test = "wait_for_zmq_returns_once_the_legacy_health_reply_says_ready";
    let pyzmq = Command::new("python3")
        .args(["-c", "import zmq"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !pyzmq {
        corpus::skip(test, "python3 with pyzmq is missing (pip install pyzmq)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("record");
    let (agent_port, health) = (port(), port());
    let address = format!("zmq://127.0.0.1:{health}");
    let child = Command::new(SUPERVISOR)
        .args(["wait-for", &address, "--timeout", "60", "--interval", "0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wait-for");
    let mut waiting = Running(child);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        waiting.0.try_wait().expect("try_wait").is_none(),
        "wait-for returned before anything answered"
    );
    let agent = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy_agent.py"))
        .args(["--host", "127.0.0.1", "--port", &agent_port.to_string()])
        .env("AGENT_NAME", "Legacy")
        .env("HEALTH_CHECK_PORT", health.to_string())
        .env("LEGACY_AGENT_INIT_SECONDS", "2")
        .env("FAKE_AGENT_RECORD", &record)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the legacy agent");
    let _agent = Running(agent);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = waiting.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "wait-for did not see the legacy agent become ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let returned = common::now_nanos();
    assert_eq!(status.code(), Some(0));
    let recorded = std::fs::read_to_string(&record).expect("record");
    let at = |kind: &str| -> u128 {
        recorded
            .lines()
            .find(|line| line.starts_with(&format!("{kind} Legacy ")))
            .and_then(|line| line.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or_else(|| panic!("no `{kind}` record:\n{recorded}"))
    };
    assert!(
        at("ready") <= returned,
        "wait-for returned while the agent was still initialising:\n{recorded}"
    );
    let mut stderr = String::new();
    waiting
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(
        stderr.contains(&format!("waiting for {address}: ")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("ready: {address}")), "{stderr}");
}

/// `replicas: 3` becomes the Deployment's `replicas` when the instances are
/// alike; instances that differ (a port range, `${REPLICA}`) become a
/// StatefulSet whose pods are the instances.
#[test]
fn replicas_become_the_deployments_replicas() {
    let (dir, manifest) = manifest_in_temp(
        "version: 1\nagents:\n  worker:\n    command: [\"sleep\", \"60\"]\n    replicas: 3\n    min_ready: 2\n  sharded:\n    command: [\"sleep\", \"60\"]\n    port: 7400+\n    replicas: 2\n",
    );
    let path = manifest.to_str().expect("utf-8");
    let out = dir.path().join("out");
    let output = export_cli(
        path,
        &["--image", IMAGE, "--out", out.to_str().expect("utf-8")],
    );
    assert_eq!(output.code, Some(0), "{}", output.stderr);
    let worker = std::fs::read_to_string(out.join("deployment-worker.yaml")).expect("file");
    assert!(worker.contains("replicas: 3"), "{worker}");
    let sharded = std::fs::read_to_string(out.join("statefulset-sharded.yaml")).expect("file");
    assert!(sharded.contains("replicas: 2"), "{sharded}");
    assert!(
        !output.stderr.contains("`replicas`"),
        "nothing of replicas is left unmapped: {}",
        output.stderr
    );
    if let Some(program) = validator("replicas_become_the_deployments_replicas") {
        validate(
            program,
            &[
                out.join("deployment-worker.yaml"),
                out.join("statefulset-sharded.yaml"),
                out.join("service-sharded.yaml"),
            ],
            "1.30.0",
        );
    }
}

/// Instances that differ: a StatefulSet (`serviceName` = a headless Service
/// with every instance's port, POD_NAME from the downward API, readiness
/// through `run-one`'s `/readyz`), dependents reaching instances by their
/// stable names `NAME-i.NAME.<ns>.svc`; valid for Kubernetes 1.30 and the
/// newest schemas.
#[test]
fn instances_that_differ_become_a_statefulset_with_a_headless_service() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("m.yaml");
    std::fs::write(
        &path,
        r#"version: 1
agents:
  sharded:
    command: ["./shard", "--id", "${REPLICA}"]
    env: { SLOT: "slot-${REPLICA}" }
    port: 7400+
    readiness: { tcp: 7400 }
    liveness: { tcp: 7400 }
    replicas: 3
    min_ready: 2
  api:
    command: ["./api", "--shard", "localhost:7401"]
    port: 7500
    readiness: { tcp: 7500 }
    dependencies: [sharded]
"#,
    )
    .expect("write");
    let manifest = checked(&[path.to_str().expect("utf-8")]).expect("the manifest passes check");
    let export = kubernetes::export(&manifest, &options(dir.path())).expect("exports");
    let objects = &export.objects;
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let set = find("StatefulSet", "sharded");
    assert!(
        !objects
            .iter()
            .any(|object| object["kind"] == "Deployment" && object["metadata"]["name"] == "sharded")
    );
    assert_eq!(set["spec"]["serviceName"], "sharded");
    assert_eq!(set["spec"]["replicas"], 3);
    assert_eq!(set["spec"]["podManagementPolicy"], "Parallel");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let pod_name = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|variable| variable["name"] == "POD_NAME")
        .expect("POD_NAME");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // One template for all pods: probes of ranged ports go through run-one.
    for probe in ["readinessProbe", "startupProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "supervisor", "{probe}");
    }
    assert!(
        export
            .warnings
            .iter()
            .any(|warning| warning.agent == "sharded" && warning.field == "liveness"),
        "{:?}",
        export.warnings
    );
    assert!(
        !export
            .warnings
            .iter()
            .any(|warning| warning.field == "replicas"),
        "{:?}",
        export.warnings
    );
    let service = find("Service", "sharded");
    assert_eq!(service["spec"]["clusterIP"], "None");
    let service_ports: Vec<u64> = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|port| port["port"].as_u64())
        .collect();
    for port in [7400, 7401, 7402] {
        assert!(service_ports.contains(&port), "{service_ports:?}");
    }
    // `api` waits for min_ready (2) instances by their stable names, and
    // its address of instance 1 is that instance's.
    let api = find("Deployment", "api");
    let init = api["spec"]["template"]["spec"]["initContainers"][0]["command"].to_string();
    assert!(
        init.contains("http://sharded-0.sharded.agents.svc:8086/readyz")
            && init.contains("http://sharded-1.sharded.agents.svc:8086/readyz")
            && !init.contains("sharded-2"),
        "{init}"
    );
    let args = api["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("sharded-1.sharded.agents.svc:7401"), "{args}");
    // The in-pod manifests: `sharded` keeps its range for `run-one`; `api`
    // names each instance by its stable name.
    let data = &find("ConfigMap", kubernetes::CONFIG_MAP)["data"];
    let api_manifest = data["api.yaml"].as_str().expect("api.yaml");
    for index in 0..3 {
        assert!(
            api_manifest.contains(&format!("sharded-{index}.sharded.agents.svc")),
            "{api_manifest}"
        );
    }
    for (key, text) in data.as_object().expect("data") {
        let file = dir.path().join(key);
        std::fs::write(&file, text.as_str().expect("text")).expect("write");
        let loaded = checked(&[file.to_str().expect("utf-8")])
            .unwrap_or_else(|| panic!("{key} fails check:\n{text}"));
        if key == "sharded.yaml" {
            let sharded = loaded.agent("sharded").expect("sharded");
            let replicas = sharded.replicas.as_ref().expect("replicas kept");
            assert_eq!(replicas.count, 3);
            assert!(replicas.port_range, "{text}");
        }
    }
    let problems = semantic_problems(&manifest, objects);
    assert!(problems.is_empty(), "{problems:#?}");
    let Some(program) =
        validator("instances_that_differ_become_a_statefulset_with_a_headless_service")
    else {
        return;
    };
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let mut files = Vec::new();
    for (object, name) in objects.iter().zip(export.file_names()) {
        let file = out.join(name);
        std::fs::write(
            &file,
            kubernetes::to_yaml(std::slice::from_ref(object)).expect("yaml"),
        )
        .expect("write");
        files.push(file);
    }
    for version in ["1.30.0", "1.37.0"] {
        validate(program, &files, version);
    }
}

/// `run-one` in a StatefulSet's pod runs the instance its pod name's
/// ordinal names: its port of the range (which the readiness probe follows)
/// and `${REPLICA}` in its environment.
#[test]
fn run_one_runs_the_instance_its_pod_ordinal_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = loop {
        let first = port();
        if first < u16::MAX - 3
            && (1..3)
                .all(|offset| std::net::TcpListener::bind(("127.0.0.1", first + offset)).is_ok())
        {
            break first;
        }
    };
    let path = dir.path().join("m.yaml");
    let record = dir.path().join("record-${REPLICA}.txt");
    std::fs::write(
        &path,
        format!(
            "version: 1\nagents:\n  sharded:\n    command: [\"{fake}\"]\n    env: {{ FAKE_AGENT_RECORD: \"{record}\" }}\n    port: {first}+\n    readiness: {{ tcp: {first} }}\n    replicas: 3\n",
            fake = env!("CARGO_BIN_EXE_fake-agent"),
            record = record.display(),
        ),
    )
    .expect("write");
    let manifest = checked(&[path.to_str().expect("utf-8")]).expect("passes check");
    let options = Options {
        app_dir: dir.path().display().to_string(),
        ..options(dir.path())
    };
    let export = kubernetes::export(&manifest, &options).expect("exports");
    let in_pod = export
        .objects
        .iter()
        .find(|object| object["kind"] == "ConfigMap")
        .and_then(|map| map["data"]["sharded.yaml"].as_str())
        .expect("the in-pod manifest")
        .to_string();
    let in_pod_path = dir.path().join("sharded.yaml");
    std::fs::write(&in_pod_path, &in_pod).expect("write");
    let health = port();
    let child = Command::new(SUPERVISOR)
        .args(["run-one", "sharded", "--config"])
        .arg(&in_pod_path)
        .args([
            "--health-port",
            &health.to_string(),
            "--health-bind",
            "127.0.0.1",
        ])
        .env("POD_NAME", "sharded-2")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout.txt")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.path().join("stderr.txt")).expect("stderr file"))
        .spawn()
        .expect("start run-one");
    let _running = Running(child);
    let log = || std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    wait_until(
        "/readyz 200 for instance 2",
        Duration::from_secs(30),
        || get(health, "/readyz").is_some_and(|(status, _)| status == 200),
    );
    // Instance 2 listens on first+2 (AGENT_PORT), the probe followed it.
    std::net::TcpStream::connect(("127.0.0.1", first + 2))
        .unwrap_or_else(|error| panic!("nothing on {}: {error}\n{}", first + 2, log()));
    for other in [first, first + 1] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
            "port {other} is another instance's"
        );
    }
    wait_until("instance 2's record", Duration::from_secs(10), || {
        dir.path().join("record-2.txt").exists()
    });
    assert!(!dir.path().join("record-0.txt").exists());

    // Without an ordinal: a clear usage error.
    let output = Command::new(SUPERVISOR)
        .args(["run-one", "sharded", "--config"])
        .arg(&in_pod_path)
        .args(["--health-port", "0"])
        .env("POD_NAME", "sharded")
        .env("HOSTNAME", "box")
        .output()
        .expect("run run-one");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("neither POD_NAME nor HOSTNAME ends in `-ORDINAL`"),
        "{stderr}"
    );
}
