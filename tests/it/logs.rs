//! `supervisor logs` with real processes: agent log lines carry timestamps;
//! without NAME every agent's lines come merged by time with a name prefix;
//! `--grep`, `--since`, `-n`; reading the files with no supervisor (after
//! `down`, after a failed `up`, a run directory written by hand); exit 3
//! only without a run directory's logs; a closed stdout ends quietly.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Fixture, SUPERVISOR, all_ready, cli, wait_for_status};
use supervisor::process::log::{format_timestamp, parse_timestamp};

const BOUND: Duration = Duration::from_secs(30);

/// alpha prints `started`, then `ready` 100 ms later; beta-long starts
/// once alpha is ready (300 ms) and prints `ready` 600 ms after its start.
/// On `down` beta-long stops first; alpha prints `stopped` 50 ms after its
/// SIGTERM, so the four agents' lines alternate in time.
const TWO: &str = r#"
version: 1
agents:
  alpha:
    command: ["FAKE", "--ready-after", "100ms", "--stop-delay", "50ms"]
    readiness: { start_period: 300ms }
    stop: { grace: 5s }
  beta-long:
    command: ["FAKE", "--ready-after", "600ms"]
    dependencies: [alpha]
    readiness: { start_period: 900ms }
    stop: { grace: 5s }
"#;

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Splits a merged line `name | <time> text` into (name, time, text),
/// checking the name is padded to `width`.
fn merged_line(line: &str, width: usize) -> (String, SystemTime, String) {
    let (name, rest) = line
        .split_once(" | ")
        .unwrap_or_else(|| panic!("no ` | ` in {line:?}"));
    assert_eq!(name.len(), width, "name not padded to {width}: {line:?}");
    let (time, text) = parse_timestamp(rest.as_bytes())
        .unwrap_or_else(|| panic!("no timestamp after the name: {line:?}"));
    (
        name.trim_end().to_string(),
        time,
        String::from_utf8_lossy(text).into_owned(),
    )
}

#[test]
fn merged_logs_are_time_ordered_with_names_and_readable_after_down() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(TWO);
    let config = text(&manifest);
    let mut up = fixture.up(&manifest, &[]);
    wait_for_status(&manifest, "both ready", BOUND, |status| {
        all_ready(status, &["alpha", "beta-long"])
    });

    // Every line of the file starts with its time, UTC with milliseconds.
    let started = SystemTime::now() - Duration::from_secs(60);
    let file = std::fs::read_to_string(fixture.path(".supervisor/logs/alpha.log")).unwrap();
    for line in file.lines() {
        let (time, _) = parse_timestamp(line.as_bytes())
            .unwrap_or_else(|| panic!("line without a timestamp: {line:?}"));
        assert!(time > started && time <= SystemTime::now(), "{line}");
        assert_eq!(line.as_bytes()[23], b'Z', "{line}");
    }
    assert!(
        file.contains("fake-agent alpha ready"),
        "alpha's log: {file}"
    );
    // The console copy has no time.
    up.wait_for_output("alpha     | fake-agent alpha ready", BOUND);

    // While it runs: one agent's lines as written, no prefix.
    let output = cli(&["logs", "alpha", "--config", config], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(output.stdout, file, "{output:?}");
    // An unknown agent is judged by the running supervisor.
    let output = cli(&["logs", "nope", "--config", config], BOUND);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(
        output
            .stderr
            .contains("no agent `nope` (agents: alpha, beta-long)"),
        "{output:?}"
    );
    let output = cli(
        &["logs", "--grep", "beta-long ready", "--config", config],
        BOUND,
    );
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(output.stdout.lines().count(), 1, "{output:?}");
    assert!(output.stdout.starts_with("beta-long | 20"), "{output:?}");

    let output = cli(&["down", "--config", config], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(up.wait(BOUND).success(), "{}", up.output());

    // After `down`: the files alone, merged by time.
    let output = cli(&["logs", "--config", config], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    let lines: Vec<_> = output
        .stdout
        .lines()
        .map(|line| merged_line(line, "beta-long".len()))
        .collect();
    let times: Vec<SystemTime> = lines.iter().map(|(_, time, _)| *time).collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "not in time order:\n{}",
        output.stdout
    );
    let events: Vec<String> = lines
        .iter()
        .filter(|(_, _, text)| !text.contains("started"))
        .map(|(name, _, text)| format!("{name}: {text}"))
        .collect();
    assert_eq!(
        events,
        [
            "alpha: fake-agent alpha ready",
            "beta-long: fake-agent beta-long ready",
            "beta-long: fake-agent beta-long: stopped",
            "alpha: fake-agent alpha: stopped",
        ],
        "{}",
        output.stdout
    );
    assert_eq!(lines.len(), 6, "{}", output.stdout);

    // -n counts the merged stream; --grep matches the text.
    let output = cli(&["logs", "-n", "2", "--config", config], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let last: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(last.len(), 2, "{output:?}");
    assert!(last[0].starts_with("beta-long | ") && last[0].ends_with("beta-long: stopped"));
    assert!(last[1].starts_with("alpha     | ") && last[1].ends_with("alpha: stopped"));
    let output = cli(&["logs", "--grep", "stopped", "--config", config], BOUND);
    assert_eq!(output.stdout.lines().count(), 2, "{output:?}");
    let output = cli(
        &["logs", "--grep", "no such text", "--config", config],
        BOUND,
    );
    assert_eq!(
        (output.code, output.stdout.as_str()),
        (Some(0), ""),
        "{output:?}"
    );

    // Without a supervisor an unknown name is judged by the files.
    let output = cli(&["logs", "nope", "--config", config], BOUND);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(
        output.stderr.contains("agents with logs: alpha, beta-long"),
        "{output:?}"
    );
}

#[test]
fn logs_of_a_failed_up_can_be_read() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  broken:
    command: ["FAKE", "--crash-after", "100ms", "--exit-code", "7"]
    readiness: { start_period: 5s }
    restart: never
"#,
    );
    let mut up = fixture.up(&manifest, &["--exit-when-ready", "--timeout", "20"]);
    let status = up.wait(BOUND);
    assert!(!status.success(), "{status:?}\n{}", up.output());
    let output = cli(&["logs", "broken", "--config", text(&manifest)], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output
            .stdout
            .lines()
            .any(|line| line.ends_with(" fake-agent broken: crashing with code 7")),
        "{output:?}"
    );
}

