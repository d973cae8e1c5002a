//! Issue 22: the web-stack example (`examples/web-stack/`) under a real
//! `supervisor up`: PostgreSQL and Redis (Debian's servers, data under the
//! run directory), the FastAPI backend over both and the gateway over it.
//!
//! - every part becomes ready, each only after its dependencies were ready;
//!   requests through the gateway reach PostgreSQL;
//! - `kill -9` of Redis: `status` shows the backend `degraded`, naming
//!   `redis` (dependency down, then its breaker open), the backend's own
//!   `/health` says the cache is down; once the supervisor has restarted
//!   Redis the backend is healthy again;
//! - `down` leaves none of the PostgreSQL or Redis processes behind (checked
//!   by the pids and process groups learned while they ran).
//!
//! Needs `postgresql`, `redis-server` (Debian) and the Python packages
//! `fastapi`, `uvicorn`, `psycopg`, `redis`; skipped visibly, naming what is
//! missing, without them (`.ci/run` installs them).

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Up, agent_of, alive, cli, http, port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BOUND: Duration = Duration::from_secs(240);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the example needs that this machine lacks, if anything.
fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    let server = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|version| version.path().join("bin/postgres").is_file());
    if !server {
        missing.push(
            "PostgreSQL server (/usr/lib/postgresql/*/bin/postgres; apt-get install postgresql)"
                .into(),
        );
    }
    for program in ["pg_isready", "redis-server", "redis-cli"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|output| output.status.success());
        if !found {
            missing.push(format!(
                "`{program}` (apt-get install postgresql redis-server)"
            ));
        }
    }
    for module in ["fastapi", "uvicorn", "psycopg", "redis", "zmq"] {
        let found = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|output| output.status.success());
        if !found {
            missing.push(format!("Python module `{module}` (pip install fastapi uvicorn 'psycopg[binary]' redis pyzmq)"));
        }
    }
    missing
}

