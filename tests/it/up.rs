//! `supervisor up` with real processes: start order, readiness of each probe
//! kind, a required agent that never becomes ready, an optional one that
//! fails, refusing to start on check errors, logs and injected environment.

use crate::common;

use std::time::Duration;

use common::{Fixture, port};

const BOUND: Duration = Duration::from_secs(30);

#[test]
fn agents_start_only_after_their_dependencies_are_ready() {
    let fixture = Fixture::new();
    let (db, api) = (port(), port());
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  db:
    command: ["FAKE", "--ready-after", "400ms"]
    port: {db}
    readiness: {{ tcp: {db}, timeout: 20s, interval: 20ms }}
  api:
    command: ["FAKE", "--ready-after", "200ms"]
    port: {api}
    dependencies: [db]
    readiness: {{ http: "http://127.0.0.1:{api}/health", timeout: 20s, interval: 20ms }}
  ui:
    command: ["FAKE"]
    dependencies: [api, db]
    readiness: {{ start_period: 100ms }}
  free:
    command: ["FAKE"]
    readiness: {{ start_period: 100ms }}
"#
    ));
    let mut up = fixture.up(&manifest, &["--exit-when-ready"]);
    let status = up.wait(BOUND);
    assert!(
        status.success(),
        "exit {status:?}; output:\n{}",
        up.output()
    );
    for (agent, dependency) in [("api", "db"), ("ui", "api"), ("ui", "db")] {
        let started = fixture.first("start", agent).nanos;
        let ready = fixture.first("ready", dependency).nanos;
        assert!(
            started >= ready,
            "{agent} started before {dependency} was ready"
        );
    }
    // `free` does not wait for anyone: it starts with db, long before db is ready.
    assert!(fixture.first("start", "free").nanos < fixture.first("ready", "db").nanos);
    let output = up.output();
    assert!(output.contains("all ready: 4/4 agents"), "{output}");
    assert!(
        output.contains("critical path: db -> api -> ui"),
        "{output}"
    );
}

#[test]
fn every_probe_kind_gates_readiness() {
    let fixture = Fixture::new();
    let (tcp, http) = (port(), port());
    let ready_file = fixture.path("exec-ready");
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  tcp:
    command: ["FAKE", "--ready-after", "300ms"]
    port: {tcp}
    readiness: {{ tcp: {tcp}, timeout: 20s, interval: 20ms }}
  http:
    command: ["FAKE", "--ready-after", "300ms"]
    port: {http}
    readiness: {{ http: "http://127.0.0.1:{http}/", timeout: 20s, interval: 20ms }}
  exec:
    command: ["FAKE", "--ready-after", "300ms", "--ready-file", "{file}"]
    readiness: {{ exec: ["test", "-f", "{file}"], timeout: 20s, interval: 20ms }}
  period:
    command: ["FAKE"]
    readiness: {{ start_period: 300ms }}
  last:
    command: ["FAKE"]
    dependencies: [tcp, http, exec, period]
    readiness: {{ start_period: 300ms }}
"#,
        file = ready_file.display()
    ));
    let mut up = fixture.up(&manifest, &["--exit-when-ready"]);
    let status = up.wait(BOUND);
    assert!(
        status.success(),
        "exit {status:?}; output:\n{}",
        up.output()
    );
    let last = fixture.first("start", "last").nanos;
    for agent in ["tcp", "http", "exec"] {
        assert!(
            last >= fixture.first("ready", agent).nanos,
            "last started before {agent} was ready"
        );
    }
    let period = fixture.first("start", "period").nanos;
    assert!(last >= period + 300_000_000, "start period not respected");
}

