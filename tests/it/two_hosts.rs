//! Issue 19: two supervisors on two hosts as one system, over the peer link.
//! Each test makes two network namespaces joined by a veth pair (`mainpc`
//! at 10.231.0.1, `pc2` at 10.231.0.2), runs one `supervisor up` in each
//! (same manifests, `--host` picks the side) and checks: cross-host
//! dependency gating, joint status from each side, a routed restart, a
//! wrong key refused, a partition and its heal, `down --all-hosts`.
//!
//! Needs root and `ip` (iproute2); without them every test here is skipped,
//! visibly, with the reason.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::corpus::skip;
use common::{FAKE_AGENT, SUPERVISOR, Up, alive, cli, wait_until};

const MAINPC: &str = "10.231.0.1";
const PC2: &str = "10.231.0.2";

/// Two namespaces joined by a veth pair; removed on drop.
struct Net {
    mainpc: String,
    pc2: String,
    /// The veth end inside `mainpc`.
    veth: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run `ip` (iproute2): {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Net {
    /// The namespaces, or `None` after a visible skip naming why not.
    /// `index` tells the tests of this file apart (namespace and veth names).
    fn create(test: &str, index: u32) -> Option<Net> {
        if !nix::unistd::geteuid().is_root() {
            skip(test, "network namespaces need root");
            return None;
        }
        let tag = format!("{}{index}", std::process::id() % 100_000);
        let net = Net {
            mainpc: format!("sv-main-{tag}"),
            pc2: format!("sv-pc2-{tag}"),
            veth: format!("svm{tag}"),
        };
        let peer = format!("svp{tag}");
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &net.mainpc],
            vec!["netns", "add", &net.pc2],
            vec![
                "link", "add", &net.veth, "type", "veth", "peer", "name", &peer,
            ],
            vec!["link", "set", &net.veth, "netns", &net.mainpc],
            vec!["link", "set", &peer, "netns", &net.pc2],
            vec![
                "-n",
                &net.mainpc,
                "addr",
                "add",
                "10.231.0.1/24",
                "dev",
                &net.veth,
            ],
            vec!["-n", &net.pc2, "addr", "add", "10.231.0.2/24", "dev", &peer],
            vec!["-n", &net.mainpc, "link", "set", &net.veth, "up"],
            vec!["-n", &net.pc2, "link", "set", &peer, "up"],
            vec!["-n", &net.mainpc, "link", "set", "lo", "up"],
            vec!["-n", &net.pc2, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(reason) = ip(&step) {
                skip(test, &format!("cannot make network namespaces: {reason}"));
                return None;
            }
        }
        Some(net)
    }

    /// Cuts (`false`) or restores (`true`) the veth pair.
    fn link(&self, up: bool) {
        ip(&[
            "-n",
            &self.mainpc,
            "link",
            "set",
            &self.veth,
            if up { "up" } else { "down" },
        ])
        .expect("set the veth link");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.mainpc]);
        let _ = ip(&["netns", "del", &self.pc2]);
    }
}

/// Both hosts' manifests, keys and run directories in one scratch dir.
struct System {
    dir: tempfile::TempDir,
    configs: Vec<String>,
}

impl System {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_dir(&self, host: &str) -> String {
        self.path(&format!("run-{host}")).display().to_string()
    }

    /// `supervisor up` for `host` inside its namespace.
    fn up(&self, net: &Net, host: &str, key: &str) -> Up {
        let namespace = if host == "mainpc" {
            &net.mainpc
        } else {
            &net.pc2
        };
        let mut command = Command::new("ip");
        command.args(["netns", "exec", namespace, SUPERVISOR, "up"]);
        for config in &self.configs {
            command.args(["--config", config]);
        }
        command.args([
            "--host",
            host,
            "--run-dir",
            &self.run_dir(host),
            "--link-key",
            &self.path(key).display().to_string(),
            "--no-console",
            "--no-watch",
            "--no-bind-check",
        ]);
        Up::spawn(command, &self.path(&format!("record-{host}")))
    }

