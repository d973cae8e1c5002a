//! The habits operators bring, with the real binary: commands that find the
//! supervisor without `--config`, `up -d --wait`, `status`'s exit code,
//! `stop`/`start` reporting the dependents they took along, `restart all`
//! and `--group`, a closed pipe, `NO_COLOR`, completions and the man page.
//!
//! Background supervisors are started with `up -d` and always stopped by
//! pid when a test ends, pass or fail; the registry of running supervisors
//! lives in a per-test `XDG_RUNTIME_DIR`.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{FAKE_AGENT, SUPERVISOR, alive, port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A scratch project directory; stops the supervisor of every run
/// directory it started when dropped.
struct Project {
    dir: tempfile::TempDir,
    runtime: PathBuf,
    run_dirs: std::cell::RefCell<Vec<PathBuf>>,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = dir.path().join("xdg");
        std::fs::create_dir(&runtime).expect("runtime dir");
        Project {
            dir,
            runtime,
            run_dirs: Default::default(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a manifest; `FAKE` becomes the fake-agent path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text.replace("FAKE", FAKE_AGENT)).expect("write");
        path
    }

    /// `supervisor ARGS` in `cwd` with this project's registry, bounded.
    fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        self.run_with(cwd, args, &[])
    }

    fn run_with(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(SUPERVISOR);
        command
            .args(args)
            .current_dir(cwd)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("NO_COLOR", "1")
            .env_remove("SUPERVISOR_CONFIG")
            .env_remove("SUPERVISOR_RUN_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("run supervisor");
        let pid = child.id();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(output) => output.expect("supervisor output"),
            Err(_) => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                panic!("`supervisor {}` did not finish within 60s", args.join(" "));
            }
        }
    }

    /// `up -d --wait` in `cwd`; remembers the run directory to clean up.
    fn up(&self, cwd: &Path, args: &[&str], run_dir: PathBuf) -> Output {
        self.run_dirs.borrow_mut().push(run_dir);
        let mut all = vec!["up", "-d", "--wait", "--timeout", "30"];
        all.extend_from_slice(args);
        self.run(cwd, &all)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        for run_dir in self.run_dirs.borrow().iter() {
            let Some(pid) = std::fs::read_to_string(run_dir.join("supervisor.pid"))
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
            else {
                continue;
            };
            // SIGTERM stops the agents in order; SIGKILL if that takes too
            // long (the keeper then kills the agents' process groups).
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(pid as u32) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn two_agents(db: u16, api: u16) -> String {
    format!(
        r#"
version: 1
agents:
  db:
    command: ["FAKE", "--port", "{db}"]
    readiness: {{ tcp: {db}, timeout: 10s, interval: 20ms }}
  api:
    command: ["FAKE", "--port", "{api}"]
    dependencies: [db]
    readiness: {{ tcp: {api}, timeout: 10s, interval: 20ms }}
"#
    )
}

#[test]
fn commands_find_the_supervisor_without_config_from_where_up_ran() {
    let project = Project::new();
    let root = project.dir.path();
    // A directory with no manifest: a clear usage error.
    let empty = project.path("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let output = project.run(&empty, &["up"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("no manifest given")
            && text(&output).contains("config/startup.yaml"),
        "{}",
        text(&output)
    );

    // `up` finds supervisor.yaml; its run dir is beside it.
    project.write("supervisor.yaml", &two_agents(port(), port()));
    let output = project.up(root, &[], project.path(".supervisor"));
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        stdout(&output).contains("2/2 ready in"),
        "{}",
        text(&output)
    );

    // From a subdirectory, without --config, and without the registry
    // (another XDG_RUNTIME_DIR): found by walking up.
    let sub = project.path("src/deep");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let elsewhere = project.path("other-xdg");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let output = project.run_with(
        &sub,
        &["status"],
        &[("XDG_RUNTIME_DIR", elsewhere.to_str().expect("utf-8"))],
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(stdout(&output).contains("2/2 ready"), "{}", text(&output));

    // A manifest elsewhere: `up --config conf/app.yaml` from `work/`; the
    // commands in `work/` (and below) find it through the registry.
    let work = project.path("work");
    std::fs::create_dir_all(work.join("sub")).expect("mkdir");
    project.write("work/conf/app.yaml", &two_agents(port(), port()));
    let output = project.up(
        &work,
        &["--config", "conf/app.yaml"],
        work.join("conf/.supervisor"),
    );
    assert!(output.status.success(), "{}", text(&output));
    let output = project.run(&work.join("sub"), &["status", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let second_pid = std::fs::read_to_string(work.join("conf/.supervisor/supervisor.pid"))
        .expect("pid file")
        .trim()
        .parse::<u64>()
        .expect("pid");
    assert_eq!(
        status["supervisor_pid"], second_pid,
        "the supervisor started in work/"
    );

    // SUPERVISOR_RUN_DIR and SUPERVISOR_CONFIG, from an unrelated directory.
    let run_dir = work.join("conf/.supervisor");
    let output = project.run_with(
        &empty,
        &["status"],
        &[("SUPERVISOR_RUN_DIR", run_dir.to_str().expect("utf-8"))],
    );
    assert!(output.status.success(), "{}", text(&output));
    let config = work.join("conf/app.yaml");
    let output = project.run_with(
        &empty,
        &["down"],
        &[("SUPERVISOR_CONFIG", config.to_str().expect("utf-8"))],
    );
    assert!(output.status.success(), "{}", text(&output));
    // `down` from the subdirectory of the first project.
    let output = project.run(&sub, &["down"]);
    assert!(output.status.success(), "{}", text(&output));
    // Post-mortem: the run directory is still found.
    let output = project.run(&sub, &["status"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
}

#[test]
fn up_wait_fails_naming_the_agent_with_its_last_log_lines() {
    let project = Project::new();
    project.write(
        "supervisor.yaml",
        r#"
version: 1
agents:
  broken:
    command: ["sh", "-c", "echo 'loading config'; echo 'fatal: no module named common' >&2; exit 3"]
    restart: { policy: on-failure, max_restarts: 1, within: 60s, backoff: { initial: 50ms } }
    readiness: { start_period: 2s }
"#,
    );
    let output = project.up(project.dir.path(), &[], project.path(".supervisor"));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("required agent `broken` failed: exited with code 3")
            && stderr.contains("fatal: no module named common")
            && stderr.contains("last lines of broken's log"),
        "{}",
        text(&output)
    );
}

#[test]
fn status_exits_1_while_a_required_agent_is_failed() {
    let project = Project::new();
    let closed = port();
    project.write(
        "supervisor.yaml",
        &format!(
            r#"
version: 1
agents:
  fine:
    command: ["FAKE"]
    readiness: {{ start_period: 100ms }}
  stuck:
    command: ["FAKE"]
    readiness: {{ tcp: {closed}, timeout: 300ms, interval: 20ms }}
    restart: {{ policy: always, max_restarts: 0, on_give_up: keep-running }}
"#
        ),
    );
    let output = project.up(project.dir.path(), &[], project.path(".supervisor"));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let output = project.run(project.dir.path(), &["status"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(stdout(&output).contains("failed"), "{}", text(&output));
    // Once it is stopped by the operator, nothing required is failed.
    let output = project.run(project.dir.path(), &["stop", "stuck"]);
    assert!(output.status.success(), "{}", text(&output));
    let output = project.run(project.dir.path(), &["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn stop_and_start_report_the_dependents_they_take_along() {
    let project = Project::new();
    let (store, api, ui, solo) = (port(), port(), port(), port());
    project.write(
        "supervisor.yaml",
        &format!(
            r#"
version: 1
agents:
  store:
    command: ["FAKE", "--port", "{store}"]
    readiness: {{ tcp: {store}, interval: 20ms }}
    group: data
  api:
    command: ["FAKE", "--port", "{api}"]
    dependencies: [store]
    readiness: {{ tcp: {api}, interval: 20ms }}
    group: web
  ui:
    command: ["FAKE", "--port", "{ui}"]
    dependencies: [api]
    readiness: {{ tcp: {ui}, interval: 20ms }}
    group: web
  solo:
    command: ["FAKE", "--port", "{solo}"]
    readiness: {{ tcp: {solo}, interval: 20ms }}
"#
        ),
    );
    let root = project.dir.path();
    let output = project.up(root, &[], project.path(".supervisor"));
    assert!(output.status.success(), "{}", text(&output));

    let output = project.run(root, &["stop", "store"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        stdout(&output).contains("stopped: store\n  and with them: api, ui"),
        "{}",
        text(&output)
    );
    let states = |project: &Project| -> serde_json::Value {
        let output = project.run(root, &["status", "--json"]);
        serde_json::from_slice(&output.stdout).expect("status json")
    };
    let state = |status: &serde_json::Value, name: &str| -> String {
        status["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|agent| agent["name"] == name)
            .map(|agent| agent["state"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let status = states(&project);
    assert_eq!(state(&status, "ui"), "stopped");
    assert_eq!(state(&status, "solo"), "ready");

    // `start store` brings back what was stopped with it, and says so.
    let output = project.run(root, &["start", "store"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        stdout(&output).contains("ready: store\n  and with them: api, ui"),
        "{}",
        text(&output)
    );
    let status = states(&project);
    for name in ["store", "api", "ui", "solo"] {
        assert_eq!(state(&status, name), "ready", "{name}: {status}");
    }

    // An agent stopped by name stays stopped when its dependency comes back.
    let output = project.run(root, &["stop", "ui"]);
    assert!(output.status.success(), "{}", text(&output));
    let output = project.run(root, &["stop", "store"]);
    assert!(
        stdout(&output).contains("and with them: api, ui"),
        "{}",
        text(&output)
    );
    let output = project.run(root, &["start", "store"]);
    assert!(
        stdout(&output).contains("ready: store\n  and with them: api\n"),
        "{}",
        text(&output)
    );
    assert_eq!(state(&states(&project), "ui"), "stopped");
    let output = project.run(root, &["start", "ui"]);
    assert!(output.status.success(), "{}", text(&output));

    // `status --watch` into a pipe: refreshed tables, no screen clearing.
    let mut watch = Command::new(SUPERVISOR)
        .args(["status", "--watch", "--interval", "0.1"])
        .current_dir(root)
        .env("XDG_RUNTIME_DIR", &project.runtime)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("status --watch");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        watch.stdout.take().expect("stdout"),
    ));
    let mut headers = 0;
    let mut seen = String::new();
    while headers < 3 {
        let Some(Ok(line)) = lines.next() else { break };
        headers += usize::from(line.starts_with("supervisor pid"));
        seen.push_str(&line);
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(headers, 3, "{seen}");
    assert!(!seen.contains('\x1b'), "{seen:?}");

    // restart --group and restart all: new pids for exactly those agents.
    let pids = |status: &serde_json::Value| -> std::collections::BTreeMap<String, u64> {
        status["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .map(|agent| {
                (
                    agent["name"].as_str().unwrap_or_default().to_string(),
                    agent["pid"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    };
    let before = pids(&states(&project));
    let output = project.run(root, &["restart", "--group", "web"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        stdout(&output).contains("restarted: api, ui"),
        "{}",
        text(&output)
    );
    let after = pids(&states(&project));
    assert_ne!(before["api"], after["api"]);
    assert_ne!(before["ui"], after["ui"]);
    assert_eq!(before["store"], after["store"]);
    assert_eq!(before["solo"], after["solo"]);
    let output = project.run(root, &["restart", "--group", "nope"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("groups: data, web"),
        "{}",
        text(&output)
    );

    let output = project.run(root, &["restart", "all"]);
    assert!(output.status.success(), "{}", text(&output));
    let again = pids(&states(&project));
    for name in ["store", "api", "ui", "solo"] {
        assert_ne!(after[name], again[name], "{name} was not restarted");
    }
}

#[test]
fn a_closed_pipe_ends_commands_quietly() {
    let project = Project::new();
    let manifest = project.write("supervisor.yaml", &two_agents(port(), port()));
    // `supervisor plan --format dot | head -c 1`: the reader goes away first.
    let mut child = Command::new(SUPERVISOR)
        .args(["plan", "--format", "dot", "-c"])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plan");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    for args in [vec!["completions", "bash"], vec!["man"]] {
        let mut child = Command::new(SUPERVISOR)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait");
        assert!(
            output.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn completions_and_the_man_page() {
    let project = Project::new();
    let output = project.run(project.dir.path(), &["completions", "bash"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        stdout(&output).contains("complete -F") && stdout(&output).contains("check-ports"),
        "{}",
        text(&output)
    );
    for shell in ["zsh", "fish"] {
        let output = project.run(project.dir.path(), &["completions", shell]);
        assert!(
            output.status.success() && stdout(&output).contains("restart"),
            "{shell}"
        );
    }
    let output = project.run(project.dir.path(), &["man"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        stdout(&output).starts_with(".ie") || stdout(&output).contains(".TH supervisor"),
        "{}",
        text(&output)
    );
}

/// Colour only on a terminal, and not with NO_COLOR: `up` run under a
/// pseudo-terminal made by `script(1)`.
#[test]
fn colour_on_a_terminal_unless_no_color() {
    let project = Project::new();
    project.write(
        "supervisor.yaml",
        "version: 1\nagents:\n  hello:\n    command: [\"sh\", \"-c\", \"echo hi; sleep 30\"]\n    readiness: { start_period: 200ms }\n",
    );
    let run = |no_color: &str| -> String {
        let line = format!(
            "{SUPERVISOR} up --exit-when-ready --no-watch --run-dir {}",
            project.path("run").display()
        );
        let output = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .current_dir(project.dir.path())
            .env("NO_COLOR", no_color)
            .env("XDG_RUNTIME_DIR", &project.runtime)
            .stdin(Stdio::null())
            .output()
            .expect("script(1) from util-linux makes the terminal");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let coloured = run("");
    assert!(coloured.contains("all ready"), "{coloured}");
    assert!(
        coloured.contains('\x1b'),
        "a terminal gets colour: {coloured:?}"
    );
    let plain = run("1");
    assert!(plain.contains("all ready"), "{plain}");
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain:?}");
    // In a pipe: no colour, and `status --watch` writes no screen clearing.
    let output = project.run_with(
        project.dir.path(),
        &["up", "--exit-when-ready", "--no-watch", "--run-dir", "run2"],
        &[("NO_COLOR", "")],
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains('\x1b'));
    assert!(!String::from_utf8_lossy(&output.stderr).contains('\x1b'));
}

/// Issue 15, class 6: `check` and `check-ports` on a system that is
/// running name the manifest's own running agents as the holders of their
/// ports instead of reporting a conflict.
#[test]
fn check_on_a_running_system_names_its_own_agents_as_holders() {
    let project = Project::new();
    let root = project.dir.path();
    let (db, api) = (port(), port());
    // `port:` declares the ports the agents bind (two_agents only passes them as flags).
    let manifest = two_agents(db, api)
        .replace(
            &format!("readiness: {{ tcp: {db},"),
            &format!("port: {db}\n    readiness: {{ tcp: {db},"),
        )
        .replace(
            &format!("readiness: {{ tcp: {api},"),
            &format!("port: {api}\n    readiness: {{ tcp: {api},"),
        );
    project.write("supervisor.yaml", &manifest);
    let output = project.up(root, &[], project.path(".supervisor"));
    assert!(output.status.success(), "{}", text(&output));

    let output = project.run(root, &["check", "--no-file-check", "--verbose"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    for (agent, port) in [("db", db), ("api", api)] {
        assert!(
            text(&output).contains(&format!(
                "port {port} ({agent}.port) is in use by running agent {agent} (pid "
            )),
            "{}",
            text(&output)
        );
    }
    let output = project.run(root, &["check-ports"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("in use by running agent db"),
        "{}",
        text(&output)
    );
}
