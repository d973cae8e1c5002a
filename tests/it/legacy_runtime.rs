//! What the real legacy system does to a supervisor, reproduced with
//! fixtures written here (tests/fixtures/legacy_agent.py imitates the
//! BaseAgent): scripts named from the repository root while the manifest
//! lives in `main_pc_code/config/`, an agent whose health socket is on
//! `port+1` instead of the manifest's health port, an agent holding another
//! agent's port, a slow starter under the file's `health_checks`,
//! `--keep-going`, reasons with the agent's last words, `--env` over the
//! file's environment, and the summary of a failed start.
//! Needs python3 with pyzmq (`scripts/test.sh` installs it).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Fixture, SUPERVISOR, port, wait_until};

const BOUND: Duration = Duration::from_secs(60);

fn legacy_agent() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy_agent.py")
}

/// A script that runs the BaseAgent imitation, after importing a module
/// that only the repository root on PYTHONPATH provides and writing what it
/// sees (cwd, GREETING) to `seen/<name>`.
const RUNNER: &str = r#"
import os, runpy, sys
from common.greeting import HELLO  # only importable with the root on PYTHONPATH
name = os.environ["AGENT_NAME"]
os.makedirs("seen", exist_ok=True)
with open(os.path.join("seen", name), "w") as out:
    out.write(os.getcwd() + "\n" + os.environ.get("GREETING", "") + "\n" + HELLO + "\n")
sys.argv[0] = os.environ["LEGACY_AGENT"]
runpy.run_path(os.environ["LEGACY_AGENT"], run_name="__main__")
"#;

/// A script that holds `SQUAT_PORT` open (another agent's port).
const SQUATTER: &str = r#"
import os, socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["SQUAT_PORT"])))
s.listen()
print("squatting", flush=True)
time.sleep(600)
"#;

/// `supervisor ARGS` with the run directory of `up`, bounded.
fn cli(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(SUPERVISOR)
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("run supervisor")
}

#[test]
fn a_legacy_repository_runs_from_its_root_and_what_agents_listen_on_is_shown() {
    let fixture = Fixture::new();
    let root = fixture.path("repo");
    let config = root.join("main_pc_code/config");
    std::fs::create_dir_all(&config).expect("mkdir");
    std::fs::create_dir_all(root.join("main_pc_code/agents")).expect("mkdir");
    std::fs::create_dir_all(root.join("common")).expect("mkdir");
    std::fs::write(root.join("common/__init__.py"), "").expect("write");
    std::fs::write(
        root.join("common/greeting.py"),
        "HELLO = 'hi from the root'\n",
    )
    .expect("write");
    std::fs::write(root.join("main_pc_code/agents/runner.py"), RUNNER).expect("write");
    std::fs::write(root.join("main_pc_code/agents/squatter.py"), SQUATTER).expect("write");
    let (good, good_health, zmq_port) = (port(), port(), port());
    let (plus, plus_health) = (port(), port());
    let manifest = config.join("startup_config.yaml");
    // As the real file: a Docker PYTHONPATH, health_checks, scripts named
    // from the repository root.
    std::fs::write(
        &manifest,
        format!(
            r#"global_settings:
  environment:
    PYTHONPATH: /app
    GREETING: from the manifest
    LEGACY_AGENT: {agent}
  health_checks:
    start_period_seconds: 8
agent_groups:
  core:
    Good:
      script_path: main_pc_code/agents/runner.py
      port: {good}
      health_check_port: {good_health}
      required: true
      config:
        zmq_port: {zmq_port}
    PlusOne:
      script_path: main_pc_code/agents/runner.py
      port: {plus}
      health_check_port: {plus_health}
      required: false
      env_vars:
        HEALTH_CHECK_PORT: ""
    Squatter:
      script_path: main_pc_code/agents/squatter.py
      required: false
      env_vars:
        SQUAT_PORT: "{zmq_port}"
"#,
            agent = legacy_agent().display()
        ),
    )
    .expect("write manifest");
    let mut command = Command::new(SUPERVISOR);
    command
        .args([
            "--log",
            "info",
            "up",
            "--keep-going",
            "--no-watch",
            "--config",
        ])
        .arg("main_pc_code/config/startup_config.yaml")
        .args(["--env", "GREETING=from the command line"])
        .current_dir(&root);
    let up = common::Up::spawn(command, &fixture.record);

    // Names are padded to the longest, `Squatter`.
    up.wait_for_output("Good      ready in", BOUND);
    // The script ran from the repository root, with the root on PYTHONPATH
    // (before the file's /app), and --env won over the file.
    let seen = std::fs::read_to_string(root.join("seen/Good")).expect("Good wrote what it saw");
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines,
        [
            root.display().to_string().as_str(),
            "from the command line",
            "hi from the root"
        ]
    );

    // PlusOne answers health on port+1 (and, as the BaseAgent does, on its
    // main port), not on its manifest health port: the reason says so.
    let expected = format!(
        "not ready within 8.00s: nothing of the agent listens on {plus_health}; the agent listens on {plus} (answers health: ok), {} (answers health: ok)",
        plus + 1
    );
    up.wait_for_output(&expected, BOUND);

    // status --ports: the squatter holds Good's config port.
    let output = cli(
        &root,
        &[
            "status",
            "--ports",
            "--config",
            "main_pc_code/config/startup_config.yaml",
        ],
    );
    let table = String::from_utf8_lossy(&output.stdout);
    let row = |name: &str| {
        table
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("Squatter").contains(&format!("{zmq_port} is Good's config.zmq_port")),
        "{table}"
    );
    assert!(row("Good").contains(&good.to_string()), "{table}");
    assert!(
        row("Good").contains(&format!("nothing listens on {zmq_port} (config.zmq_port)")),
        "{table}"
    );
}

