//! Issue 16 (a hostile agent, a careless operator, another local user),
//! with real processes: an empty command is refused by `check` and reload
//! and never reaches the spawner (item 3); a second `up` on one run
//! directory starts nothing and fails (item 6); any run directory length
//! works (item 10); ordinary signals never kill the supervisor silently
//! (item 8); a stalled console slows neither agents nor the control plane
//! (item 2); daemonizing agents leave nothing behind (item 1).

use crate::common;

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
            text.contains("manifest.yaml:4")
                && (text.contains("agent `a` has an empty command")
                    || text.contains("agent `a`: the program name is empty")),
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
        format!("{}{}", reload.stdout, reload.stderr)
            .contains("agent `empty` has an empty command"),
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

#[test]
fn issue_16_item_6_of_several_up_started_at_once_one_runs_and_the_others_start_nothing() {
    let fixture = Fixture::new();
    let manifest = one_agent(&fixture);
    let mut ups: Vec<common::Up> = (0..4)
        .map(|_| fixture.up(&manifest, &["--no-watch"]))
        .collect();
    wait_for_status(&manifest, "one supervisor ready", BOUND, |status| {
        common::all_ready(status, &["a"])
    });
    // Every other one ends, non-zero, having started nothing.
    let deadline = Instant::now() + BOUND;
    loop {
        let mut running = 0;
        for up in ups.iter_mut() {
            running += usize::from(up.child.try_wait().expect("try_wait").is_none());
        }
        if running == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{running} supervisors still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for up in ups.iter_mut() {
        if let Some(status) = up.child.try_wait().expect("try_wait") {
            assert_ne!(status.code(), Some(0), "{}", up.output());
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fixture.records_of("start", "a").len(),
        1,
        "{:?}",
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

// ---- item 2 ----

/// A `supervisor up` whose stdout is a pipe this test holds and does not
/// read (a paused console); stderr is collected. Killed on drop.
struct StalledUp {
    child: std::process::Child,
    console: Option<std::process::ChildStdout>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// With a paused terminal: stderr too, held open and never read.
    _stderr: Option<std::process::ChildStderr>,
}

impl StalledUp {
    fn start(fixture: &Fixture, manifest: &Path) -> StalledUp {
        StalledUp::start_with(fixture, manifest, &[], false)
    }

    /// With `paused_terminal`, stderr is not read either.
    fn start_with(
        fixture: &Fixture,
        manifest: &Path,
        extra: &[&str],
        paused_terminal: bool,
    ) -> StalledUp {
        use std::io::BufRead;
        let mut child = std::process::Command::new(common::SUPERVISOR)
            .args(extra)
            .args(["up", "--no-watch", "--config", path_str(manifest)])
            .env("NO_COLOR", "1")
            .env("FAKE_AGENT_RECORD", &fixture.record)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start supervisor");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stream = child.stderr.take().expect("stderr");
        if paused_terminal {
            return StalledUp {
                console: child.stdout.take(),
                child,
                stderr,
                _stderr: Some(stream),
            };
        }
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                let mut text = sink.lock().expect("stderr lock");
                text.push_str(&line);
                text.push('\n');
            }
        });
        StalledUp {
            console: child.stdout.take(),
            child,
            stderr,
            _stderr: None,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }
}

impl Drop for StalledUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent that writes `lines` lines as fast as it can, then records how
/// long that took (`<start ns> <end ns>`) in `times` and sleeps.
fn writer_agent(fixture: &Fixture, lines: u64) -> (std::path::PathBuf, std::path::PathBuf) {
    let times = fixture.path("times");
    let pid = fixture.path("writer.pid");
    let script = format!(
        "echo $$$$ > {pid}; start=$(date +%s%N); \
         yes 'agent output line 0123456789 abcdefghijklmnopqrstuvwxyz' | head -n {lines}; \
         end=$(date +%s%N); echo \"$start $end\" > {times}.tmp; mv {times}.tmp {times}; \
         exec sleep 300",
        pid = pid.display(),
        times = times.display()
    );
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  writer:
    command: {script:?}
    shell: true
    readiness: {{ start_period: 100ms }}
"#
    ));
    (manifest, times)
}

/// Seconds the writer agent took, once it is done.
fn write_seconds(times: &Path) -> f64 {
    wait_until("the writer agent done", BOUND, || times.exists());
    let text = std::fs::read_to_string(times).expect("times");
    let mut parts = text
        .split_whitespace()
        .map(|part| part.parse::<u128>().expect("ns"));
    let (start, end) = (parts.next().expect("start"), parts.next().expect("end"));
    (end - start) as f64 / 1e9
}

