//! `supervisor top` in a real terminal: tmux runs it against a running
//! `supervisor up` with fake agents; `send-keys` types, `capture-pane` reads
//! the screen. Every agent shows with its true state, `r` `y` restarts the
//! selected agent (its pid and restart count change in `status --json`),
//! the filter narrows the table, a resize redraws it, and `q`, Ctrl-C and
//! SIGTERM all give the terminal back (main screen, cooked mode); a
//! terminal that goes away ends it.
//!
//! Skipped, visibly, where tmux is not installed. Each test runs its own
//! tmux server (`-S`: a socket in the test's temporary directory, so no
//! other server is ever touched and no socket file is left) and kills it
//! when done; the supervisor and its agents are killed by pid
//! (`common::Up`).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::corpus::skip;
use common::{Fixture, SUPERVISOR, agent_of, alive, all_ready, cli, wait_for_status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BOUND: Duration = Duration::from_secs(30);

const MANIFEST: &str = r#"
version: 1
agents:
  alpha:
    command: ["FAKE"]
    readiness: { start_period: 100ms }
  beta:
    command: ["FAKE"]
    dependencies: [alpha]
    readiness: { start_period: 100ms }
  gamma:
    command: ["FAKE", "--crash-after", "50ms"]
    required: false
    restart: { policy: never }
"#;

/// A tmux server of this test alone, killed (by its socket) when dropped.
struct Tmux {
    socket: PathBuf,
    config: PathBuf,
}

impl Tmux {
    /// `None` (after a visible skip) when tmux is missing.
    fn new(test: &str, dir: &Path) -> Option<Tmux> {
        let found = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            skip(test, "tmux is not installed (apt-get install tmux)");
            return None;
        }
        // No user configuration.
        let config = dir.join("tmux.conf");
        std::fs::write(&config, "").expect("write tmux.conf");
        Some(Tmux {
            socket: dir.join(format!("tmux-{}.sock", common::now_nanos())),
            config,
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(
            output.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// A 160x50 session running `script` under `sh`.
    fn start(&self, script: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "50",
            "-s",
            "top",
            "sh",
            "-c",
            script,
        ]);
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    /// Captures the pane until `condition` holds; panics with the last
    /// screen after [`BOUND`].
    fn wait_screen(&self, what: &str, condition: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let screen = self.screen();
            if condition(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {BOUND:?} waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The rows of the agent table on a screen: the lines between the header
/// (`AGENT ... STATE`) and the table's bottom border.
fn table_rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .skip_while(|line| !(line.contains("AGENT") && line.contains("STATE")))
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with('└'))
        .filter(|line| !line.trim_matches(['│', ' ']).is_empty())
        .map(str::to_string)
        .collect()
}

/// The table row of `agent`, if shown.
fn row_of(screen: &str, agent: &str) -> Option<String> {
    table_rows(screen).into_iter().find(|row| {
        row.trim_start_matches(['│', '>', ' '])
            .split_whitespace()
            .next()
            == Some(agent)
    })
}

/// `sh` script: print a marker, run `top` (its pid into `pid_file`), then
/// record its exit code and the terminal's mode, and stay (a pane that ends
/// goes away, or with `remain-on-exit` scrolls its screen) until the tmux
/// server is killed.
fn script(manifest: &Path, pid_file: &Path, stty_file: &Path) -> String {
    format!(
        "printf 'before-top\\n'; sh -c 'echo $$ > {pid}; exec {bin} top --config {manifest} --interval 0.3'; \
         echo top-exit=$?; stty -a > {stty}.tmp; mv {stty}.tmp {stty}; exec sleep 300",
        pid = pid_file.display(),
        bin = SUPERVISOR,
        manifest = manifest.display(),
        stty = stty_file.display(),
    )
}

/// Waits for `top` to have ended and checks that it left the terminal as
/// it found it: cooked mode with echo, and the main screen back (the
/// marker printed before it, the exit line after, no table).
fn assert_terminal_restored(tmux: &Tmux, stty_file: &Path) {
    let deadline = Instant::now() + BOUND;
    while !stty_file.exists() {
        assert!(
            Instant::now() < deadline,
            "timed out after {BOUND:?} waiting for top to end and stty to run; screen:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stty = std::fs::read_to_string(stty_file).expect("read stty output");
    let flags: Vec<&str> = stty.split([' ', ';', '\n']).collect();
    for flag in ["icanon", "echo", "isig", "icrnl", "opost"] {
        assert!(flags.contains(&flag), "{flag} not restored: {stty}");
    }
    let screen = tmux.wait_screen("the main screen back", |screen| {
        screen.contains("top-exit=")
    });
    assert!(screen.contains("before-top"), "{screen}");
    assert!(screen.contains("top-exit=0"), "{screen}");
    assert!(
        !screen.contains("LAST REASON"),
        "table left on the screen:\n{screen}"
    );
}

fn read_pid(path: &Path) -> u32 {
    common::wait_until("top's pid file", BOUND, || {
        std::fs::read_to_string(path).is_ok_and(|text| text.trim().parse::<u32>().is_ok())
    });
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

#[test]
fn top_shows_the_agents_restarts_the_selected_one_and_filters() {
    let fixture = Fixture::new();
    let Some(tmux) = Tmux::new(
        "top_shows_the_agents_restarts_the_selected_one_and_filters",
        fixture.dir.path(),
    ) else {
        return;
    };
    let manifest = fixture.manifest(MANIFEST);
    let up = fixture.up(&manifest, &[]);
    let before = wait_for_status(
        &manifest,
        "alpha, beta ready and gamma failed",
        BOUND,
        |status| {
            all_ready(status, &["alpha", "beta"]) && agent_of(status, "gamma")["state"] == "failed"
        },
    );
    let pid_file = fixture.path("top.pid");
    let stty_file = fixture.path("stty.txt");
    tmux.start(&script(&manifest, &pid_file, &stty_file));
    let top_pid = read_pid(&pid_file);

    // Every agent with its true state and pid; the host name on screen.
    let host = nix::unistd::gethostname().expect("host name");
    let host = host.to_string_lossy();
    let screen = tmux.wait_screen("every agent in the table", |screen| {
        ["alpha", "beta", "gamma"]
            .iter()
            .all(|name| row_of(screen, name).is_some())
    });
    assert!(screen.contains(&format!("host {host}")), "{screen}");
    for name in ["alpha", "beta", "gamma"] {
        let agent = agent_of(&before, name);
        let row = row_of(&screen, name).unwrap();
        let state = agent["state"].as_str().unwrap();
        assert!(row.contains(state), "{name} should be {state}: {row}");
        if let Some(pid) = agent["pid"].as_u64() {
            assert!(row.contains(&pid.to_string()), "{name} pid {pid}: {row}");
        }
    }
    assert!(
        row_of(&screen, "gamma")
            .unwrap()
            .contains("exited with code 1"),
        "the reason: {screen}"
    );
    assert!(screen.contains("r restart"), "help line: {screen}");

    // Select beta with the arrow keys (the first agent starts selected).
    let order: Vec<&str> = before["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|agent| agent["name"].as_str().unwrap())
        .collect();
    let index = order.iter().position(|name| *name == "beta").unwrap();
    for _ in 0..index {
        tmux.keys(&["Down"]);
    }
    let screen = tmux.wait_screen("beta selected, its log shown", |screen| {
        row_of(screen, "beta").is_some_and(|row| row.contains("> beta"))
            && screen.contains("log: beta (following)")
            && screen.contains("fake-agent beta ready")
    });
    assert!(
        !screen.contains("fake-agent alpha ready"),
        "only beta's log: {screen}"
    );

    // `r` asks, `y` confirms: beta gets a new process, alpha keeps its own.
    let beta = agent_of(&before, "beta");
    let old_pid = beta["pid"].as_u64().unwrap();
    let old_restarts = beta["restarts"].as_u64().unwrap();
    let old_operator = beta["restarts_by_cause"]["operator"].as_u64().unwrap_or(0);
    tmux.keys(&["r"]);
    tmux.wait_screen("the confirmation question", |screen| {
        screen.contains("restart beta? press y to confirm")
    });
    assert_eq!(
        common::status_json(&manifest).expect("status")["agents"][index]["pid"].as_u64(),
        Some(old_pid),
        "nothing happens before the confirmation"
    );
    tmux.keys(&["y"]);
    let after = wait_for_status(&manifest, "beta restarted and ready", BOUND, |status| {
        let beta = agent_of(status, "beta");
        beta["state"] == "ready" && beta["pid"].as_u64().is_some_and(|pid| pid != old_pid)
    });
    let beta = agent_of(&after, "beta");
    // `restarts` counts the restarts the policy made; the operator's are
    // counted by cause (docs/protocol.md).
    assert_eq!(
        beta["restarts_by_cause"]["operator"].as_u64(),
        Some(old_operator + 1),
        "restart count: {beta}"
    );
    assert_eq!(beta["restarts"].as_u64(), Some(old_restarts), "{beta}");
    assert_eq!(
        agent_of(&after, "alpha")["pid"],
        agent_of(&before, "alpha")["pid"],
        "only the selected agent restarts"
    );
    let new_pid = beta["pid"].as_u64().unwrap().to_string();
    tmux.wait_screen("the new pid and the answer on screen", |screen| {
        screen.contains("restart beta: accepted")
            && row_of(screen, "beta")
                .is_some_and(|row| row.contains(&new_pid) && row.contains("restarted by operator"))
    });

    // Filter by name, then by state; Esc shows everyone again.
    tmux.keys(&["/", "gam", "Enter"]);
    let screen = tmux.wait_screen("only gamma", |screen| {
        screen.contains("filter: gam ") && table_rows(screen).len() == 1
    });
    assert!(row_of(&screen, "gamma").is_some(), "{screen}");
    assert!(screen.contains("agents 1/3 filter: gam"), "{screen}");
    tmux.keys(&["Escape", "/", "ready", "Enter"]);
    let screen = tmux.wait_screen("the ready agents", |screen| {
        screen.contains("filter: ready ")
            && table_rows(screen).len() == 2
            && row_of(screen, "gamma").is_none()
    });
    assert!(
        row_of(&screen, "alpha").is_some() && row_of(&screen, "beta").is_some(),
        "{screen}"
    );
    tmux.keys(&["Escape"]);
    tmux.wait_screen("every agent again", |screen| table_rows(screen).len() == 3);

    // A smaller window: redrawn to fit, the least needed columns left out.
    tmux.run(&["resize-window", "-t", "top", "-x", "90", "-y", "30"]);
    let screen = tmux.wait_screen("the table redrawn at 90 columns", |screen| {
        !screen.contains("READY IN") && table_rows(screen).len() == 3
    });
    assert!(
        screen.contains("STATE") && screen.contains("LAST REASON"),
        "{screen}"
    );
    assert!(
        screen.lines().all(|line| line.chars().count() <= 90),
        "{screen}"
    );

    // A key that arrives together with a resize is not lost: crossterm's
    // default (edge-triggered) input source took the resize and dropped the
    // key until the next one. Both are made to wait for `top` while its
    // status request hangs on the stopped supervisor.
    let supervisor = Pid::from_raw(up.pid() as i32);
    kill(supervisor, Signal::SIGSTOP).expect("stop the supervisor");
    std::thread::sleep(Duration::from_millis(800));
    tmux.run(&["resize-window", "-t", "top", "-x", "100", "-y", "32"]);
    std::thread::sleep(Duration::from_millis(200));
    tmux.keys(&["q"]);
    std::thread::sleep(Duration::from_millis(200));
    kill(supervisor, Signal::SIGCONT).expect("continue the supervisor");
    assert_terminal_restored(&tmux, &stty_file);
    assert!(!alive(top_pid), "top still running");
}

#[test]
fn top_gives_the_terminal_back_on_ctrl_c_and_sigterm() {
    let fixture = Fixture::new();
    let test = "top_gives_the_terminal_back_on_ctrl_c_and_sigterm";
    if Tmux::new(test, fixture.dir.path()).is_none() {
        return;
    }
    let manifest = fixture.manifest(MANIFEST);
    let _up = fixture.up(&manifest, &[]);
    wait_for_status(&manifest, "alpha and beta ready", BOUND, |status| {
        all_ready(status, &["alpha", "beta"])
    });
    for (round, how) in ["ctrl-c", "sigterm", "hangup"].iter().enumerate() {
        let pid_file = fixture.path(&format!("top-{round}.pid"));
        let stty_file = fixture.path(&format!("stty-{round}.txt"));
        // A server of its own for each round.
        let tmux = Tmux::new(test, fixture.dir.path()).expect("tmux");
        tmux.start(&script(&manifest, &pid_file, &stty_file));
        let top_pid = read_pid(&pid_file);
        tmux.wait_screen("the table", |screen| row_of(screen, "alpha").is_some());
        match *how {
            "ctrl-c" => tmux.keys(&["C-c"]),
            "sigterm" => nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(top_pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .expect("signal top"),
            _ => {
                // The terminal goes away (a closed SSH connection): top
                // must end, not spin on a dead terminal.
                drop(tmux);
                common::wait_until("top to end after its terminal hung up", BOUND, || {
                    !alive(top_pid)
                });
                continue;
            }
        }
        assert_terminal_restored(&tmux, &stty_file);
        assert!(!alive(top_pid), "top still running after {how}");
    }
}

#[test]
fn top_without_a_supervisor_exits_3_and_without_a_terminal_2() {
    let fixture = Fixture::new();
    let run_dir = fixture.path("nothing-here");
    let output = cli(&["top", "--run-dir", run_dir.to_str().unwrap()], BOUND);
    assert_eq!(output.code, Some(3), "{output:?}");
    assert!(
        output.stderr.contains("no supervisor is running"),
        "{output:?}"
    );

    let manifest = fixture.manifest(MANIFEST);
    let _up = fixture.up(&manifest, &[]);
    wait_for_status(&manifest, "alpha ready", BOUND, |status| {
        all_ready(status, &["alpha"])
    });
    let output = cli(&["top", "--config", manifest.to_str().unwrap()], BOUND);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(output.stderr.contains("needs a terminal"), "{output:?}");
}
