//! `idle_stop` with real processes (issue 22): a Python SDK agent that
//! reports no work is stopped gracefully after `idle_stop` (2 s), shown `idle`
//! (its dependent keeps running, nothing counts as a restart), and is
//! started again, becoming ready, by a RESOLVE from another SDK agent and by
//! `supervisor start`.
//!
//! The agents are `python/tests/agents/idle_agent.py`, run with the SDK of
//! this tree on PYTHONPATH; they need `python3` with pyzmq (fails, never
//! skips, without it, like `python_sdk.rs`). They are started through
//! `sh -c` so that they record `start NAME NANOS PID` first (the `Up` guard
//! kills every recorded pid).

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{Fixture, agent_of, alive, cli, wait_for_status, wait_until};
use nix::sys::signal::Signal;

const BOUND: Duration = Duration::from_secs(60);

fn require_pyzmq() {
    let output = std::process::Command::new("python3")
        .args(["-c", "import zmq"])
        .output()
        .expect("python3 is needed for the idle_stop test");
    assert!(
        output.status.success(),
        "the idle_stop test needs pyzmq: run `pip install pyzmq`\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A `shell: true` command recording its start, then running the idle agent.
fn agent_command(fixture: &Fixture, name: &str, args: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/python/tests/agents/idle_agent.py"
    );
    recorded(fixture, name, &format!("python3 {script}"), args)
}

fn state(status: &serde_json::Value, name: &str) -> String {
    agent_of(status, name)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pid(status: &serde_json::Value, name: &str) -> Option<u32> {
    agent_of(status, name)["pid"].as_u64().map(|pid| pid as u32)
}

fn wait_for_state(manifest: &Path, name: &str, wanted: &str) -> serde_json::Value {
    wait_for_status(
        manifest,
        &format!("{name} to be {wanted}"),
        BOUND,
        |status| state(status, name) == wanted,
    )
}

#[test]
fn an_agent_without_work_is_stopped_as_idle_and_started_again_by_resolve_and_start() {
    require_pyzmq();
    let fixture = Fixture::new();
    let trigger = fixture.path("resolve-now");
    let answers = fixture.path("answers.txt");
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
defaults:
  env: {{ PYTHONPATH: "{python}" }}
agents:
  lazy:
    command: '{lazy}'
    shell: true
    readiness: {{ sdk: true, timeout: 30s }}
    heartbeat: {{ interval: 200ms, misses: 10 }}
    idle_stop: 2s
    stop: {{ grace: 5s }}
  caller:
    command: '{caller}'
    shell: true
    dependencies: [lazy]
    readiness: {{ sdk: true, timeout: 30s }}
    heartbeat: {{ interval: 200ms, misses: 10 }}
"#,
        python = concat!(env!("CARGO_MANIFEST_DIR"), "/python"),
        lazy = agent_command(&fixture, "lazy", "--role lazy"),
        caller = agent_command(
            &fixture,
            "caller",
            &format!(
                "--role caller --target lazy --trigger {} --out {}",
                trigger.display(),
                answers.display()
            )
        ),
    ));
    let mut up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready: 2/2", BOUND);
    // The first run's pid from its own record: on a loaded machine `lazy`
    // may already be idle by the time a status answers.
    let first_lazy = fixture.first("start", "lazy").pid;
    let caller_pid = pid(&status_now(&manifest), "caller").expect("caller pid");

    // Idle after ~2 s without work: stopped with SIGTERM (the Python SDK
    // exits cleanly on it), shown idle, no restart, the dependent untouched.
    let status = wait_for_state(&manifest, "lazy", "idle");
    wait_until("the idle agent's process to be gone", BOUND, || {
        !alive(first_lazy)
    });
    let lazy = agent_of(&status, "lazy");
    assert_eq!(lazy["reason"], "idle: no work for 2.00s", "{lazy}");
    assert_eq!(lazy["restarts"], 0, "{lazy}");
    assert!(lazy["pid"].is_null(), "{lazy}");
    assert_eq!(state(&status, "caller"), "ready");
    assert_eq!(
        pid(&status, "caller"),
        Some(caller_pid),
        "the dependent kept running"
    );
    assert!(
        agent_of(&status, "caller")["degraded_by"]
            .as_array()
            .is_none_or(|causes| causes.is_empty()),
        "an idle dependency degrades nobody: {status}"
    );
    assert!(alive(caller_pid));
    let text = cli(&["status", "--config", manifest.to_str().unwrap()], BOUND);
    assert!(
        text.stdout
            .lines()
            .any(|line| line.contains("lazy") && line.contains("idle")),
        "status shows it idle:\n{}",
        text.stdout
    );
    // Still idle a while later: not restarted by its policy.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fixture.records_of("start", "lazy").len(), 1);

    // A RESOLVE from the caller wakes it: answered `starting`, then `ready`.
    std::fs::write(&trigger, "").expect("write the trigger");
    wait_until("the caller's resolves to end", BOUND, || {
        std::fs::read_to_string(&answers).is_ok_and(|text| text.ends_with("done\n"))
    });
    let answered = std::fs::read_to_string(&answers).unwrap();
    let states: Vec<&str> = answered.lines().collect();
    assert_eq!(states.first(), Some(&"starting"), "{answered}");
    assert_eq!(states[states.len() - 2..], ["ready", "done"], "{answered}");
    assert_eq!(fixture.records_of("start", "lazy").len(), 2);
    let status = status_now(&manifest);
    let lazy = agent_of(&status, "lazy");
    assert_eq!(
        lazy["reason"], "started on demand: resolved by `caller`",
        "{lazy}"
    );
    assert_eq!(lazy["restarts"], 0, "{lazy}");
    assert_eq!(pid(&status, "caller"), Some(caller_pid));

    // Idle again, then `supervisor start` brings it back.
    wait_for_state(&manifest, "lazy", "idle");
    let output = cli(
        &["start", "lazy", "--config", manifest.to_str().unwrap()],
        BOUND,
    );
    // `start` returns 0 once it saw the agent ready.
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(fixture.records_of("start", "lazy").len(), 3);
    let status = status_now(&manifest);
    assert_eq!(pid(&status, "caller"), Some(caller_pid));

    up.signal(Signal::SIGTERM);
    let exit = up.wait(BOUND);
    assert!(exit.success(), "{exit:?}\n{}", up.output());
}

