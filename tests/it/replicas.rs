//! Replicas (issue 22), with real processes: `replicas: 3` starts
//! `worker-0..2` on distinct ports from a range, a dependent waits for
//! `min_ready` of them, a killed instance is restarted alone, `supervisor
//! scale` adds instances and removes them highest index first, and `check`
//! names a range that overlaps another agent's port.

use crate::common;

use std::time::Duration;

use common::{Fixture, agent_of, alive, all_ready, cli, port, wait_for_status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BOUND: Duration = Duration::from_secs(30);

/// Three workers on `first+`, instance i ready after i×1.1 s, and an `api`
/// that needs two of them.
fn manifest_text(first: u16, api_port: u16) -> String {
    format!(
        r#"version: 1
agents:
  worker:
    command: ["FAKE", "--ready-after", "${{REPLICA}}${{REPLICA}}00ms", "--stop-delay", "300ms"]
    port: {first}+
    readiness: {{ tcp: {first} }}
    replicas: 3
    min_ready: 2
    stop: {{ grace: 5s }}
    restart: {{ policy: always, backoff: {{ initial: 100ms }} }}
  api:
    command: ["FAKE"]
    port: {api_port}
    readiness: {{ tcp: {api_port} }}
    dependencies: [worker]
"#
    )
}

/// A free run of `count` ports (the instances' range).
fn ports(count: u16) -> u16 {
    loop {
        let first = port();
        if first < u16::MAX - count
            && (1..count)
                .all(|offset| std::net::TcpListener::bind(("127.0.0.1", first + offset)).is_ok())
        {
            return first;
        }
    }
}

fn pid_of(status: &serde_json::Value, name: &str) -> u64 {
    agent_of(status, name)["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} has no pid: {status}"))
}

#[test]
fn instances_get_their_own_ports_and_a_dependent_waits_for_min_ready() {
    let fixture = Fixture::new();
    let first = ports(3);
    let manifest = fixture.manifest(&manifest_text(first, port()));
    let _up = fixture.up(&manifest, &["--no-watch"]);
    let workers = ["worker-0", "worker-1", "worker-2"];
    let status = wait_for_status(&manifest, "every instance ready", BOUND, |status| {
        all_ready(status, &workers) && all_ready(status, &["api"])
    });
    for (index, name) in workers.iter().enumerate() {
        let agent = agent_of(&status, name);
        assert_eq!(agent["replica_of"], "worker", "{agent}");
        assert_eq!(agent["replica"], index, "{agent}");
        let own = first + index as u16;
        assert_eq!(agent["ports"][0]["port"], own, "{agent}");
        // The instance itself listens on its port (AGENT_PORT).
        std::net::TcpStream::connect(("127.0.0.1", own))
            .unwrap_or_else(|error| panic!("{name} does not listen on {own}: {error}"));
    }
    assert!(
        status["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .all(|agent| agent["name"] != "worker"),
        "the agent as written is no row of its own: {status}"
    );
    // `api` started once two instances were ready, before the third.
    let api_start = fixture.first("start", "api").nanos;
    let ready = |name: &str| fixture.first("ready", name).nanos;
    assert!(
        api_start >= ready("worker-1"),
        "api started before min_ready (2) instances were ready: {:?}",
        fixture.records()
    );
    assert!(
        api_start < ready("worker-2"),
        "api waited for all three instances, not min_ready (2): {:?}",
        fixture.records()
    );
}

#[test]
fn a_killed_instance_is_restarted_alone() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(&manifest_text(ports(3), port()));
    let _up = fixture.up(&manifest, &["--no-watch"]);
    let names = ["worker-0", "worker-1", "worker-2", "api"];
    let before = wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &names)
    });
    let victim = pid_of(&before, "worker-1");
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("kill worker-1");
    let after = wait_for_status(&manifest, "worker-1 back", BOUND, |status| {
        all_ready(status, &names) && pid_of(status, "worker-1") != victim
    });
    assert!(!alive(victim as u32));
    assert_eq!(agent_of(&after, "worker-1")["restarts"], 1);
    for name in ["worker-0", "worker-2", "api"] {
        assert_eq!(
            pid_of(&after, name),
            pid_of(&before, name),
            "{name} kept its process"
        );
        assert_eq!(agent_of(&after, name)["restarts"], 0, "{name}");
        assert_eq!(fixture.records_of("start", name).len(), 1, "{name}");
    }
    assert_eq!(fixture.records_of("start", "worker-1").len(), 2);
}