/// `RFC 3339 time` + ` ` + `text`, as the supervisor writes it.
fn stamped(ago: Duration, text: &str) -> String {
    let stamp = format_timestamp(SystemTime::now() - ago);
    format!("{} {text}\n", String::from_utf8_lossy(&stamp))
}

const MINUTE: Duration = Duration::from_secs(60);

/// A run directory as an older run left it: `old` wrote long ago (one line
/// in a rotated file), `new` has a line from a version without timestamps.
fn written_by_hand(fixture: &Fixture) -> String {
    let logs = fixture.path("run/logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join("old.log.1"),
        stamped(120 * MINUTE, "old two hours ago"),
    )
    .unwrap();
    std::fs::write(
        logs.join("old.log"),
        stamped(30 * MINUTE, "old half an hour ago"),
    )
    .unwrap();
    std::fs::write(
        logs.join("new.log"),
        format!(
            "new legacy line\n{}{}",
            stamped(5 * MINUTE, "new five minutes ago"),
            stamped(Duration::from_secs(10), "new ten seconds ago")
        ),
    )
    .unwrap();
    fixture.path("run").to_str().unwrap().to_string()
}

fn texts(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|line| {
            let (name, rest) = line.split_once(" | ").expect("a name prefix");
            let text = parse_timestamp(rest.as_bytes())
                .map(|(_, text)| String::from_utf8_lossy(text).into_owned())
                .unwrap_or_else(|| rest.to_string());
            format!("{}: {text}", name.trim_end())
        })
        .collect()
}