#[test]
fn a_required_agent_that_is_never_ready_fails_up_and_names_it() {
    let fixture = Fixture::new();
    let (db, free) = (port(), port());
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  db:
    command: ["FAKE", "--ready-after", "60s"]
    port: {db}
    readiness: {{ tcp: {db}, timeout: 1s, interval: 50ms }}
    restart: never
  api:
    command: ["FAKE"]
    dependencies: [db]
  free:
    command: ["FAKE", "--ready-after", "100ms"]
    port: {free}
    readiness: {{ tcp: {free}, timeout: 10s, interval: 20ms }}
"#
    ));
    let mut up = fixture.up(&manifest, &[]);
    let status = up.wait(BOUND);
    assert_eq!(status.code(), Some(1), "output:\n{}", up.output());
    let output = up.output();
    // The reason says what is wrong: the process listens on nothing yet.
    assert!(
        output.contains(&format!(
            "required agent `db` failed: not ready within 1.00s: nothing of the agent listens on {db}; the agent listens on no TCP port"
        )),
        "{output}"
    );
    assert!(
        fixture.records_of("start", "api").is_empty(),
        "api must never start"
    );
    // Everything that was started was stopped (db killed when it missed
    // its deadline, free stopped with the rest).
    assert!(!common::alive(fixture.first("start", "db").pid));
    assert_eq!(fixture.records_of("stop", "free").len(), 1);
}

#[test]
fn an_optional_agent_failing_only_blocks_its_dependents() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  flaky:
    command: ["FAKE", "--crash-after", "100ms", "--exit-code", "3"]
    required: false
    restart: never
    readiness: { start_period: 2s }
  user:
    command: ["FAKE"]
    dependencies: [flaky]
    required: false
  other:
    command: ["FAKE"]
    readiness: { start_period: 200ms }
"#,
    );
    let mut up = fixture.up(&manifest, &["--exit-when-ready"]);
    let status = up.wait(BOUND);
    // `--exit-when-ready` succeeds only when every agent became ready; the
    // others are named, optional or not.
    assert_eq!(status.code(), Some(1), "output:\n{}", up.output());
    let output = up.output();
    assert!(
        output.contains("not every agent became ready")
            && output.contains("  flaky: failed")
            && output.contains("  user: blocked"),
        "{output}"
    );
    assert!(
        fixture.records_of("start", "user").is_empty(),
        "user must not start"
    );
    assert_eq!(fixture.records_of("start", "other").len(), 1);
    let output = up.output();
    assert!(
        // The reason carries what the agent said last.
        output.contains(
            "exited with code 3: fake-agent flaky: crashing with code 3 (restart: never)"
        ),
        "{output}"
    );
    assert!(output.contains("dependency `flaky` is failed"), "{output}");
}

#[test]
fn check_errors_refuse_to_start_anything() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  a:
    command: ["FAKE"]
    dependencies: [b]
  b:
    command: ["FAKE"]
    dependencies: [a]
"#,
    );
    let mut up = fixture.up(&manifest, &[]);
    let status = up.wait(BOUND);
    assert_eq!(status.code(), Some(1), "output:\n{}", up.output());
    assert!(up.output().contains("a -> b -> a"), "{}", up.output());
    assert!(fixture.records().is_empty(), "nothing may start");
}

#[test]
fn logs_go_to_the_run_dir_and_the_environment_is_injected() {
    let fixture = Fixture::new();
    let (db, own) = (port(), port());
    let script = "echo \"name=$AGENT_NAME port=$AGENT_PORT db=$DB_ENDPOINT offset=$PORT_OFFSET custom=$CUSTOM zmq=$AGENT_CONFIG_ZMQ_PORT\"; sleep 30";
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  db:
    command: ["FAKE", "--ready-after", "100ms"]
    port: {db}
    readiness: {{ tcp: {db}, timeout: 20s, interval: 20ms }}
  env-check:
    command: ['{script}']
    shell: true
    port: {own}
    env: {{ CUSTOM: "yes" }}
    config: {{ zmq_port: 47999 }}
    dependencies: [db]
    readiness: {{ start_period: 300ms }}
"#
    ));
    let run_dir = fixture.path("run");
    let mut up = fixture.up(
        &manifest,
        &["--exit-when-ready", "--run-dir", run_dir.to_str().unwrap()],
    );
    let status = up.wait(BOUND);
    assert!(
        status.success(),
        "exit {status:?}; output:\n{}",
        up.output()
    );
    let log = std::fs::read_to_string(run_dir.join("logs/env-check.log")).expect("env-check log");
    let expected =
        format!("name=env-check port={own} db=tcp://127.0.0.1:{db} offset=0 custom=yes zmq=47999");
    assert!(log.contains(&expected), "log: {log}");
    assert!(
        up.output().contains(&format!("env-check | {expected}")),
        "console: {}",
        up.output()
    );
    let db_log = std::fs::read_to_string(run_dir.join("logs/db.log")).expect("db log");
    assert!(db_log.contains("fake-agent db ready"), "{db_log}");
}