#[test]
fn scale_adds_instances_and_removes_them_highest_index_first() {
    let fixture = Fixture::new();
    let first = ports(5);
    let manifest = fixture.manifest(&manifest_text(first, port()));
    let _up = fixture.up(&manifest, &["--no-watch"]);
    let path = manifest.to_str().expect("utf-8 path");
    let three = ["worker-0", "worker-1", "worker-2", "api"];
    let before = wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &three)
    });

    let output = cli(&["scale", "worker", "5", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output
            .stdout
            .contains("scaled worker to 5: started worker-3, worker-4; stopping none"),
        "{output:?}"
    );
    let five = wait_for_status(&manifest, "five instances ready", BOUND, |status| {
        all_ready(status, &["worker-3", "worker-4"])
    });
    assert_eq!(agent_of(&five, "worker-4")["ports"][0]["port"], first + 4);
    assert_eq!(agent_of(&five, "worker-4")["replica"], 4);
    std::net::TcpStream::connect(("127.0.0.1", first + 4)).expect("worker-4 listens on its port");
    for name in three {
        assert_eq!(
            pid_of(&five, name),
            pid_of(&before, name),
            "{name} kept running"
        );
    }

    // Below min_ready (2): refused, nothing changes.
    let refused = cli(&["scale", "worker", "1", "--config", path], BOUND);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("`worker` needs at least 2 ready instances"),
        "{refused:?}"
    );
    let not_replicated = cli(&["scale", "api", "2", "--config", path], BOUND);
    assert_eq!(not_replicated.code, Some(1), "{not_replicated:?}");
    assert!(
        not_replicated
            .stderr
            .contains("agent `api` has no `replicas:`"),
        "{not_replicated:?}"
    );

    let output = cli(&["scale", "worker", "2", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let two = wait_for_status(&manifest, "two instances left", BOUND, |status| {
        let names: Vec<&str> = status["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .filter_map(|agent| agent["name"].as_str())
            .collect();
        names == ["worker-0", "worker-1", "api"]
    });
    for name in ["worker-2", "worker-3", "worker-4"] {
        let pid = pid_of(&five, name) as u32;
        common::wait_until(&format!("{name} gone"), BOUND, || !alive(pid));
    }
    // Each stops (a 300 ms stop delay) only after the one above it is gone.
    let stopped = |name: &str| fixture.first("stop", name).nanos;
    assert!(
        stopped("worker-4") < stopped("worker-3") && stopped("worker-3") < stopped("worker-2"),
        "not stopped in reverse index order: {:?}",
        fixture.records()
    );
    for name in ["worker-0", "worker-1", "api"] {
        assert_eq!(
            pid_of(&two, name),
            pid_of(&before, name),
            "{name} kept running"
        );
    }
}

#[test]
fn check_names_a_range_over_another_agents_port_and_plan_shows_instances() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"version: 1
agents:
  worker:
    command: ["FAKE"]
    port: 9100+
    replicas: 3
  other:
    command: ["FAKE"]
    port: 9102
    dependencies: [worker-1]
  api:
    command: ["FAKE"]
    dependencies: [worker]
"#,
    );
    let path = manifest.to_str().expect("utf-8 path");
    let output = cli(&["check", "--no-bind-check", "--config", path], BOUND);
    assert_eq!(output.code, Some(1), "{output:?}");
    let text = format!("{}{}", output.stdout, output.stderr);
    assert!(text.contains("9102"), "{text}");
    assert!(
        text.contains("worker.port (worker-2, from 9100+)"),
        "{text}"
    );
    assert!(text.contains("other.port"), "{text}");
    assert!(
        !text.contains("unknown"),
        "worker-1 is a known name: {text}"
    );

    fixture.manifest(
        &std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("9102", "9200"),
    );
    let plan = cli(&["plan", "--config", path], BOUND);
    assert_eq!(plan.code, Some(0), "{plan:?}");
    assert!(plan.stdout.contains("worker-2"), "{plan:?}");
    assert!(
        plan.stdout.contains("api [") && plan.stdout.contains("<- worker-0, worker-1, worker-2"),
        "{plan:?}"
    );
    assert!(
        plan.stdout.contains("other [") && plan.stdout.contains("<- worker-1"),
        "{plan:?}"
    );
}

