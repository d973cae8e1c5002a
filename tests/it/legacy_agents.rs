//! The legacy agents, unmodified: a real manifest of the legacy corpus
//! (`legacy-startup-configs/` under `SUPERVISOR_CORPUS`, else under
//! `../shared/corpus`), its whole dependency graph
//! and ports, run by `supervisor up` with every `script_path` pointed at
//! `tests/fixtures/legacy_agent.py`, an imitation of the legacy BaseAgent
//! (ZMQ REP main and health sockets, the JSON health reply, `--port`,
//! AGENT_PORT/HEALTH_CHECK_PORT). Checks that all agents become ready in
//! dependency order through the default ZMQ health probe, then kills
//! (SIGKILL) and hangs (SIGSTOP) a few and watches them come back through
//! the default ZMQ liveness probe. Also the fixture's own bind behaviour.
//!
//! Needs `python3` with pyzmq: fails with `pip install pyzmq` when missing,
//! never skips for that. The corpus lives outside the repository: without it
//! the manifest test prints `SKIPPED <test>: <reason>` and passes (see
//! tests/common/corpus.rs); the fixture's own test always runs. Ports are the manifest's, shifted with PORT_OFFSET to a free
//! range below the ephemeral ports.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Fixture, SUPERVISOR, alive, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The MainPC manifest at the legacy repository's HEAD: 49 agents, format
/// `legacy:agent_groups` (so `--port` is passed), 0 check errors once its
/// mis-indented `docker_groups` block is removed.
const MAINPC_HEAD: &str = "3dd45d008fc4.yaml";

fn legacy_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy_agent.py")
}