#[test]
fn a_dependency_on_another_host_is_waited_for_through_its_probe() {
    let fixture = Fixture::new();
    let (remote, api) = (port(), port());
    // api's readiness is its own port, so ready means it ran (and wrote
    // its `start` record) however slowly a loaded machine starts it.
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  remote-db:
    host: 127.0.0.2
    command: ["never-run-here"]
    port: {remote}
    readiness: {{ tcp: {remote}, timeout: 20s, interval: 20ms }}
  api:
    command: ["FAKE"]
    port: {api}
    dependencies: [remote-db]
    readiness: {{ tcp: {api} }}
"#
    ));
    let mut up = fixture.up(&manifest, &["--exit-when-ready"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        fixture.records_of("start", "api").is_empty(),
        "api started before its remote dependency was up"
    );
    let listening_since = common::now_nanos();
    let listener = std::net::TcpListener::bind(("127.0.0.2", remote)).expect("listen on 127.0.0.2");
    let status = up.wait(BOUND);
    drop(listener);
    assert!(
        status.success(),
        "exit {status:?}; output:\n{}",
        up.output()
    );
    assert!(fixture.first("start", "api").nanos >= listening_since);
}

/// The README's quick start (`config/startup.yaml`: Python agents, the Rust
/// SDK agents built by cargo beside `supervisor`, the Python SDK agents,
/// which need pyzmq), as `.ci/run` also runs it headless.
#[test]
fn the_example_manifest_runs_from_a_fresh_clone() {
    let fixture = Fixture::new();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/startup.yaml");
    let run_dir = fixture.path("run");
    let mut up = fixture.up(
        &manifest,
        &["--exit-when-ready", "--run-dir", run_dir.to_str().unwrap()],
    );
    let status = up.wait(BOUND);
    assert!(
        status.success(),
        "exit {status:?}; output:\n{}",
        up.output()
    );
    assert!(
        up.output().contains("all ready: 8/8 agents"),
        "{}",
        up.output()
    );
    assert!(
        up.output()
            .contains("critical path: store -> api -> worker"),
        "{}",
        up.output()
    );
    // Every agent's row of the summary table ends in `ready`.
    let output = up.output();
    for agent in [
        "store",
        "api",
        "worker",
        "reporter",
        "echo-service",
        "echo-client",
        "py-echo-client",
        "py-worker",
    ] {
        let row = output
            .lines()
            .find(|line| line.starts_with("  ") && line.split_whitespace().next() == Some(agent));
        assert!(
            row.is_some_and(|row| row.ends_with(" ready")),
            "{agent}: no ready row in the summary:\n{output}"
        );
    }
}

/// Regression (found while building the Python SDK): with a relative
/// `--config`, agents got `ipc://./.supervisor/agents.sock`, which an agent
/// with another working directory cannot reach; and `PORT_OFFSET` from
/// `--env-file` shifted the manifest's ports but agents saw 0.
#[test]
fn agents_get_an_absolute_endpoint_and_the_env_file_port_offset() {
    let fixture = Fixture::new();
    std::fs::create_dir(fixture.path("elsewhere")).expect("mkdir");
    std::fs::write(fixture.path("offset.env"), "PORT_OFFSET=100\n").expect("write env file");
    fixture.manifest(
        r#"
version: 1
agents:
  show:
    command: ['echo "endpoint=$SUPERVISOR_ENDPOINT offset=$PORT_OFFSET"; sleep 30']
    shell: true
    cwd: elsewhere
    readiness: { start_period: 300ms }
"#,
    );
    let output = std::process::Command::new(common::SUPERVISOR)
        .args([
            "up",
            "--config",
            "manifest.yaml",
            "--env-file",
            "offset.env",
            "--exit-when-ready",
            "--no-console",
        ])
        .current_dir(fixture.dir.path())
        .output()
        .expect("run supervisor up");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = std::fs::read_to_string(fixture.path(".supervisor/logs/show.log")).expect("log");
    assert!(
        log.contains("endpoint=ipc:///") || log.contains("endpoint=tcp://"),
        "relative endpoint: {log}"
    );
    assert!(log.contains("offset=100"), "{log}");
}