#[test]
fn an_sdk_agent_resolves_every_instance_and_spreads_requests_over_them() {
    let fixture = Fixture::new();
    let first = ports(3);
    let manifest = fixture.manifest(&format!(
        r#"version: 1
agents:
  echo:
    command: ["{service}", "--reply-prefix", "echo${{REPLICA}}:"]
    port: {first}+
    readiness: sdk
    replicas: 3
  client:
    command: ["{client}", "--service", "echo", "--spread", "--count", "6", "--interval", "50", "--timeout-ms", "10000"]
    readiness: sdk
    restart: never
    dependencies: [echo]
"#,
        service = env!("CARGO_BIN_EXE_agent-echo-service"),
        client = env!("CARGO_BIN_EXE_agent-echo-client"),
    ));
    let up = fixture.up(&manifest, &["--no-watch"]);
    wait_for_status(&manifest, "the client done", BOUND, |status| {
        agent_of(status, "client")["state"] == "stopped"
    });
    let output = up.output();
    for index in 0..3u16 {
        let endpoint = format!("tcp://127.0.0.1:{}", first + index);
        assert!(
            output.contains(&format!("instance echo-{index} {endpoint} Ready")),
            "echo-{index} not resolved at {endpoint}:\n{output}"
        );
        // Six calls in turn over three ready instances: two each (a call
        // timed out on a loaded machine would move the turn on, hence the
        // client's long timeout).
        let answers = output
            .matches(&format!("{endpoint} echo{index}:ping"))
            .count();
        assert_eq!(
            answers, 2,
            "echo-{index} answered {answers} calls:\n{output}"
        );
    }
}

/// Waits (bounded) until every instance of `echo` is ready, then prints them.
const PYTHON_AGENT: &str = r#"
import time
from supervisor_sdk import Agent

agent = Agent.from_env()
agent.ready()
deadline = time.monotonic() + 20
while True:
    found = agent.resolve_all("echo")
    if all(instance.state == "ready" for instance in found) or time.monotonic() > deadline:
        break
    time.sleep(0.05)
for instance in found:
    print("py", instance.name, instance.endpoint, instance.state, flush=True)
agent.close()
"#;

#[test]
fn the_python_sdk_resolves_every_instance() {
    let fixture = Fixture::new();
    let first = ports(3);
    let script = fixture.path("agent.py");
    std::fs::write(&script, PYTHON_AGENT).expect("write the python agent");
    let manifest = fixture.manifest(&format!(
        r#"version: 1
agents:
  echo:
    command: ["{service}"]
    port: {first}+
    readiness: sdk
    replicas: 3
  client:
    command: ["python3", "{script}"]
    env: {{ PYTHONPATH: "{python}" }}
    readiness: sdk
    restart: never
"#,
        service = env!("CARGO_BIN_EXE_agent-echo-service"),
        script = script.display(),
        python = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("python")
            .display(),
    ));
    let up = fixture.up(&manifest, &["--no-watch"]);
    wait_for_status(&manifest, "the python client done", BOUND, |status| {
        agent_of(status, "client")["state"] == "stopped"
    });
    let output = up.output();
    for index in 0..3u16 {
        let line = format!("py echo-{index} tcp://127.0.0.1:{} ready", first + index);
        assert!(output.contains(&line), "no `{line}`:\n{output}");
    }
}

/// The pid of every one of `names`.
fn pids(status: &serde_json::Value, names: &[&str]) -> Vec<u64> {
    names.iter().map(|name| pid_of(status, name)).collect()
}