    fn status(&self, host: &str) -> Option<serde_json::Value> {
        let output = cli(
            &["status", "--json", "--run-dir", &self.run_dir(host)],
            Duration::from_secs(30),
        );
        serde_json::from_str(&output.stdout).ok()
    }

    fn wait_status(
        &self,
        host: &str,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status(host)
                && condition(&status)
            {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting on {host} for {what}; last status: {}",
                self.status(host)
                    .map(|status| status.to_string())
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `supervisor keygen --out FILE`, returning the public key.
fn keygen(path: &Path) -> String {
    let output = cli(
        &["keygen", "--out", &path.display().to_string()],
        Duration::from_secs(30),
    );
    assert_eq!(output.code, Some(0), "keygen: {}", output.stderr);
    output.stdout.trim().to_string()
}

/// A system shaped like the real one: `MemoryHub` runs one copy per host,
/// PC2's `Relay` depends on MainPC's `Tts` (cross-host) and on its own
/// `MemoryHub`; `Burst` on MainPC reports `burst` errors through the SDK
/// each time it starts. `pc2_key_public` lets a test list a wrong key.
fn system(burst: u32, pc2_listed_key: Option<&str>) -> System {
    let dir = tempfile::tempdir().expect("tempdir");
    let main_public = keygen(&dir.path().join("mainpc.key"));
    let pc2_public = keygen(&dir.path().join("pc2.key"));
    let pc2_listed = pc2_listed_key.unwrap_or(&pc2_public);
    let agent = |address: &str, port: u16| {
        format!(
            "command: [{FAKE_AGENT:?}, --bind, {address}, --port, \"{port}\"]\n    port: {port}\n    readiness: {{tcp: {port}, interval: 1s}}"
        )
    };
    let faulty = Path::new(SUPERVISOR)
        .with_file_name("agent-faulty")
        .display()
        .to_string();
    let main = format!(
        "version: 1\nagents:\n  Tts:\n    {}\n  MemoryHub:\n    {}\n  Burst:\n    command: [{faulty:?}, --mode, burst, --after, \"0.2\", --burst, \"{burst}\", --severity, error]\n    readiness: sdk\n    restart: never\n",
        agent(MAINPC, 7101),
        agent(MAINPC, 7102),
    );
    let pc2 = format!(
        "version: 1\nagents:\n  MemoryHub:\n    {}\n  Relay:\n    {}\n    dependencies: [Tts, MemoryHub]\n",
        agent(PC2, 7102),
        agent(PC2, 7103),
    );
    let hosts = format!(
        "version: 1\nhosts:\n  mainpc: {{address: {MAINPC}, link_port: 7990, public_key: \"{main_public}\"}}\n  pc2: {{address: {PC2}, link_port: 7990, public_key: \"{pc2_listed}\"}}\n"
    );
    for (name, text) in [
        ("main.yaml", &main),
        ("pc2.yaml", &pc2),
        ("hosts.yaml", &hosts),
    ] {
        std::fs::write(dir.path().join(name), text).expect("write manifest");
    }
    let configs = vec![
        format!("{}@mainpc", dir.path().join("main.yaml").display()),
        format!("{}@pc2", dir.path().join("pc2.yaml").display()),
        dir.path().join("hosts.yaml").display().to_string(),
    ];
    System { dir, configs }
}

fn agent<'a>(
    status: &'a serde_json::Value,
    name: &str,
    host: &str,
) -> Option<&'a serde_json::Value> {
    status["agents"].as_array()?.iter().find(|agent| {
        agent["host"] == host
            && (agent["name"] == name || agent["name"] == format!("{host}/{name}").as_str())
    })
}

fn state(status: &serde_json::Value, name: &str, host: &str) -> String {
    agent(status, name, host)
        .and_then(|agent| agent["state"].as_str())
        .unwrap_or("absent")
        .to_string()
}

fn peer_link(status: &serde_json::Value) -> String {
    status["link"]["peers"][0]["link"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

/// How many records of `agent` the journal in `run_dir` holds.
fn journal_count(run_dir: &str, agent: &str) -> usize {
    std::fs::read_to_string(Path::new(run_dir).join("errors.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["agent"] == agent)
        .count()
}

fn recorded_pids(system: &System) -> Vec<i32> {
    ["mainpc", "pc2"]
        .iter()
        .flat_map(|host| {
            { std::fs::read_to_string(system.path(&format!("record-{host}"))).unwrap_or_default() }
                .lines()
                .filter_map(|line| line.split_whitespace().nth(3)?.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn issue_19_cross_host_gating_joint_status_routed_restart_and_down_all_hosts() {
    let test = "issue_19_cross_host_gating_joint_status_routed_restart_and_down_all_hosts";
    let Some(net) = Net::create(test, 1) else {
        return;
    };
    let system = system(0, None);
    // PC2 first: Relay waits for MainPC's Tts, which is not there yet.
    let mut pc2 = system.up(&net, "pc2", "pc2.key");
    system.wait_status(
        "pc2",
        "pc2's MemoryHub ready",
        Duration::from_secs(30),
        |status| state(status, "MemoryHub", "pc2") == "ready",
    );
    std::thread::sleep(Duration::from_secs(2));
    let status = system.status("pc2").expect("pc2 status");
    assert_eq!(
        state(&status, "Relay", "pc2"),
        "pending",
        "Relay must wait for MainPC's Tts: {status}"
    );
    assert_eq!(peer_link(&status), "waiting", "{status}");

    let mut mainpc = system.up(&net, "mainpc", "mainpc.key");
    // Gating lifted: Relay starts once MainPC reports Tts ready.
    system.wait_status(
        "pc2",
        "Relay ready after Tts",
        Duration::from_secs(30),
        |status| state(status, "Relay", "pc2") == "ready",
    );
    // Joint status from each side: every host's agents, the peer link up.
    for (host, other) in [("mainpc", "pc2"), ("pc2", "mainpc")] {
        let status =
            system.wait_status(host, "the joint view", Duration::from_secs(20), |status| {
                peer_link(status) == "up"
                    && ["Tts", "MemoryHub", "Burst"]
                        .iter()
                        .all(|name| agent(status, name, "mainpc").is_some())
                    && ["MemoryHub", "Relay"]
                        .iter()
                        .all(|name| state(status, name, "pc2") == "ready")
            });
        assert_eq!(status["link"]["peers"][0]["host"], other, "{status}");
        assert!(
            status["link"]["peers"][0]["last_seen_ms"].is_u64(),
            "{status}"
        );
        assert!(
            status["link"]["peers"][0]["clock_offset_ms"].is_i64(),
            "{status}"
        );
    }

    // Discovery: Relay reaches MainPC's Tts at MainPC's address, never loopback.
    let before = system.status("pc2").expect("status");
    let old_pid = agent(&before, "Relay", "pc2").expect("Relay")["pid"]
        .as_u64()
        .expect("Relay pid");
    let environ = std::fs::read(format!("/proc/{old_pid}/environ")).expect("Relay's environment");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ
            .split('\0')
            .any(|entry| entry == format!("TTS_ENDPOINT=tcp://{MAINPC}:7101")),
        "Relay's TTS_ENDPOINT: {:?}",
        environ
            .split('\0')
            .filter(|entry| entry.contains("ENDPOINT"))
            .collect::<Vec<_>>()
    );

    // Restart routed from MainPC to PC2, the owner of Relay.
    let output = cli(
        &["restart", "Relay", "--run-dir", &system.run_dir("mainpc")],
        Duration::from_secs(60),
    );
    assert_eq!(
        output.code,
        Some(0),
        "routed restart: {} {}",
        output.stdout,
        output.stderr
    );
    system.wait_status(
        "pc2",
        "Relay restarted",
        Duration::from_secs(30),
        |status| {
            agent(status, "Relay", "pc2").is_some_and(|relay| {
                relay["state"] == "ready" && relay["pid"].as_u64().is_some_and(|pid| pid != old_pid)
            })
        },
    );
    assert!(!alive(old_pid as u32), "the old Relay process is gone");

    // Everything down from one side.
    let output = cli(
        &[
            "down",
            "--all-hosts",
            "--run-dir",
            &system.run_dir("mainpc"),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        output.code,
        Some(0),
        "down --all-hosts: {} {}",
        output.stdout,
        output.stderr
    );
    mainpc.wait(Duration::from_secs(60));
    pc2.wait(Duration::from_secs(60));
    let pids = recorded_pids(&system);
    assert!(pids.len() >= 5, "agents recorded: {pids:?}");
    for pid in pids {
        assert!(
            !alive(pid as u32),
            "agent pid {pid} still alive after down --all-hosts"
        );
    }
}

#[test]
fn issue_19_a_peer_with_a_wrong_key_is_refused_and_counted() {
    let test = "issue_19_a_peer_with_a_wrong_key_is_refused_and_counted";
    let Some(net) = Net::create(test, 2) else {
        return;
    };
    // The manifests list a public key for pc2 that is not the one pc2 holds.
    let impostor = keygen(
        &tempfile::tempdir()
            .expect("tempdir")
            .path()
            .join("other.key"),
    );
    let system = system(0, Some(&impostor));
    let _mainpc = system.up(&net, "mainpc", "mainpc.key");
    let _pc2 = system.up(&net, "pc2", "pc2.key");
    let status = system.wait_status(
        "mainpc",
        "a refused connection",
        Duration::from_secs(30),
        |status| status["link"]["refused"].as_u64().unwrap_or(0) >= 1,
    );
    assert_ne!(peer_link(&status), "up", "{status}");
    std::thread::sleep(Duration::from_secs(2));
    for host in ["mainpc", "pc2"] {
        let status = system.status(host).expect("status");
        assert_ne!(
            peer_link(&status),
            "up",
            "{host} accepted a peer with a wrong key: {status}"
        );
    }
    // No state came over the refused link: PC2 knows MainPC's Tts only as
    // the agent it awaits (probed; a report from MainPC would carry its pid),
    // and nothing of MainPC's other agents.
    let status = system.status("pc2").expect("status");
    let tts = agent(&status, "Tts", "mainpc").expect("Tts awaited on pc2");
    assert!(
        tts["pid"].is_null(),
        "no state may come over a refused link: {status}"
    );
    assert!(agent(&status, "Burst", "mainpc").is_none(), "{status}");
    assert!(
        status["link"]["refused"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );
}

#[test]
fn issue_19_a_partition_keeps_both_sides_running_and_the_heal_delivers_every_error_once() {
    let test =
        "issue_19_a_partition_keeps_both_sides_running_and_the_heal_delivers_every_error_once";
    let Some(net) = Net::create(test, 3) else {
        return;
    };
    let burst = 50;
    let system = system(burst, None);
    let mainpc = system.up(&net, "mainpc", "mainpc.key");
    let pc2 = system.up(&net, "pc2", "pc2.key");
    system.wait_status("pc2", "Relay ready", Duration::from_secs(30), |status| {
        state(status, "Relay", "pc2") == "ready" && peer_link(status) == "up"
    });
    let pc2_run = system.run_dir("pc2");
    let main_run = system.run_dir("mainpc");
    let deadline = Instant::now() + Duration::from_secs(30);
    while journal_count(&pc2_run, "mainpc/Burst") < burst as usize {
        assert!(
            Instant::now() < deadline,
            "the first burst did not reach pc2's journal: mainpc has {}, pc2 {}\nmainpc:\n{}\npc2:\n{}",
            journal_count(&main_run, "Burst"),
            journal_count(&pc2_run, "mainpc/Burst"),
            mainpc.output(),
            pc2.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let relay_pid =
        agent(&system.status("pc2").expect("status"), "Relay", "pc2").expect("Relay")["pid"]
            .as_u64()
            .expect("pid");

    net.link(false);
    system.wait_status(
        "mainpc",
        "pc2 unreachable",
        Duration::from_secs(20),
        |status| peer_link(status) == "unreachable",
    );
    // A second burst while the hosts cannot reach each other.
    let output = cli(
        &["restart", "Burst", "--run-dir", &main_run],
        Duration::from_secs(60),
    );
    assert_eq!(output.code, Some(0), "restart Burst: {}", output.stderr);
    wait_until(
        "the second burst on mainpc's journal",
        Duration::from_secs(30),
        || journal_count(&main_run, "Burst") >= 2 * burst as usize,
    );
    let status = system.wait_status(
        "mainpc",
        "events buffered for pc2",
        Duration::from_secs(10),
        |status| status["link"]["peers"][0]["buffered"].as_u64().unwrap_or(0) >= burst as u64,
    );
    assert_eq!(status["link"]["peers"][0]["dropped"], 0, "{status}");
    assert_eq!(
        journal_count(&pc2_run, "mainpc/Burst"),
        burst as usize,
        "nothing crosses a partition"
    );
    let pc2_status = system.status("pc2").expect("status");
    assert_eq!(peer_link(&pc2_status), "unreachable", "{pc2_status}");
    assert!(
        pc2_status["link"]["peers"][0]["last_seen_ms"].is_u64(),
        "{pc2_status}"
    );

    net.link(true);
    wait_until(
        "the buffered errors on pc2 after the heal",
        Duration::from_secs(60),
        || journal_count(&pc2_run, "mainpc/Burst") >= 2 * burst as usize,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        journal_count(&pc2_run, "mainpc/Burst"),
        2 * burst as usize,
        "every error exactly once after the heal"
    );
    let status = system.wait_status(
        "pc2",
        "the link back up",
        Duration::from_secs(20),
        |status| peer_link(status) == "up",
    );
    let relay = agent(&status, "Relay", "pc2").expect("Relay");
    assert_eq!(
        relay["pid"].as_u64(),
        Some(relay_pid),
        "the partition restarted Relay: {status}"
    );
    assert_eq!(relay["restarts"], 0, "{status}");
    let status = system.wait_status(
        "mainpc",
        "nothing left buffered",
        Duration::from_secs(20),
        |status| status["link"]["peers"][0]["buffered"] == 0,
    );
    assert_eq!(state(&status, "Relay", "pc2"), "ready", "{status}");
}

/// The real pair (HEAD of MainPC and PC2 from the corpus): the three agents
/// that run one copy per machine are no duplicates, and PC2's agents are
/// wired to PC2's copies; PC2's SpeechRelayService to MainPC's
/// StreamingTTSAgent.
#[test]
fn issue_19_the_real_mainpc_and_pc2_pair_has_one_copy_per_host_and_pc2_uses_its_own() {
    let test = "issue_19_the_real_mainpc_and_pc2_pair_has_one_copy_per_host_and_pc2_uses_its_own";
    let Some(corpus) = common::corpus::corpus_or_skip(test) else {
        return;
    };
    let files = corpus;
    let main = format!("{}@mainpc", files.join("3dd45d008fc4.yaml").display());
    let pc2 = format!("{}@pc2", files.join("46e8c89b8412.yaml").display());
    let output = cli(
        &[
            "check",
            "--json",
            "--no-bind-check",
            "--no-file-check",
            "-c",
            &main,
            "-c",
            &pc2,
        ],
        Duration::from_secs(60),
    );
    let report: serde_json::Value = serde_json::from_str(&output.stdout).expect("check --json");
    let duplicates: Vec<&serde_json::Value> = report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter(|problem| {
            problem["kind"] == "duplicate_agent" || problem["kind"] == "unknown_dependency"
        })
        .collect();
    assert!(duplicates.is_empty(), "{duplicates:#?}");
    let env_file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/corpus.env")
        .display()
        .to_string();
    let output = cli(
        &[
            "plan",
            "--format",
            "json",
            "--env-file",
            &env_file,
            "-c",
            &main,
            "-c",
            &pc2,
        ],
        Duration::from_secs(60),
    );
    let plan: serde_json::Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("plan json: {error}; stderr: {}", output.stderr));
    let dependencies = &plan["dependencies"];
    for name in [
        "MemoryFusionHub",
        "UnifiedObservabilityCenter",
        "SelfHealingSupervisor",
    ] {
        for host in ["mainpc", "pc2"] {
            assert!(
                dependencies.get(format!("{host}/{name}")).is_some(),
                "{host}/{name} is planned"
            );
        }
    }
    let of = |agent: &str| -> Vec<String> {
        dependencies[agent]
            .as_array()
            .unwrap_or_else(|| panic!("{agent} planned"))
            .iter()
            .map(|name| name.as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        of("pc2/MemoryFusionHub"),
        ["pc2/UnifiedObservabilityCenter"]
    );
    assert!(of("CacheManager").contains(&"pc2/MemoryFusionHub".to_string()));
    assert!(of("SpeechRelayService").contains(&"StreamingTTSAgent".to_string()));
    assert!(of("AffectiveProcessingCenter").contains(&"mainpc/MemoryFusionHub".to_string()));
}

/// `up` with PC2's manifest alone: its dependency on a MainPC agent is
/// declared under `hosts:` and awaited by probing (no link configured),
/// here at 127.0.0.1 standing in for MainPC.
#[test]
fn issue_19_pc2_alone_awaits_a_declared_mainpc_agent_by_probing() {
    let fixture = common::Fixture::new();
    let port = common::port();
    let relay = common::port();
    let manifest = fixture.manifest(&format!(
        "version: 1\nhosts:\n  mainpc:\n    address: 127.0.0.1\n    agents:\n      StreamingTTSAgent: {{tcp: {port}, interval: 50ms}}\nagents:\n  SpeechRelayService:\n    command: [{FAKE_AGENT:?}, --port, \"{relay}\"]\n    readiness: {{tcp: {relay}}}\n    dependencies: [StreamingTTSAgent]\n"
    ));
    let check = cli(
        &[
            "check",
            "--no-bind-check",
            "--config",
            manifest.to_str().expect("utf-8"),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(check.code, Some(0), "{}{}", check.stdout, check.stderr);
    let up = fixture.up(&manifest, &[]);
    up.wait_for_output("mainpc/StreamingTTSAgent", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        fixture.records_of("start", "SpeechRelayService").is_empty(),
        "started before MainPC's agent was there:\n{}",
        up.output()
    );
    // "MainPC's" agent comes up: the probe finds it, the dependent starts.
    let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("listen");
    wait_until(
        "SpeechRelayService started",
        Duration::from_secs(30),
        || !fixture.records_of("start", "SpeechRelayService").is_empty(),
    );
    let status = common::wait_for_status(
        &manifest,
        "SpeechRelayService ready",
        Duration::from_secs(30),
        |status| common::all_ready(status, &["SpeechRelayService"]),
    );
    let tts = common::agent_of(&status, "mainpc/StreamingTTSAgent");
    assert_eq!(tts["host"], "mainpc", "{status}");
    assert_eq!(tts["remote"], true, "{status}");
}

/// A `supervisor` command left running (`logs -f`, `errors -f`), its
/// stdout collected by a thread; killed (by its pid) when dropped.
struct Follower {
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Follower {
    fn start(args: &[&str]) -> Follower {
        let mut child = Command::new(SUPERVISOR)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start supervisor CLI");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let collected = output.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut output = collected.lock().expect("output lock");
                output.push_str(&line);
                output.push('\n');
            }
        });
        Follower { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Waits until `count` of its lines satisfy `line`.
    fn wait_lines(&self, what: &str, count: usize, line: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.output().lines().filter(|text| line(text)).count() < count {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count} line(s) of {what}; output so far:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of one agent's log file on `host`.
fn log_file(system: &System, host: &str, agent: &str) -> Vec<String> {
    std::fs::read_to_string(Path::new(&system.run_dir(host)).join(format!("logs/{agent}.log")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn issue_19_logs_and_errors_of_both_hosts_from_either_side() {
    let test = "issue_19_logs_and_errors_of_both_hosts_from_either_side";
    let Some(net) = Net::create(test, 5) else {
        return;
    };
    let burst = 3;
    let system = system(burst, None);
    let _mainpc = system.up(&net, "mainpc", "mainpc.key");
    let _pc2 = system.up(&net, "pc2", "pc2.key");
    for host in ["mainpc", "pc2"] {
        system.wait_status(
            host,
            "Relay ready and the link up",
            Duration::from_secs(30),
            |status| state(status, "Relay", "pc2") == "ready" && peer_link(status) == "up",
        );
    }
    let (main_run, pc2_run) = (system.run_dir("mainpc"), system.run_dir("pc2"));
    wait_until(
        "Tts's ready line in mainpc's log",
        Duration::from_secs(30),
        || {
            log_file(&system, "mainpc", "Tts")
                .iter()
                .any(|line| line.contains("ready"))
        },
    );
    wait_until(
        "the first burst in pc2's journal",
        Duration::from_secs(30),
        || journal_count(&pc2_run, "mainpc/Burst") >= burst as usize,
    );

    // One agent of the other host, read through the link: its file's lines.
    let output = cli(
        &["logs", "Tts", "--run-dir", &pc2_run],
        Duration::from_secs(30),
    );
    assert_eq!(output.code, Some(0), "logs Tts on pc2: {}", output.stderr);
    assert_eq!(
        output.stdout.lines().collect::<Vec<_>>(),
        log_file(&system, "mainpc", "Tts"),
        "pc2's `logs Tts` is mainpc's Tts.log"
    );
    // Both hosts have a MemoryHub: the plain name is this host's copy,
    // `HOST/NAME` the other's.
    for (name, host) in [("mainpc/MemoryHub", "mainpc"), ("MemoryHub", "pc2")] {
        let output = cli(
            &["logs", name, "--run-dir", &pc2_run],
            Duration::from_secs(30),
        );
        assert_eq!(output.code, Some(0), "logs {name}: {}", output.stderr);
        assert_eq!(
            output.stdout.lines().collect::<Vec<_>>(),
            log_file(&system, host, "MemoryHub"),
            "pc2's `logs {name}` is {host}'s MemoryHub.log"
        );
    }
    let output = cli(
        &["logs", "mainpc/Nobody", "--run-dir", &pc2_run],
        Duration::from_secs(30),
    );
    assert_ne!(output.code, Some(0), "an unknown remote agent is an error");
    assert!(output.stderr.contains("Nobody"), "{}", output.stderr);

    // Merged from each side: every line prefixed with HOST/AGENT, in time
    // order, every agent of both hosts, each file's lines complete.
    for run in [&pc2_run, &main_run] {
        let output = cli(
            &["logs", "-n", "1000", "--run-dir", run],
            Duration::from_secs(30),
        );
        assert_eq!(output.code, Some(0), "merged logs: {}", output.stderr);
        let mut by_agent: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut last_time = String::new();
        for line in output.stdout.lines() {
            let (prefix, text) = line
                .split_once(" | ")
                .unwrap_or_else(|| panic!("no `HOST/AGENT | ` prefix: {line:?}"));
            let time = text.split(' ').next().unwrap_or_default();
            if time.starts_with("20") {
                assert!(
                    time >= last_time.as_str(),
                    "out of time order at {line:?}:\n{}",
                    output.stdout
                );
                last_time = time.to_string();
            }
            by_agent
                .entry(prefix.trim().to_string())
                .or_default()
                .push(text.to_string());
        }
        for (host, agent) in [
            ("mainpc", "Tts"),
            ("mainpc", "MemoryHub"),
            ("pc2", "MemoryHub"),
            ("pc2", "Relay"),
        ] {
            assert_eq!(
                by_agent
                    .get(&format!("{host}/{agent}"))
                    .cloned()
                    .unwrap_or_default(),
                log_file(&system, host, agent),
                "{host}/{agent} in the merged logs read on {run}:\n{}",
                output.stdout
            );
        }
    }

    // Following: a restart of MainPC's Tts shows up on PC2, in the merged
    // stream and in Tts's own; MainPC's errors in PC2's `errors -f`.
    let merged = Follower::start(&["logs", "-f", "--run-dir", &pc2_run]);
    let single = Follower::start(&["logs", "Tts", "-f", "--run-dir", &pc2_run]);
    let errors = Follower::start(&["errors", "-f", "--run-dir", &pc2_run]);
    let ready_of_tts = |line: &str| line.starts_with("mainpc/Tts ") && line.ends_with(" ready");
    merged.wait_lines("Tts's first ready, merged", 1, ready_of_tts);
    single.wait_lines("Tts's first ready", 1, |line| line.ends_with(" ready"));
    errors.wait_lines("the first burst", burst as usize, |line| {
        line.contains("mainpc/Burst")
    });
    for agent in ["Tts", "Burst"] {
        let output = cli(
            &["restart", agent, "--run-dir", &main_run],
            Duration::from_secs(60),
        );
        assert_eq!(output.code, Some(0), "restart {agent}: {}", output.stderr);
    }
    merged.wait_lines("Tts's second ready, merged", 2, ready_of_tts);
    single.wait_lines("Tts's second ready", 2, |line| line.ends_with(" ready"));
    errors.wait_lines("the second burst", 2 * burst as usize, |line| {
        line.contains("mainpc/Burst")
    });
    assert!(
        merged
            .output()
            .lines()
            .all(|line| line.starts_with("mainpc/") || line.starts_with("pc2/")),
        "{}",
        merged.output()
    );
}

/// Discovery across hosts: an SDK agent on PC2 resolving MainPC's `Echo`
/// gets MainPC's address (never loopback) and calls it over the veth; while
/// the link is down, RESOLVE still answers the manifest's address (the
/// fallback), with the state last reported.
#[test]
fn issue_19_resolve_gives_the_other_hosts_address_with_the_link_up_and_down() {
    let test = "issue_19_resolve_gives_the_other_hosts_address_with_the_link_up_and_down";
    let Some(net) = Net::create(test, 6) else {
        return;
    };
    let system = system(0, None);
    let binary = |name: &str| {
        Path::new(SUPERVISOR)
            .with_file_name(name)
            .display()
            .to_string()
    };
    let append = |file: &str, text: String| {
        let path = system.path(file);
        let mut manifest = std::fs::read_to_string(&path).expect("read manifest");
        manifest.push_str(&text);
        std::fs::write(&path, manifest).expect("write manifest");
    };
    append(
        "main.yaml",
        format!(
            "  Echo:\n    command: [{:?}, --bind, \"tcp://{MAINPC}:7104\"]\n    port: 7104\n    readiness: sdk\n",
            binary("agent-echo-service")
        ),
    );
    append(
        "pc2.yaml",
        format!(
            "  Caller:\n    command: [{:?}, --service, Echo, --interval, \"300\"]\n    readiness: sdk\n    dependencies: [Echo]\n",
            binary("agent-echo-client")
        ),
    );
    let _mainpc = system.up(&net, "mainpc", "mainpc.key");
    let _pc2 = system.up(&net, "pc2", "pc2.key");
    system.wait_status(
        "pc2",
        "Caller ready and the link up",
        Duration::from_secs(30),
        |status| state(status, "Caller", "pc2") == "ready" && peer_link(status) == "up",
    );
    let expected = format!("echo-client: Echo at tcp://{MAINPC}:7104");
    let caller_log = || log_file(&system, "pc2", "Caller");
    wait_until(
        "Caller resolving Echo and getting an answer across the veth",
        Duration::from_secs(30),
        || {
            let log = caller_log();
            log.iter().any(|line| line.ends_with(&expected))
                && log.iter().any(|line| line.contains("echo:ping"))
        },
    );

    net.link(false);
    system.wait_status(
        "pc2",
        "mainpc unreachable",
        Duration::from_secs(20),
        |status| peer_link(status) == "unreachable",
    );
    let output = cli(
        &["restart", "Caller", "--run-dir", &system.run_dir("pc2")],
        Duration::from_secs(60),
    );
    assert_eq!(output.code, Some(0), "restart Caller: {}", output.stderr);
    wait_until(
        "the new Caller resolving Echo while the link is down",
        Duration::from_secs(30),
        || {
            caller_log()
                .iter()
                .filter(|line| line.ends_with(&expected))
                .count()
                >= 2
        },
    );
    let log = caller_log();
    assert!(
        !log.iter().any(|line| line.contains("127.0.0.1")),
        "Caller was given a loopback address:\n{}",
        log.join("\n")
    );
    net.link(true);
}
