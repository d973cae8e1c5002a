//! Stopping, with real processes: SIGINT stops agents in reverse dependency
//! order and exits 0; an agent ignoring SIGTERM is killed after its grace; a
//! second SIGINT skips the grace; nothing survives a SIGKILL of the
//! supervisor; grandchildren die with their agent.

use crate::common;

use std::time::{Duration, Instant};

use common::{Fixture, KillOnDrop, alive, port, wait_until};
use nix::sys::signal::Signal;

const BOUND: Duration = Duration::from_secs(30);

fn chain(fixture: &Fixture, db_flags: &str, grace: &str) -> std::path::PathBuf {
    let db = port();
    fixture.manifest(&format!(
        r#"
version: 1
agents:
  db:
    command: ["FAKE", "--ready-after", "100ms" {db_flags}]
    port: {db}
    readiness: {{ tcp: {db}, timeout: 20s, interval: 20ms }}
    stop: {{ signal: SIGTERM, grace: {grace} }}
  api:
    command: ["FAKE", "--stop-delay", "200ms"]
    dependencies: [db]
    readiness: {{ start_period: 50ms }}
  ui:
    command: ["FAKE"]
    dependencies: [api]
    readiness: {{ start_period: 50ms }}
  free:
    command: ["FAKE"]
    readiness: {{ start_period: 50ms }}
"#
    ))
}

#[test]
fn sigint_stops_dependents_first_and_exits_0() {
    let fixture = Fixture::new();
    let manifest = chain(&fixture, "", "10s");
    let mut up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready", BOUND);
    up.signal(Signal::SIGINT);
    let status = up.wait(BOUND);
    assert_eq!(status.code(), Some(0), "output:\n{}", up.output());
    let stop = |name| fixture.first("stop", name).nanos;
    assert!(stop("ui") < stop("api"), "ui stops before api");
    // api takes 200 ms to stop; db is asked only after api exited.
    assert!(
        stop("api") + 200_000_000 <= stop("db"),
        "db stops after api exited"
    );
    for record in fixture
        .records_of("start", "db")
        .iter()
        .chain(&fixture.records_of("start", "free"))
    {
        assert!(!alive(record.pid), "{} still alive", record.name);
    }
}