#[test]
fn start_stop_and_restart_by_the_agents_name_reach_every_instance() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(&manifest_text(ports(3), port()));
    let _up = fixture.up(&manifest, &["--no-watch"]);
    let path = manifest.to_str().expect("utf-8 path");
    let workers = ["worker-0", "worker-1", "worker-2"];
    let before = wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &workers) && all_ready(status, &["api"])
    });
    let old = pids(&before, &workers);

    // `restart worker`: every instance at once, `api` keeps its process.
    let output = cli(&["restart", "worker", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(output.stdout.contains("restarted: worker"), "{output:?}");
    assert!(
        !output.stdout.contains("and with them"),
        "the instances are what was named: {output:?}"
    );
    let after = wait_for_status(&manifest, "new instances ready", BOUND, |status| {
        all_ready(status, &workers)
    });
    for (name, old) in workers.iter().zip(&old) {
        assert_ne!(pid_of(&after, name), *old, "{name} got a new process");
        assert!(!alive(*old as u32), "{name}'s old process {old} is gone");
        assert_eq!(fixture.records_of("start", name).len(), 2, "{name}");
    }
    assert_eq!(
        pid_of(&after, "api"),
        pid_of(&before, "api"),
        "api kept running"
    );
    // All at once: every instance was stopped before any was started again.
    let last_stop = workers
        .iter()
        .map(|name| fixture.first("stop", name).nanos)
        .max()
        .expect("three instances");
    for name in workers {
        let second_start = fixture.records_of("start", name)[1].nanos;
        assert!(
            second_start > last_stop,
            "{name} started again before every instance had stopped: {:?}",
            fixture.records()
        );
    }

    // `restart --with-dependents worker` takes `api` along.
    let old_api = pid_of(&after, "api");
    let output = cli(
        &["restart", "--with-dependents", "worker", "--config", path],
        BOUND,
    );
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(output.stdout.contains("and with them: api"), "{output:?}");
    let again = wait_for_status(&manifest, "all ready again", BOUND, |status| {
        all_ready(status, &workers) && all_ready(status, &["api"])
    });
    assert_ne!(pid_of(&again, "api"), old_api, "api was restarted");

    // `stop worker`: every instance, and `api` (its dependent) first.
    let running = pids(&again, &workers);
    let output = cli(&["stop", "worker", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let stopped = wait_for_status(&manifest, "everything stopped", BOUND, |status| {
        workers
            .iter()
            .chain(&["api"])
            .all(|name| agent_of(status, name)["state"] == "stopped")
    });
    for (name, pid) in workers.iter().zip(running) {
        assert!(!alive(pid as u32), "{name} ({pid}) still runs");
        assert_eq!(agent_of(&stopped, name)["held"], true, "{name}");
    }

    // `start worker`: every instance again, and `api` that it took along.
    let output = cli(&["start", "worker", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    wait_for_status(&manifest, "started again", BOUND, |status| {
        all_ready(status, &workers) && all_ready(status, &["api"])
    });

    // An unknown name is still refused, naming it.
    let output = cli(&["restart", "workers", "--config", path], BOUND);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output.stderr.contains("unknown agent(s): workers"),
        "{output:?}"
    );
}

/// The names of the agents in `status`, sorted.
fn names(status: &serde_json::Value) -> Vec<String> {
    status["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|agent| agent["name"].as_str().map(str::to_string))
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .collect()
}

#[test]
fn a_reload_keeps_the_scaled_count_until_the_manifest_changes_replicas() {
    let fixture = Fixture::new();
    let (first, api_port) = (ports(5), port());
    let text = manifest_text(first, api_port);
    let manifest = fixture.manifest(&text);
    let _up = fixture.up(&manifest, &["--no-watch"]);
    let path = manifest.to_str().expect("utf-8 path");
    wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["worker-0", "worker-1", "worker-2", "api"])
    });
    let output = cli(&["scale", "worker", "5", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let five = ["worker-0", "worker-1", "worker-2", "worker-3", "worker-4"];
    let scaled = wait_for_status(&manifest, "five instances ready", BOUND, |status| {
        all_ready(status, &five)
    });

    // The manifest as it was: the operator's five stay, nothing restarts.
    let output = cli(&["reload", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output
            .stdout
            .contains("added none; removed none; changed none; 6 unchanged"),
        "{output:?}"
    );
    // Another field changed, `replicas:` not: still five, `api` restarts.
    fixture.manifest(&text.replace(
        "    dependencies: [worker]\n",
        "    dependencies: [worker]\n    env: { CHANGED: \"1\" }\n",
    ));
    let output = cli(&["reload", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output
            .stdout
            .contains("added none; removed none; changed api; 5 unchanged"),
        "{output:?}"
    );
    let kept = wait_for_status(&manifest, "api ready again", BOUND, |status| {
        all_ready(status, &five) && all_ready(status, &["api"])
    });
    assert_eq!(
        names(&kept),
        [
            "api", "worker-0", "worker-1", "worker-2", "worker-3", "worker-4"
        ]
    );
    assert_eq!(
        pids(&kept, &five),
        pids(&scaled, &five),
        "no instance restarted"
    );

    // `replicas: 4` in the manifest: its count wins over the operator's.
    fixture.manifest(&text.replace("replicas: 3", "replicas: 4"));
    let output = cli(&["reload", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(output.stdout.contains("removed worker-4"), "{output:?}");
    let four = wait_for_status(&manifest, "four instances", BOUND, |status| {
        names(status) == ["api", "worker-0", "worker-1", "worker-2", "worker-3"]
    });
    let gone = pid_of(&scaled, "worker-4") as u32;
    common::wait_until("worker-4 gone", BOUND, || !alive(gone));
    // And a reload of that manifest keeps four: nothing is left to keep.
    let output = cli(&["reload", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output.stdout.contains("added none; removed none"),
        "{output:?}"
    );
    assert_eq!(names(&four).len(), 5);
}