#[test]
fn since_and_n_on_a_run_dir_written_by_hand() {
    let fixture = Fixture::new();
    let dir = written_by_hand(&fixture);
    let logs = |extra: &[&str]| {
        let mut args = vec!["logs", "--run-dir", dir.as_str()];
        args.extend_from_slice(extra);
        let output = cli(&args, BOUND);
        assert_eq!(output.code, Some(0), "{extra:?}: {output:?}");
        assert!(output.stderr.is_empty(), "{extra:?}: {output:?}");
        output.stdout
    };
    // Everything, the line without a timestamp first (it is older than
    // any timestamped line of its file), rotated files included.
    assert_eq!(
        texts(&logs(&[])),
        [
            "new: new legacy line",
            "old: old two hours ago",
            "old: old half an hour ago",
            "new: new five minutes ago",
            "new: new ten seconds ago",
        ]
    );
    assert_eq!(
        texts(&logs(&["--since", "10m"])),
        ["new: new five minutes ago", "new: new ten seconds ago"]
    );
    assert_eq!(
        texts(&logs(&["--since", "1h"])),
        [
            "old: old half an hour ago",
            "new: new five minutes ago",
            "new: new ten seconds ago",
        ]
    );
    assert_eq!(
        texts(&logs(&["--since", "90s"])),
        ["new: new ten seconds ago"]
    );
    assert_eq!(
        texts(&logs(&["-n", "2"])),
        ["new: new five minutes ago", "new: new ten seconds ago"]
    );
    assert_eq!(
        texts(&logs(&["--since", "1h", "-n", "1", "--grep", "old"])),
        ["old: old half an hour ago"]
    );
    // One agent: its lines as written, without a prefix.
    let old = logs(&["old", "--since", "1h"]);
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.ends_with(" old half an hour ago\n"), "{old}");
    assert!(parse_timestamp(old.as_bytes()).is_some(), "{old}");
    // Unknown agents are judged by the files.
    let output = cli(&["logs", "gone", "--run-dir", &dir], BOUND);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(
        output.stderr.contains("agents with logs: new, old"),
        "{output:?}"
    );
    let output = cli(
        &["logs", "--since", "ten minutes", "--run-dir", &dir],
        BOUND,
    );
    assert_eq!(output.code, Some(2), "{output:?}");
}

#[test]
fn no_run_dir_or_no_logs_is_not_running() {
    let fixture = Fixture::new();
    let empty = fixture.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for dir in [fixture.path("missing"), empty] {
        for args in [vec!["logs"], vec!["logs", "a"], vec!["logs", "-f"]] {
            let mut args = args;
            args.extend(["--run-dir", text(&dir)]);
            let output = cli(&args, BOUND);
            assert_eq!(output.code, Some(3), "{args:?}: {output:?}");
            assert!(
                output.stderr.contains(&format!(
                    "no supervisor is running for run directory {} and no logs in {}",
                    dir.display(),
                    dir.join("logs").display()
                )),
                "{args:?}: {output:?}"
            );
        }
    }
}

/// A `supervisor logs` whose stdout the test reads; killed by pid if the
/// test ends before it does.
struct Reader {
    child: Child,
}

impl Reader {
    fn start(args: &[&str]) -> Reader {
        let child = Command::new(SUPERVISOR)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start supervisor logs");
        Reader { child }
    }

    /// Reads one line, closes stdout, and waits (bounded) for the exit:
    /// gives the exit code and what it wrote to stderr.
    fn first_line_then_close(&mut self) -> (String, Option<i32>, String) {
        let stdout = self.child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read one line");
        // The BufReader (and with it the pipe) is dropped here.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "`supervisor logs` still running 10 s after its stdout was closed"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        (line, status.code(), stderr)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_closed_stdout_ends_logs_quietly() {
    let fixture = Fixture::new();
    let dir = written_by_hand(&fixture);
    // More than a pipe holds, so the plain form is still writing when the
    // reader goes.
    let many: String = (0..20_000)
        .map(|index| stamped(Duration::from_secs(1), &format!("line {index}")))
        .collect();
    std::fs::write(fixture.path("run/logs/busy.log"), many).unwrap();
    for args in [
        vec!["logs", "-n", "100000", "--run-dir", dir.as_str()],
        vec!["logs", "-f", "--run-dir", dir.as_str()],
        vec!["logs", "new", "-f", "--run-dir", dir.as_str()],
    ] {
        let mut reader = Reader::start(&args);
        let (line, code, stderr) = reader.first_line_then_close();
        assert!(
            line.contains(" | ") || args[1] == "new",
            "{args:?}: {line:?}"
        );
        assert!(line.ends_with('\n'), "{args:?}: {line:?}");
        assert_eq!(code, Some(0), "{args:?}: stderr {stderr:?}");
        assert_eq!(stderr, "", "{args:?}");
    }
}