#[test]
fn issue_16_item_2_a_stalled_console_blocks_neither_agents_nor_the_control_plane() {
    let fixture = Fixture::new();
    const LINES: u64 = 200_000;
    let (manifest, times) = writer_agent(&fixture, LINES);
    let mut up = StalledUp::start(&fixture, &manifest);
    let _writer = KillOnDrop(Vec::new());
    // Nobody reads the console: the agent still writes everything.
    let seconds = write_seconds(&times);
    let writer = std::fs::read_to_string(fixture.path("writer.pid"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .expect("writer pid");
    let _writer = KillOnDrop(vec![writer]);
    let megabytes = (LINES * 58) as f64 / 1e6;
    println!(
        "stalled console: the agent wrote {megabytes:.1} MB in {seconds:.2} s ({:.1} MB/s)",
        megabytes / seconds
    );
    // The control plane answers at once.
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let status = cli(&["status", "--config", path_str(&manifest)], BOUND);
        assert_eq!(status.code, Some(0), "{status:?}");
        slowest = slowest.max(status.took);
    }
    println!("stalled console: slowest of 5 `status` calls took {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "status took {slowest:?}");
    // The log files (rotated at 10 MB) are complete.
    let logs = fixture.path(".supervisor/logs");
    wait_until("every line in the log files", BOUND, || {
        let lines: usize = ["writer.log", "writer.log.1", "writer.log.2"]
            .iter()
            .map(|name| {
                std::fs::read_to_string(logs.join(name))
                    .map(|text| {
                        text.lines()
                            .filter(|line| line.contains("agent output line"))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum();
        lines as u64 == LINES
    });
    let status = common::status_json(&manifest).expect("status");
    assert!(
        status["console_dropped_lines"].as_u64().unwrap_or(0) > 0,
        "dropped lines are counted: {status}"
    );
    // The console catches up and says what it left off.
    let mut console = up.console.take().expect("console pipe");
    let started = Instant::now();
    let (found, reader) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(&mut console)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("lines dropped from the console; logs are complete") {
                let _ = found.send(line);
            }
        }
    });
    let notice = reader
        .recv_timeout(BOUND)
        .expect("the dropped-lines notice");
    assert!(notice.starts_with("[supervisor: "), "{notice}");
    assert!(started.elapsed() < BOUND);
    // And SIGTERM stops it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.child.id() as i32),
        Signal::SIGTERM,
    )
    .expect("signal");
    wait_until("the supervisor exit", BOUND, || {
        up.child.try_wait().expect("try_wait").is_some()
    });
    assert!(!up.stderr().contains("panicked"), "{}", up.stderr());
}

#[test]
fn issue_16_item_2_a_paused_terminal_stalls_neither_the_control_plane_nor_sigterm() {
    let fixture = Fixture::new();
    let (manifest, times) = writer_agent(&fixture, 100_000);
    // Trace logging fills the unread stderr pipe within moments.
    let mut up = StalledUp::start_with(&fixture, &manifest, &["--log", "trace"], true);
    write_seconds(&times);
    let writer = std::fs::read_to_string(fixture.path("writer.pid"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .expect("writer pid");
    let _writer = KillOnDrop(vec![writer]);
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let status = cli(&["status", "--config", path_str(&manifest)], BOUND);
        assert_eq!(status.code, Some(0), "{status:?}");
        slowest = slowest.max(status.took);
    }
    println!("paused terminal: slowest of 5 `status` calls took {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "status took {slowest:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.child.id() as i32),
        Signal::SIGTERM,
    )
    .expect("signal");
    wait_until("the supervisor exit, terminal still paused", BOUND, || {
        up.child.try_wait().expect("try_wait").is_some()
    });
    assert!(!alive(writer), "the agent was stopped");
}

#[test]
fn issue_16_item_2_a_stalled_console_ends_on_sigterm_while_still_stalled() {
    let fixture = Fixture::new();
    let (manifest, times) = writer_agent(&fixture, 100_000);
    let mut up = StalledUp::start(&fixture, &manifest);
    write_seconds(&times);
    let writer = std::fs::read_to_string(fixture.path("writer.pid"))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .expect("writer pid");
    let _writer = KillOnDrop(vec![writer]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.child.id() as i32),
        Signal::SIGTERM,
    )
    .expect("signal");
    wait_until("the supervisor exit, console still stalled", BOUND, || {
        up.child.try_wait().expect("try_wait").is_some()
    });
    assert!(!alive(writer), "the agent was stopped");
}

// ---- item 1 ----

/// How the test ends the supervisor.
#[derive(Debug, Clone, Copy)]
enum End {
    Down,
    Sigterm,
    Sigkill,
}

/// Three daemonizing agents (fork-and-exit into a new session, `setpgid`,
/// and one that daemonizes and exits at once, so it is restarted over and
/// over); every daemon appends its pid to `daemons`. Runs them with
/// `containment` (`cgroup` or `marker`), ends the supervisor with `end`
/// and returns how many daemons are left running.
fn daemons_left(containment: &str, end: End) -> usize {
    let fixture = Fixture::new();
    let daemons = fixture.path("daemons");
    let daemon = format!("sh -c 'echo $$ >> {}; exec sleep 300'", daemons.display());
    let scripts = [
        ("forker", format!("setsid -f {daemon}\nexec sleep 300\n")),
        (
            "grouper",
            format!(
                "perl -e 'setpgrp(0,0); exec \"sh\", \"-c\", \"echo \\$\\$ >> {}; exec sleep 300\"' &\nexec sleep 300\n",
                daemons.display()
            ),
        ),
        (
            "flapper",
            format!("setsid -f {daemon}\nsleep 0.3\nexit 0\n"),
        ),
    ];
    let mut manifest = String::from("version: 1\nagents:\n");
    for (name, script) in &scripts {
        let path = fixture.path(&format!("{name}.sh"));
        std::fs::write(&path, script).expect("write script");
        manifest.push_str(&format!(
            "  {name}:\n    command: [\"sh\", \"{}\"]\n    readiness: {{ start_period: 100ms }}\n    restart: {{ policy: always, backoff: {{ initial: 100ms, max: 200ms }}, max_restarts: 1000, within: 60s }}\n",
            path.display()
        ));
    }
    let manifest = fixture.manifest(&manifest);
    let pids = || -> Vec<u32> {
        std::fs::read_to_string(&daemons)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    // Whatever happens, nothing this test started outlives it.
    struct KillAll<F: Fn() -> Vec<u32>>(F);
    impl<F: Fn() -> Vec<u32>> Drop for KillAll<F> {
        fn drop(&mut self) {
            drop(KillOnDrop((self.0)()));
        }
    }
    let _cleanup = KillAll(pids);
    let log = std::fs::File::create(fixture.path("up.out")).expect("up.out");
    let up = std::process::Command::new(common::SUPERVISOR)
        .args([
            "up",
            "--no-watch",
            "--no-console",
            "--config",
            path_str(&manifest),
        ])
        .env("SUPERVISOR_CONTAINMENT", containment)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("start supervisor");
    struct KillChild(std::process::Child);
    impl Drop for KillChild {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let output = || std::fs::read_to_string(fixture.path("up.out")).unwrap_or_default();
    // Daemons of the first two agents and a few runs of the flapper.
    wait_until("daemons started by several flapper runs", BOUND, || {
        pids().len() >= 5
    });
    let live = |pids: Vec<u32>| pids.into_iter().filter(|pid| alive(*pid)).count();
    // The flapper's earlier daemons died with their run: at most one per agent.
    assert!(
        live(pids()) <= 3,
        "{} daemons running while 3 agents run; output:\n{}",
        live(pids()),
        output()
    );
    if containment == "cgroup" {
        let in_cgroup = pids().into_iter().filter(|pid| alive(*pid)).all(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|text| text.contains("/supervisor-"))
        });
        assert!(in_cgroup, "the daemons are in the agents' cgroups");
    }
    // `status` names the processes that left their group.
    let status = wait_for_status(&manifest, "escaped pids in status", BOUND, |status| {
        !common::agent_of(status, "forker")["escaped_pids"]
            .as_array()
            .is_none_or(|pids| pids.is_empty())
    });
    assert!(
        !common::agent_of(&status, "grouper")["escaped_pids"]
            .as_array()
            .is_none_or(|pids| pids.is_empty()),
        "{status}"
    );
    let pid = up.id();
    let mut up = KillChild(up);
    match end {
        End::Down => {
            let down = cli(&["down", "--config", path_str(&manifest)], BOUND);
            assert_eq!(down.code, Some(0), "{down:?}");
        }
        End::Sigterm => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM)
                .expect("signal");
        }
        End::Sigkill => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL)
                .expect("signal");
        }
    }
    wait_until("the supervisor exit", BOUND, || {
        up.0.try_wait().expect("try_wait").is_some()
    });
    // The keeper acts once the supervisor is gone; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while live(pids()) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = live(pids());
    println!(
        "containment {containment}, {end:?}: {} daemons started, {left} left running",
        pids().len()
    );
    left
}

#[test]
fn issue_16_item_1_no_daemon_survives_down_with_a_cgroup() {
    assert_eq!(daemons_left("cgroup", End::Down), 0);
}

#[test]
fn issue_16_item_1_no_daemon_survives_sigterm_with_a_cgroup() {
    assert_eq!(daemons_left("cgroup", End::Sigterm), 0);
}

#[test]
fn issue_16_item_1_no_daemon_survives_sigkill_with_a_cgroup() {
    assert_eq!(daemons_left("cgroup", End::Sigkill), 0);
}

#[test]
fn issue_16_item_1_no_daemon_survives_down_with_the_marker() {
    assert_eq!(daemons_left("marker", End::Down), 0);
}

#[test]
fn issue_16_item_1_no_daemon_survives_sigterm_with_the_marker() {
    assert_eq!(daemons_left("marker", End::Sigterm), 0);
}

#[test]
fn issue_16_item_1_no_daemon_survives_sigkill_with_the_marker() {
    assert_eq!(daemons_left("marker", End::Sigkill), 0);
}