fn status(run_dir: &Path) -> Option<serde_json::Value> {
    let output = cli(
        &[
            "status",
            "--json",
            "--run-dir",
            run_dir.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(30),
    );
    if output.code != Some(0) {
        return None;
    }
    serde_json::from_str(&output.stdout).ok()
}

/// Polls `status` (and whatever `condition` checks) until it holds.
fn wait_for(
    run_dir: &Path,
    up: &Up,
    what: &str,
    mut condition: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + BOUND;
    let mut last = None;
    loop {
        if let Some(status) = status(run_dir) {
            if condition(&status) {
                return status;
            }
            last = Some(status);
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {BOUND:?} waiting for {what}; last status: {last:#?}\noutput:\n{}",
            up.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn seconds(agent: &serde_json::Value, key: &str) -> f64 {
    agent[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key} in {agent}"))
}

fn pid(status: &serde_json::Value, name: &str) -> u32 {
    agent_of(status, name)["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} has no pid: {status}")) as u32
}

/// `(pid, ppid, pgid)` of every process.
fn processes() -> Vec<(u32, u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(ppid), Some(pgid)) = (fields.get(1), fields.get(2))
            && let (Ok(ppid), Ok(pgid)) = (ppid.parse(), pgid.parse())
        {
            found.push((pid, ppid, pgid));
        }
    }
    found
}

/// `leader` and every descendant of it, with their process groups.
fn tree(leader: u32) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let all = processes();
    let mut pids = BTreeSet::from([leader]);
    loop {
        let before = pids.len();
        for (pid, ppid, _) in &all {
            if pids.contains(ppid) {
                pids.insert(*pid);
            }
        }
        if pids.len() == before {
            break;
        }
    }
    let groups = all
        .iter()
        .filter(|(pid, _, _)| pids.contains(pid))
        .map(|(_, _, pgid)| *pgid)
        .collect();
    (pids, groups)
}

/// Kills whatever of the servers is left when the test ends, pass or fail.
struct Leftovers(BTreeSet<u32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}

fn causes(status: &serde_json::Value, name: &str) -> Vec<(String, String, String)> {
    agent_of(status, name)["degraded_by"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|cause| {
            let text = |key: &str| cause[key].as_str().unwrap_or_default().to_string();
            (text("kind"), text("target"), text("message"))
        })
        .collect()
}

#[test]
fn web_stack_comes_up_in_order_degrades_without_redis_and_leaves_nothing_behind() {
    let missing = missing();
    if !missing.is_empty() {
        common::corpus::skip(
            "web_stack_comes_up_in_order_degrades_without_redis_and_leaves_nothing_behind",
            &format!("the web-stack example needs {}", missing.join(", ")),
        );
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let run_dir = dir.path().join("run");
    let (pg_port, redis_port, backend_port, gateway_port) = (port(), port(), port(), port());
    let mut command = Command::new(common::SUPERVISOR);
    command
        .args(["--log", "info", "up", "--no-watch", "--config"])
        .arg(repo().join("examples/web-stack/stack.yaml"))
        .arg("--run-dir")
        .arg(&run_dir)
        .env("WEB_STACK_PG_PORT", pg_port.to_string())
        .env("WEB_STACK_REDIS_PORT", redis_port.to_string())
        .env("WEB_STACK_BACKEND_PORT", backend_port.to_string())
        .env("WEB_STACK_GATEWAY_PORT", gateway_port.to_string())
        // The SDK of this tree, installed or not.
        .env("PYTHONPATH", repo().join("python"));
    let mut up = Up::spawn(command, &dir.path().join("record.txt"));
    let mut leftovers = Leftovers(BTreeSet::new());

    // 1. Everything ready, each part only after its dependencies.
    let names = ["postgres", "redis", "backend", "gateway"];
    let ready = wait_for(&run_dir, &up, "all four parts ready", |status| {
        common::all_ready(status, &names)
    });
    let part = |name: &str| agent_of(&ready, name);
    for name in names {
        assert_eq!(part(name)["restarts"], 0, "{name} restarted: {ready}");
    }
    let spawned =
        |name: &str| seconds(part(name), "ready_at_s") - seconds(part(name), "time_to_ready_s");
    let ready_at = |name: &str| seconds(part(name), "ready_at_s");
    // Rounding of the two figures: a millisecond of slack.
    assert!(
        spawned("backend") + 0.001 >= ready_at("postgres"),
        "backend before postgres: {ready}"
    );
    assert!(
        spawned("backend") + 0.001 >= ready_at("redis"),
        "backend before redis: {ready}"
    );
    assert!(
        spawned("gateway") + 0.001 >= ready_at("backend"),
        "gateway before backend: {ready}"
    );
    assert!(
        run_dir.join("postgres/PG_VERSION").is_file(),
        "postgres data not under the run dir"
    );
    assert!(
        run_dir.join("redis").is_dir(),
        "redis data not under the run dir"
    );

    // Learn the servers' processes and groups while they run.
    let (postgres_pids, postgres_groups) = tree(pid(&ready, "postgres"));
    assert!(
        postgres_pids.len() > 1,
        "postgres runs with its helper processes: {postgres_pids:?}"
    );
    let redis_pid = pid(&ready, "redis");
    let (redis_pids, redis_groups) = tree(redis_pid);
    leftovers.0.extend(postgres_pids.iter().chain(&redis_pids));

    // Requests through the gateway reach PostgreSQL.
    let (code, body) = http(gateway_port, "POST", "/items", Some(r#"{"name":"first"}"#));
    assert_eq!(code, 201, "{body}");
    let (code, body) = http(gateway_port, "GET", "/items", None);
    assert!(code == 200 && body.contains("first"), "{code} {body}");
    let (code, body) = http(gateway_port, "GET", "/health", None);
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON health");
    assert_eq!(health["backend"]["database"]["ok"], true, "{health}");
    assert_eq!(health["backend"]["cache"]["ok"], true, "{health}");
    let (_, metrics) = http(backend_port, "GET", "/metrics", None);
    assert!(
        metrics.contains(r#"webstack_backend_dependency_up{dependency="postgres"} 1"#),
        "{metrics}"
    );

    // 2. kill -9 of Redis: the backend is degraded, naming it.
    kill(Pid::from_raw(redis_pid as i32), Signal::SIGKILL).expect("kill redis");
    let mut cache_down = false;
    let mut breaker_open = false;
    let degraded = wait_for(
        &run_dir,
        &up,
        "the backend degraded by redis, its breaker open",
        |status| {
            let causes = causes(status, "backend");
            breaker_open |= causes.iter().any(|(kind, target, message)| {
                kind == "breaker" && target == "redis" && message.starts_with("breaker to `redis` ")
            });
            if !cache_down {
                let (code, body) = http(backend_port, "GET", "/health", None);
                cache_down = code == 503 && body.contains(r#""cache":{"ok":false"#);
            }
            causes
                .iter()
                .any(|(kind, target, _)| kind == "dependency" && target == "redis")
                && breaker_open
                && cache_down
        },
    );
    let backend = agent_of(&degraded, "backend");
    assert_eq!(
        (backend["state"].as_str(), backend["health"].as_str()),
        (Some("ready"), Some("degraded"))
    );
    let table = cli(
        &["status", "--run-dir", run_dir.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(
        table.stdout.contains("backend: degraded: ") && table.stdout.contains("`redis`"),
        "{}",
        table.stdout
    );

    // Healthy again once the supervisor has restarted Redis.
    let healthy = wait_for(
        &run_dir,
        &up,
        "the backend healthy after redis's restart",
        |status| {
            let backend = agent_of(status, "backend");
            agent_of(status, "redis")["state"] == "ready"
                && backend["health"] == "ok"
                && backend["breakers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|breaker| breaker["state"] == "closed")
        },
    );
    let new_redis = pid(&healthy, "redis");
    assert_ne!(new_redis, redis_pid, "redis was restarted");
    assert_eq!(
        agent_of(&healthy, "backend")["restarts"],
        0,
        "the backend was not restarted"
    );
    let (new_redis_pids, new_redis_groups) = tree(new_redis);
    leftovers.0.extend(&new_redis_pids);
    let (code, body) = http(backend_port, "GET", "/health", None);
    assert_eq!(code, 200, "{body}");

    // 3. down: no PostgreSQL or Redis process left, by pid or by group.
    let (postgres_pids, _) = {
        // Helpers PostgreSQL started since (autovacuum workers, ...).
        let (now, groups) = tree(pid(&healthy, "postgres"));
        (
            postgres_pids
                .union(&now)
                .copied()
                .collect::<BTreeSet<u32>>(),
            groups,
        )
    };
    leftovers.0.extend(&postgres_pids);
    let down = cli(
        &["down", "--run-dir", run_dir.to_str().unwrap()],
        Duration::from_secs(90),
    );
    assert_eq!(down.code, Some(0), "{down:?}");
    assert!(
        up.wait(Duration::from_secs(90)).success(),
        "{}",
        up.output()
    );
    let pids: BTreeSet<u32> = postgres_pids
        .iter()
        .chain(&redis_pids)
        .chain(&new_redis_pids)
        .copied()
        .collect();
    let groups: BTreeSet<u32> = postgres_groups
        .iter()
        .chain(&redis_groups)
        .chain(&new_redis_groups)
        .copied()
        .collect();
    let left: Vec<u32> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "still alive after down: {left:?}");
    let in_groups: Vec<(u32, u32, u32)> = processes()
        .into_iter()
        .filter(|(pid, _, pgid)| groups.contains(pgid) && alive(*pid))
        .collect();
    assert!(
        in_groups.is_empty(),
        "processes left in the servers' groups: {in_groups:?}"
    );
}
