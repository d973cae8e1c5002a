//! The control plane with a real supervisor: start/stop/restart respecting
//! dependencies, `down`, commands without a supervisor (exit 3, fast), a
//! second `up` refused, the socket's mode, and hostile clients (malformed,
//! huge, silent) that must not break the server (issue 5).

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Fixture, agent_of, all_ready, cli, wait_for_status};

const BOUND: Duration = Duration::from_secs(30);

const THREE: &str = r#"
version: 1
agents:
  db:
    command: ["FAKE"]
    readiness: { start_period: 200ms }
    stop: { grace: 2s }
  api:
    command: ["FAKE"]
    dependencies: [db]
    readiness: { start_period: 200ms }
    stop: { grace: 2s }
  free:
    command: ["FAKE"]
    readiness: { start_period: 200ms }
    stop: { grace: 2s }
"#;

fn path(manifest: &std::path::Path) -> &str {
    manifest.to_str().expect("utf-8 path")
}

#[test]
fn stop_start_and_restart_respect_dependencies() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(THREE);
    let _up = fixture.up(&manifest, &[]);
    let status = wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "free"])
    });
    let free_pid = agent_of(&status, "free")["pid"].as_u64();

    // Stopping db stops api first, and both stay stopped.
    let output = cli(&["stop", "db", "--config", path(&manifest)], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let stop_api = fixture.first("stop", "api").nanos;
    let stop_db = fixture.first("stop", "db").nanos;
    assert!(stop_api < stop_db, "api must stop before db");
    let status = common::status_json(&manifest).expect("status");
    for name in ["db", "api"] {
        assert_eq!(agent_of(&status, name)["state"], "stopped");
        assert_eq!(agent_of(&status, name)["held"], true);
    }
    assert_eq!(agent_of(&status, "free")["pid"].as_u64(), free_pid);

    // Starting api starts db first and waits until api is ready.
    let output = cli(&["start", "api", "--config", path(&manifest)], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let status = common::status_json(&manifest).expect("status");
    assert!(all_ready(&status, &["db", "api"]), "{status}");
    let starts_db = fixture.records_of("start", "db");
    let starts_api = fixture.records_of("start", "api");
    assert_eq!(starts_db.len(), 2);
    let ready_db = fixture.records_of("ready", "db")[1].nanos;
    assert!(
        starts_api[1].nanos >= ready_db,
        "api started before db was ready"
    );

    // Restarting db alone leaves api running; with dependents it does not.
    let api_pid = agent_of(&status, "api")["pid"].as_u64();
    let db_pid = agent_of(&status, "db")["pid"].as_u64();
    let output = cli(&["restart", "db", "--config", path(&manifest)], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let status = common::status_json(&manifest).expect("status");
    assert_ne!(agent_of(&status, "db")["pid"].as_u64(), db_pid);
    assert_eq!(agent_of(&status, "api")["pid"].as_u64(), api_pid);
    assert_eq!(agent_of(&status, "db")["restarts_by_cause"]["operator"], 1);
    let output = cli(
        &[
            "restart",
            "db",
            "--with-dependents",
            "--config",
            path(&manifest),
        ],
        BOUND,
    );
    assert_eq!(output.code, Some(0), "{output:?}");
    let status = wait_for_status(&manifest, "api back", BOUND, |status| {
        all_ready(status, &["db", "api"])
    });
    assert_ne!(agent_of(&status, "api")["pid"].as_u64(), api_pid);
    assert_eq!(agent_of(&status, "free")["pid"].as_u64(), free_pid);

    // Unknown agents are refused with a message.
    let output = cli(&["stop", "nope", "--config", path(&manifest)], BOUND);
    assert_eq!(output.code, Some(1));
    assert!(
        output.stderr.contains("unknown agent(s): nope"),
        "{output:?}"
    );
}

#[test]
fn down_stops_in_reverse_order_and_the_supervisor_exits() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(THREE);
    let mut up = fixture.up(&manifest, &[]);
    wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "free"])
    });
    let output = cli(&["down", "--config", path(&manifest)], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let status = up.wait(BOUND);
    assert!(status.success(), "{status:?}\n{}", up.output());
    assert!(fixture.first("stop", "api").nanos < fixture.first("stop", "db").nanos);
    let run_dir = fixture.path(".supervisor");
    assert!(!run_dir.join("control.sock").exists(), "socket removed");
    // Now nothing runs there.
    let output = cli(&["status", "--run-dir", run_dir.to_str().unwrap()], BOUND);
    assert_eq!(output.code, Some(3), "{output:?}");
}

#[test]
fn every_command_without_a_supervisor_exits_3_quickly() {
    let fixture = Fixture::new();
    let run_dir = fixture.path("nothing-here");
    let dir = run_dir.to_str().unwrap();
    for args in [
        vec!["status", "--run-dir", dir],
        vec!["status", "--json", "--run-dir", dir],
        vec!["start", "a", "--run-dir", dir],
        vec!["stop", "a", "--run-dir", dir],
        vec!["restart", "a", "--run-dir", dir],
        vec!["logs", "a", "--run-dir", dir],
        vec!["down", "--run-dir", dir],
        vec!["reload", "--run-dir", dir],
    ] {
        let output = cli(&args, BOUND);
        assert_eq!(output.code, Some(3), "{args:?}: {output:?}");
        assert!(
            output
                .stderr
                .contains("no supervisor is running for run directory"),
            "{args:?}: {output:?}"
        );
        assert!(
            output.took < Duration::from_secs(2),
            "{args:?} took {:?}",
            output.took
        );
    }
    // A stale socket file (a crashed supervisor) is the same.
    std::fs::create_dir_all(&run_dir).unwrap();
    let stale = std::os::unix::net::UnixListener::bind(run_dir.join("control.sock")).unwrap();
    drop(stale);
    let output = cli(&["status", "--run-dir", dir], BOUND);
    assert_eq!(output.code, Some(3), "{output:?}");
}