fn status_now(manifest: &Path) -> serde_json::Value {
    wait_for_status(manifest, "a status", BOUND, |_| true)
}

/// A `shell: true` command recording its start, then running `program`.
fn recorded(fixture: &Fixture, name: &str, program: &str, args: &str) -> String {
    let record = fixture.record.display();
    format!(r#"echo start {name} $$(date +%s%N) $$$$ >> "{record}"; exec {program} {args}"#)
}

#[test]
fn a_pool_request_left_unanswered_by_an_idle_service_starts_it_and_a_retry_reaches_it() {
    let fixture = Fixture::new();
    let port = common::port();
    // The Rust echo service reports `in_flight: 0` after each request; the
    // client resolves it once, then only calls its endpoint through the
    // pool, every 2.5 s: longer than `idle_stop`, so each call after the
    // first finds the service idle.
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  service:
    command: '{service}'
    shell: true
    port: {port}
    readiness: {{ sdk: true, timeout: 30s }}
    heartbeat: {{ interval: 200ms, misses: 10 }}
    idle_stop: 1s
  client:
    command: '{client}'
    shell: true
    dependencies: [service]
    readiness: {{ sdk: true, timeout: 30s }}
    heartbeat: {{ interval: 200ms, misses: 10 }}
"#,
        service = recorded(
            &fixture,
            "service",
            env!("CARGO_BIN_EXE_agent-echo-service"),
            &format!("--port {port}")
        ),
        client = recorded(
            &fixture,
            "client",
            env!("CARGO_BIN_EXE_agent-echo-client"),
            "--service service --resolve-once --interval 2500 --timeout-ms 500 --retries 40"
        ),
    ));
    let mut up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready: 2/2", BOUND);
    wait_for_state(&manifest, "service", "idle");
    let calls = |status: &serde_json::Value| {
        agent_of(status, "client")["heartbeat"]["custom"]["calls"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = calls(&status_now(&manifest));
    // The next call wakes it (through the pool's RESOLVE) and is answered.
    let status = wait_for_status(
        &manifest,
        "a call answered after the idle stop",
        BOUND,
        |status| calls(status) > before && fixture.records_of("start", "service").len() >= 2,
    );
    let service = agent_of(&status, "service");
    assert_eq!(service["restarts"], 0, "{service}");
    // Woken by the RESOLVE the client's pool sent (the client resolves
    // nothing itself after its first call).
    assert!(
        up.output().contains("waking: resolved by `client`"),
        "{}",
        up.output()
    );
    // Nothing failed on the client's side: no call ran out of retries.
    let client = agent_of(&status, "client");
    assert_eq!(client["restarts"], 0, "{client}");
    let errors = cli(&["errors", "--config", manifest.to_str().unwrap()], BOUND);
    assert!(
        !errors.stdout.contains("request"),
        "a call failed:\n{}",
        errors.stdout
    );

    up.signal(Signal::SIGTERM);
    let exit = up.wait(BOUND);
    assert!(exit.success(), "{exit:?}\n{}", up.output());
}