/// Fails with the command to run when pyzmq is missing.
fn require_pyzmq() {
    let output = Command::new("python3")
        .args(["-c", "import zmq"])
        .output()
        .expect("python3 is needed for the legacy agent tests");
    assert!(
        output.status.success(),
        "the legacy agent tests run Python agents that need pyzmq: run `pip install pyzmq`\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The manifest with every `script_path` value replaced by the fixture's
/// path, and without the `docker_groups` block indented under
/// `agent_groups` (from its `  docker_groups:` line to the next top-level
/// key): `check` makes that block an error, since the real agents' own
/// config loader crashes on it (issue 14, item 10). Everything else
/// (groups, ports, dependencies, config) unchanged.
fn point_scripts_at_fixture(text: &str) -> String {
    let fixture = legacy_fixture();
    let mut out = String::with_capacity(text.len());
    let mut in_misplaced_block = false;
    for line in text.lines() {
        if line == "  docker_groups:" {
            in_misplaced_block = true;
        } else if in_misplaced_block
            && !line.starts_with(' ')
            && !line.starts_with('#')
            && !line.is_empty()
        {
            in_misplaced_block = false;
        }
        if in_misplaced_block {
            continue;
        }
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("script_path:")
            && !rest.trim().is_empty()
        {
            let indent = &line[..line.len() - trimmed.len()];
            out.push_str(&format!("{indent}script_path: {}", fixture.display()));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The `N` of every `${PORT_OFFSET}+N` in the manifest.
fn offset_ports(text: &str) -> Vec<u16> {
    text.split("${PORT_OFFSET}+")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// An offset whose shifted ports are all free, kept below the ephemeral
/// range (32768+) that other tests' ports come from.
fn free_offset(ports: &[u16]) -> u16 {
    let highest = ports.iter().copied().max().unwrap_or(0);
    let mut offset = 20_000;
    while u32::from(highest) + u32::from(offset) + 1 < 32_768 {
        let free = ports
            .iter()
            .all(|port| std::net::TcpListener::bind(("0.0.0.0", port + offset)).is_ok());
        if free {
            return offset;
        }
        offset += 250;
    }
    panic!(
        "no PORT_OFFSET leaves all {} ports of the manifest free",
        ports.len()
    );
}

/// A `supervisor up` in its own process group. Dropping it SIGKILLs that
/// group, then the process group and pid of every agent in the record file.
struct Up {
    child: Child,
    output: Arc<Mutex<String>>,
    record: PathBuf,
}

impl Up {
    fn start(manifest: &Path, record: &Path, offset: u16) -> Up {
        let mut child = Command::new(SUPERVISOR)
            .args(["--log", "info", "up", "--config"])
            .arg(manifest)
            .env("PORT_OFFSET", offset.to_string())
            .env("FAKE_AGENT_RECORD", record)
            .env("LEGACY_AGENT_INIT_SECONDS", "0.3")
            .env("NO_COLOR", "1")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start supervisor");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut output = output.lock().expect("output lock");
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        Up {
            child,
            output,
            record: record.to_path_buf(),
        }
    }

    fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    fn wait_for_output(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {text:?}; supervisor output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let group = Pid::from_raw(-(self.child.id() as i32));
        let _ = kill(group, Signal::SIGKILL);
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        for pid in text
            .lines()
            .filter_map(|line| line.split_whitespace().nth(3)?.parse::<i32>().ok())
        {
            // Agents lead their own process groups; a stopped one dies too.
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// `supervisor plan --format json`: agent -> dependencies, and the levels.
fn plan(manifest: &Path, offset: u16) -> (BTreeMap<String, Vec<String>>, Vec<Vec<String>>) {
    let output = Command::new(SUPERVISOR)
        .args(["plan", "--format", "json", "--config"])
        .arg(manifest)
        .env("PORT_OFFSET", offset.to_string())
        .output()
        .expect("run supervisor plan");
    assert!(
        output.status.success(),
        "plan failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("plan JSON");
    let dependencies = serde_json::from_value(plan["dependencies"].clone()).expect("dependencies");
    let levels = serde_json::from_value(plan["levels"].clone()).expect("levels");
    (dependencies, levels)
}

#[test]
fn a_real_legacy_manifest_runs_unmodified_agents_ready_in_order_and_restarted() {
    let Some(corpus) = common::corpus::corpus_or_skip(
        "legacy_agents::a_real_legacy_manifest_runs_unmodified_agents_ready_in_order_and_restarted",
    ) else {
        return;
    };
    require_pyzmq();
    let fixture = Fixture::new();
    let original = std::fs::read_to_string(corpus.join(MAINPC_HEAD)).expect("read manifest");
    let manifest = fixture.path("startup_config.yaml");
    std::fs::write(&manifest, point_scripts_at_fixture(&original)).expect("write manifest");
    let offset = free_offset(&offset_ports(&original));
    let (dependencies, levels) = plan(&manifest, offset);
    let names: Vec<&str> = dependencies.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 49, "the HEAD manifest has 49 agents");

    let up = Up::start(&manifest, &fixture.record, offset);
    up.wait_for_output("all ready: 49/49 agents", Duration::from_secs(240));

    // Every agent started once, was given its shifted port both ways, and
    // started only after each of its dependencies answered a health check.
    for name in &names {
        let starts = fixture.records_of("start", name);
        assert_eq!(starts.len(), 1, "{name} started {} times", starts.len());
    }
    let text = std::fs::read_to_string(&fixture.record).expect("records");
    for line in text.lines().filter(|line| line.starts_with("start ")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (env_port, argv_port) = (fields[4], fields[6]);
        assert_eq!(env_port, argv_port, "--port and AGENT_PORT differ: {line}");
        let port: u32 = argv_port.parse().expect("a numeric --port");
        assert!(
            port > u32::from(offset),
            "port not shifted by PORT_OFFSET: {line}"
        );
    }
    let mut edges = 0;
    for (agent, needs) in &dependencies {
        let started = fixture.first("start", agent).nanos;
        for dependency in needs {
            let healthy = fixture.first("healthy", dependency).nanos;
            assert!(
                started >= healthy,
                "{agent} started before its dependency {dependency} answered a health check"
            );
            edges += 1;
        }
    }
    assert!(edges > 40, "only {edges} dependency edges checked");

    // Kill two agents and hang two, roots and leaves.
    let last = levels.last().expect("levels");
    let killed = [levels[0][0].clone(), last[0].clone()];
    let hung = [levels[1][0].clone(), last[last.len() - 1].clone()];
    let victims: BTreeSet<&String> = killed.iter().chain(&hung).collect();
    assert_eq!(victims.len(), 4, "four distinct victims: {victims:?}");
    let old_pid = |name: &str| fixture.first("start", name).pid;
    for (names, signal) in [(&killed, Signal::SIGKILL), (&hung, Signal::SIGSTOP)] {
        for name in names.iter() {
            kill(Pid::from_raw(old_pid(name) as i32), signal).expect("signal agent");
        }
    }
    let back = |name: &str| {
        let old = old_pid(name);
        fixture
            .records_of("start", name)
            .iter()
            .filter(|record| record.pid != old)
            .any(|new| {
                fixture
                    .records_of("healthy", name)
                    .iter()
                    .any(|healthy| healthy.pid == new.pid)
            })
    };
    wait_until(
        "the killed and hung agents restarted and healthy again",
        Duration::from_secs(120),
        || victims.iter().all(|name| back(name)),
    );
    for name in &hung {
        // The supervisor found it hung through the ZMQ liveness probe and
        // killed its process group.
        wait_until("the hung process gone", Duration::from_secs(10), || {
            !alive(old_pid(name))
        });
    }
    let output = up.output();
    for name in &victims {
        assert!(
            output.contains(name.as_str()),
            "no log line about {name}:\n{output}"
        );
    }

    // An ordered stop: SIGTERM, every agent exits.
    kill(Pid::from_raw(up.child.id() as i32), Signal::SIGTERM).expect("SIGTERM supervisor");
    let pids: Vec<u32> = fixture
        .records()
        .iter()
        .filter(|record| record.kind == "start")
        .map(|record| record.pid)
        .collect();
    wait_until("every agent stopped", Duration::from_secs(60), || {
        pids.iter().all(|pid| !alive(*pid))
    });
}

#[test]
fn the_legacy_fixture_retries_a_taken_port_then_fails_or_moves_on() {
    require_pyzmq();
    let fixture = Fixture::new();
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let run = |strict: bool| {
        let mut command = Command::new("python3");
        command
            .arg(legacy_fixture())
            .args(["--port", &port.to_string()])
            .env("AGENT_NAME", if strict { "Strict" } else { "Loose" })
            .env("HEALTH_CHECK_PORT", common::port().to_string())
            .env("FAKE_AGENT_RECORD", &fixture.record)
            .env("LEGACY_AGENT_BIND_RETRY_SECONDS", "0.05")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if strict {
            command.env("STRICT_PORT", "1");
        }
        command.spawn().expect("start the fixture")
    };
    // Strict: five attempts on the same port, then exit 1 with the error.
    let strict = run(true);
    let output = strict.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("failed to bind main port"));
    assert_eq!(fixture.records_of("bind-retry", "Strict").len(), 5);
    assert_eq!(fixture.records_of("bind-failed", "Strict").len(), 1);
    // Not strict (the legacy default): moves to the next port and serves there.
    let mut loose = run(false);
    let _cleanup = common::KillOnDrop(vec![loose.id()]);
    wait_until(
        "the fixture ready on the next port",
        Duration::from_secs(20),
        || !fixture.records_of("ready", "Loose").is_empty(),
    );
    // At least the taken port was retried; the next one may be taken too
    // (tests run in parallel and hold ports of their own).
    let retries = fixture.records_of("bind-retry", "Loose").len();
    assert!((1..=5).contains(&retries), "{retries} bind retries");
    let _ = loose.kill();
    let _ = loose.wait();
    drop(taken);
}