#[test]
fn a_second_up_on_the_same_run_dir_is_refused_and_the_socket_is_private() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(THREE);
    let up = fixture.up(&manifest, &[]);
    wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "free"])
    });
    let run_dir = fixture.path(".supervisor");
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&run_dir.join("control.sock")), 0o600);
    assert_eq!(mode(&run_dir), 0o700);
    let pid: u32 = std::fs::read_to_string(run_dir.join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, up.pid());
    let output = cli(&["up", "--config", path(&manifest), "--no-console"], BOUND);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output.stderr.contains("already running") && output.stderr.contains(&pid.to_string()),
        "{output:?}"
    );
    // The first one is untouched.
    let status = common::status_json(&manifest).expect("still answering");
    assert!(all_ready(&status, &["db", "api", "free"]));
}

#[test]
fn malformed_huge_and_silent_clients_do_not_break_the_server() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(THREE);
    let _up = fixture.up(&manifest, &[]);
    wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "free"])
    });
    let socket = fixture.path(".supervisor/control.sock");
    let connect = || {
        let stream = UnixStream::connect(&socket).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    };
    // Silent clients: they hold nothing; others are served meanwhile.
    let silent: Vec<UnixStream> = (0..5).map(|_| connect()).collect();
    // Malformed: an error answer, and the connection stays usable.
    let mut stream = connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut answer = String::new();
    stream.write_all(b"this is not json\n").unwrap();
    reader.read_line(&mut answer).unwrap();
    assert!(
        answer.contains(r#""ok":false"#) && answer.contains("malformed"),
        "{answer}"
    );
    answer.clear();
    stream
        .write_all(b"{\"command\":\"launch_missiles\"}\n")
        .unwrap();
    reader.read_line(&mut answer).unwrap();
    assert!(answer.contains(r#""ok":false"#), "{answer}");
    answer.clear();
    stream.write_all(b"{\"command\":\"ping\"}\n").unwrap();
    reader.read_line(&mut answer).unwrap();
    assert!(answer.contains(r#""ok":true"#), "{answer}");
    // Huge: refused and closed, without reading it all into memory.
    let mut huge = connect();
    let blob = vec![b'x'; 1024 * 1024];
    let _ = huge.write_all(&blob); // the server may close before all is written
    let mut rest = String::new();
    let _ = huge.read_to_string(&mut rest);
    assert!(rest.contains("larger than"), "{rest:?}");
    // The server still answers normal clients promptly.
    let output = cli(&["status", "--config", path(&manifest)], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output.took < Duration::from_secs(2),
        "took {:?}",
        output.took
    );
    // The silent ones were closed after the idle timeout.
    for mut stream in silent {
        let mut buffer = [0u8; 16];
        let read = stream.read(&mut buffer).expect("closed, not timed out");
        assert_eq!(read, 0, "closed by the server");
    }
}

#[test]
fn logs_prints_the_tail_and_follows() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(THREE);
    let _up = fixture.up(&manifest, &[]);
    wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "free"])
    });
    let output = cli(
        &["logs", "db", "-n", "1", "--config", path(&manifest)],
        BOUND,
    );
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(output.stdout.lines().count(), 1, "{output:?}");
    assert!(output.stdout.contains("fake-agent db ready"), "{output:?}");
    let output = cli(&["logs", "nope", "--config", path(&manifest)], BOUND);
    assert_eq!(output.code, Some(2), "{output:?}");
    // -f: a restart's new lines appear in the follower's output.
    let mut follower = std::process::Command::new(common::SUPERVISOR)
        .args(["logs", "db", "-f", "--config", path(&manifest)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    let _kill = common::KillOnDrop(vec![follower.id()]);
    let stdout = follower.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    common::wait_until("the existing lines", BOUND, || {
        !lines.lock().unwrap().is_empty()
    });
    let output = cli(&["restart", "db", "--config", path(&manifest)], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    common::wait_until("the restart's lines followed", BOUND, || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains("fake-agent db started"))
            .count()
            >= 2
    });
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn up_detach_runs_in_the_background_until_down() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(THREE);
    let output = cli(&["up", "-d", "--config", path(&manifest)], BOUND);
    let run_dir = fixture.path(".supervisor");
    let pid: Option<u32> = std::fs::read_to_string(run_dir.join("supervisor.pid"))
        .ok()
        .and_then(|text| text.trim().parse().ok());
    let _kill = common::KillOnDrop(pid.into_iter().collect());
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output.stdout.contains("running in the background"),
        "{output:?}"
    );
    let pid = pid.expect("a pid file");
    wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "free"])
    });
    assert!(run_dir.join("supervisor.log").exists());
    let output = cli(&["down", "--config", path(&manifest)], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    common::wait_until("the daemon to exit", BOUND, || !common::alive(pid));
    for record in fixture.records_of("start", "db") {
        assert!(!common::alive(record.pid));
    }
}