#[test]
fn keep_going_keeps_the_others_and_reports_the_failure_with_its_last_words() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  broken:
    command: ["sh", "-c", "echo 'loading'; echo 'ImportError: no module named common' >&2; exit 2"]
    restart: never
  fine:
    command: ["FAKE", "--ready-after", "100ms"]
    readiness: { start_period: 300ms }
  after:
    command: ["FAKE"]
    dependencies: [broken]
    required: false
"#,
    );
    let mut up = fixture.up(&manifest, &["--keep-going", "--no-watch"]);
    up.wait_for_output("fine    ready in", BOUND);
    up.wait_for_output("the others keep running (--keep-going)", BOUND);
    let dir = manifest.parent().expect("a directory");
    let output = cli(dir, &["status", "--json", "--config", "manifest.yaml"]);
    assert_eq!(output.status.code(), Some(1), "a required agent failed");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let agent = |name: &str| {
        status["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|agent| agent["name"] == name)
            .cloned()
            .expect("the agent")
    };
    assert_eq!(agent("fine")["state"], "ready");
    assert_eq!(agent("broken")["state"], "failed");
    assert_eq!(
        agent("broken")["reason"],
        "exited with code 2: ImportError: no module named common (restart: never)"
    );
    assert_eq!(agent("after")["state"], "blocked");
    up.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = up.wait(BOUND);
    assert_eq!(exit.code(), Some(1), "{}", up.output());
    assert!(
        up.output()
            .contains("1 required agent(s) failed while the others kept running")
            && up
                .output()
                .contains("  broken: exited with code 2: ImportError"),
        "{}",
        up.output()
    );
}

#[test]
fn a_slow_starter_misses_its_legacy_deadline_once_and_is_retried() {
    let fixture = Fixture::new();
    let (agent_port, health) = (port(), port());
    // Slow (10 s) on its first run only: the marker file remembers.
    std::fs::write(
        fixture.path("slow.py"),
        format!(
            "import os, runpy, sys, time\nif not os.path.exists('first-run-done'):\n    open('first-run-done', 'w').close()\n    time.sleep(10)\nsys.argv[0] = {agent:?}\nrunpy.run_path({agent:?}, run_name='__main__')\n",
            agent = legacy_agent().display().to_string()
        ),
    )
    .expect("write");
    let manifest = fixture.path("startup_config.yaml");
    std::fs::write(
        &manifest,
        format!(
            "health_checks:\n  start_period_seconds: 4\npc2_services:\n- name: Slow\n  script_path: slow.py\n  port: {agent_port}\n  health_check_port: {health}\n  required: true\n  dependencies: []\n"
        ),
    )
    .expect("write");
    let summary = fixture.path("summary.json");
    let mut up = fixture.up(
        &manifest,
        &[
            "--exit-when-ready",
            "--no-watch",
            "--summary-json",
            summary.to_str().expect("utf-8"),
        ],
    );
    let exit = up.wait(BOUND);
    assert!(exit.success(), "{}", up.output());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    assert_eq!(json["agents"]["Slow"]["state"], "ready");
    // Once at least (a loaded machine may make the second run late too).
    assert!(
        json["agents"]["Slow"]["restarts"].as_u64() >= Some(1),
        "{json}"
    );
    assert!(
        up.output()
            .contains("Slow  warning: not ready within 4.00s: nothing of the agent listens on"),
        "{}",
        up.output()
    );
}

#[test]
fn the_summary_is_written_when_up_fails_too() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        "version: 1\nagents:\n  dies:\n    command: [\"sh\", \"-c\", \"echo 'bad config' >&2; exit 4\"]\n    restart: never\n",
    );
    let summary = fixture.path("summary.json");
    let mut up = fixture.up(
        &manifest,
        &[
            "--exit-when-ready",
            "--summary-json",
            summary.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(up.wait(BOUND).code(), Some(1), "{}", up.output());
    wait_until("the summary file", BOUND, || summary.exists());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    assert!(
        json["failure"].as_str().is_some_and(|failure| failure
            .contains("required agent `dies` failed: exited with code 4: bad config")),
        "{json}"
    );
    assert_eq!(json["agents"]["dies"]["state"], "failed");
}