#[test]
fn an_agent_ignoring_sigterm_is_killed_after_its_grace() {
    let fixture = Fixture::new();
    let manifest = chain(&fixture, r#", "--ignore-sigterm""#, "1s");
    let mut up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready", BOUND);
    let db = fixture.first("start", "db").pid;
    let asked = Instant::now();
    up.signal(Signal::SIGTERM);
    let status = up.wait(BOUND);
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "output:\n{}", up.output());
    assert!(
        took >= Duration::from_millis(1000),
        "grace not honoured: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!alive(db));
    assert!(
        up.output().contains("did not stop within its grace"),
        "{}",
        up.output()
    );
}

#[test]
fn a_second_sigint_skips_the_grace() {
    let fixture = Fixture::new();
    let manifest = chain(&fixture, r#", "--ignore-sigterm""#, "60s");
    let mut up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready", BOUND);
    let asked = Instant::now();
    up.signal(Signal::SIGINT);
    wait_until("api to stop", BOUND, || {
        !fixture.records_of("stop", "api").is_empty()
    });
    // api takes 200 ms to exit; then db gets its SIGTERM (which it ignores).
    std::thread::sleep(Duration::from_millis(500));
    up.signal(Signal::SIGINT);
    let status = up.wait(BOUND);
    assert_eq!(status.code(), Some(0), "output:\n{}", up.output());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the grace of 60s was not skipped"
    );
    assert!(!alive(fixture.first("start", "db").pid));
}

#[test]
fn no_agent_survives_a_sigkill_of_the_supervisor() {
    let fixture = Fixture::new();
    let manifest = chain(&fixture, r#", "--ignore-sigterm""#, "10s");
    let mut up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready", BOUND);
    let pids: Vec<u32> = fixture
        .records()
        .iter()
        .filter(|record| record.kind == "start")
        .map(|record| record.pid)
        .collect();
    assert!(pids.len() >= 4);
    up.signal(Signal::SIGKILL);
    up.wait(BOUND);
    wait_until(
        "every agent to die with the supervisor",
        Duration::from_secs(5),
        || pids.iter().all(|pid| !alive(*pid)),
    );
}

#[test]
fn grandchildren_die_with_their_agent_on_stop_and_on_crash() {
    let fixture = Fixture::new();
    let (stopped_file, crashed_file) = (fixture.path("stopped.pid"), fixture.path("crashed.pid"));
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  parent:
    command: ["FAKE", "--fork-grandchild", "--grandchild-pid-file", "{stopped}"]
    readiness: {{ start_period: 50ms }}
  crasher:
    command: ["FAKE", "--fork-grandchild", "--grandchild-pid-file", "{crashed}", "--crash-after", "500ms"]
    readiness: {{ start_period: 50ms }}
    restart: never
    required: false
"#,
        stopped = stopped_file.display(),
        crashed = crashed_file.display()
    ));
    let mut up = fixture.up(&manifest, &[]);
    let read_pid = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
    };
    wait_until("both grandchildren", BOUND, || {
        read_pid(&stopped_file).is_some() && read_pid(&crashed_file).is_some()
    });
    let (stopped, crashed) = (
        read_pid(&stopped_file).unwrap(),
        read_pid(&crashed_file).unwrap(),
    );
    let _cleanup = KillOnDrop(vec![stopped, crashed]);
    wait_until("crasher to crash", BOUND, || {
        !fixture.records_of("crash", "crasher").is_empty()
    });
    wait_until(
        "the crashed agent's grandchild to die",
        Duration::from_secs(5),
        || !alive(crashed),
    );
    assert!(
        alive(stopped),
        "the running agent's grandchild is still there"
    );
    up.signal(Signal::SIGINT);
    assert_eq!(up.wait(BOUND).code(), Some(0), "output:\n{}", up.output());
    wait_until(
        "the stopped agent's grandchild to die",
        Duration::from_secs(5),
        || !alive(stopped),
    );
}

/// PDEATHSIG reaches only an agent itself; its own children are killed by
/// the keeper process when the supervisor dies by SIGKILL (within 1 s).
#[test]
fn grandchildren_die_within_a_second_of_a_sigkill_of_the_supervisor() {
    let fixture = Fixture::new();
    let pid_file = fixture.path("grandchild.pid");
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  parent:
    command: ["FAKE", "--fork-grandchild", "--grandchild-pid-file", "{}"]
    readiness: {{ start_period: 50ms }}
"#,
        pid_file.display()
    ));
    let mut up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready", BOUND);
    let mut grandchild = None;
    wait_until("the grandchild to write its pid", BOUND, || {
        grandchild = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        grandchild.is_some()
    });
    let grandchild = grandchild.expect("waited for it");
    assert!(alive(grandchild));
    up.signal(Signal::SIGKILL);
    up.wait(BOUND);
    let killed_at = std::time::Instant::now();
    wait_until(
        "the grandchild to die with the supervisor",
        Duration::from_secs(5),
        || !alive(grandchild),
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(1),
        "took {:?}",
        killed_at.elapsed()
    );
}

/// A SIGSTOPped agent gets SIGCONT with its stop signal, so it stops at once
/// instead of waiting for the SIGKILL at the end of its grace.
#[test]
fn a_stopped_agent_is_continued_so_it_can_stop_gracefully() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  frozen:
    command: ["FAKE"]
    readiness: { start_period: 50ms }
    stop: { signal: SIGTERM, grace: 20s }
"#,
    );
    let mut up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready", BOUND);
    let pid = fixture.first("start", "frozen").pid;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGSTOP)
        .expect("SIGSTOP");
    let asked = std::time::Instant::now();
    up.signal(Signal::SIGTERM);
    let status = up.wait(BOUND);
    assert!(status.success(), "{status:?}\n{}", up.output());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "took {:?}: waited for the grace",
        asked.elapsed()
    );
    assert!(
        !fixture.records_of("stop", "frozen").is_empty(),
        "it stopped by itself on SIGTERM: {:?}",
        fixture.records()
    );
}