/// A `fake-agent` listening on `port` as a foreign process (no supervisor),
/// returned once the port accepts connections; killed by pid when dropped.
fn foreign_listener(port: u16) -> (std::process::Child, common::KillOnDrop) {
    let child = std::process::Command::new(common::FAKE_AGENT)
        .args(["--name", "intruder", "--port", &port.to_string()])
        .env_remove("FAKE_AGENT_RECORD")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the foreign listener");
    let guard = common::KillOnDrop(vec![child.id()]);
    common::wait_until("the foreign listener", BOUND, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (child, guard)
}

/// Issue 16, item 4: a port another process already holds is reported with
/// that process's pid and name before the agent is started.
#[test]
fn issue_16_a_port_held_by_a_foreign_process_is_named_before_start() {
    let fixture = Fixture::new();
    let held = port();
    let (intruder, _guard) = foreign_listener(held);
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  a:
    command: ["FAKE"]
    port: {held}
    readiness: {{ tcp: {held}, timeout: 20s, interval: 50ms }}
"#
    ));
    let mut up = fixture.up(&manifest, &["--exit-when-ready"]);
    let status = up.wait(BOUND);
    assert!(!status.success(), "{}", up.output());
    let expected = format!(
        "port {held} (a.port) is already bound on this machine by pid {} (fake-agent)",
        intruder.id()
    );
    assert!(up.output().contains(&expected), "{}", up.output());
    assert!(fixture.records_of("start", "a").is_empty(), "a was started");
}

/// Issue 16, item 4: when the agent cannot bind its port because a foreign
/// process holds it, the tcp probe's successful connect to that process is
/// not readiness; the agent's reason names the holder.
#[test]
fn issue_16_a_foreign_listener_is_not_readiness() {
    let fixture = Fixture::new();
    let held = port();
    let (intruder, _guard) = foreign_listener(held);
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  a:
    command: ["FAKE", "--ready-after", "120s"]
    port: {held}
    readiness: {{ tcp: {held}, timeout: 60s, interval: 50ms }}
"#
    ));
    // The agent would only try its port after 120 s, so the foreign
    // listener is all the probe ever sees (an agent that fails to bind
    // after a moment would replace the reason with its exit before a
    // slow status call on a loaded machine reads it).
    // Skip the pre-start check, as a restart or a reload would.
    let up = fixture.up(&manifest, &["--no-bind-check"]);
    let expected = format!(
        "port {held} is held by pid {} (fake-agent), not by this agent",
        intruder.id()
    );
    let mut states = Vec::new();
    common::wait_for_status(
        &manifest,
        "a's reason to name the intruder",
        BOUND,
        |status| {
            let agent = common::agent_of(status, "a");
            states.push(agent["state"].as_str().unwrap_or("").to_string());
            agent["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains(&expected))
        },
    );
    // Give a wrongly passing probe time to show.
    std::thread::sleep(Duration::from_secs(1));
    let status = common::status_json(&manifest).expect("status");
    states.push(
        common::agent_of(&status, "a")["state"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    );
    assert!(
        !states.iter().any(|state| state == "ready"),
        "{states:?}\n{}",
        up.output()
    );
    assert!(!up.output().contains("all ready"), "{}", up.output());
}

/// The other side of the foreign-listener rule: a listener in a daemon the
/// agent started (double fork and `setsid`: outside its process tree and
/// group) is the agent's own, found through its cgroup or marker.
#[test]
fn a_listener_in_a_daemon_of_the_agent_is_its_own() {
    let fixture = Fixture::new();
    let daemon_port = port();
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  d:
    command:
      - python3
      - -c
      - |
        import os, socket, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", {daemon_port}))
                s.listen()
                time.sleep(600)
            os._exit(0)
        time.sleep(600)
    readiness: {{ tcp: {daemon_port}, timeout: 20s, interval: 50ms }}
"#
    ));
    let mut up = fixture.up(&manifest, &["--exit-when-ready"]);
    let status = up.wait(BOUND);
    assert!(status.success(), "{}", up.output());
    assert!(
        up.output().contains("all ready: 1/1 agents"),
        "{}",
        up.output()
    );
    // The daemon went with the agent.
    common::wait_until("the daemon's port to be free", BOUND, || {
        std::net::TcpListener::bind(("127.0.0.1", daemon_port)).is_ok()
    });
}
