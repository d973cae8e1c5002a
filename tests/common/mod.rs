//! Shared helpers for the runtime integration tests (`up.rs`, `restart.rs`,
//! `shutdown.rs`): a scratch directory with a manifest, a running
//! `supervisor up` whose output is captured, the `fake-agent` record file,
//! and bounded waits. Every process a test starts is killed by pid when the
//! test ends, pass or fail. Where the legacy corpus is, and the visible skip
//! of tests that need it when it is missing, are in `corpus.rs`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub mod corpus;

pub const FAKE_AGENT: &str = env!("CARGO_BIN_EXE_fake-agent");
pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_supervisor");

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port, never one handed out before in this test process
/// (portpicker picks at random among ~10,000 ports, so 50 picks repeat one
/// about one time in eight).
pub fn port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = portpicker::pick_unused_port().expect("a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no unused port in 1,000 picks");
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// A line written by `fake-agent --record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    pub name: String,
    pub nanos: u128,
    pub pid: u32,
}

/// One test's scratch directory, manifest and record file.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub record: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temp dir");
        let record = dir.path().join("record.txt");
        Fixture { dir, record }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `manifest.yaml`; `FAKE` in the text becomes the fake-agent path.
    pub fn manifest(&self, text: &str) -> PathBuf {
        let path = self.path("manifest.yaml");
        std::fs::write(&path, text.replace("FAKE", FAKE_AGENT)).expect("write manifest");
        path
    }

    pub fn records(&self) -> Vec<Record> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                Some(Record {
                    kind: parts.next()?.to_string(),
                    name: parts.next()?.to_string(),
                    nanos: parts.next()?.parse().ok()?,
                    pid: parts.next()?.parse().ok()?,
                })
            })
            .collect()
    }

    pub fn records_of(&self, kind: &str, name: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|record| record.kind == kind && record.name == name)
            .collect()
    }

    /// The first `kind` record of `name`; panics if there is none.
    pub fn first(&self, kind: &str, name: &str) -> Record {
        self.records_of(kind, name)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no `{kind}` record for {name}: {:?}", self.records()))
    }

    /// Starts `supervisor up --config manifest.yaml` with `extra` arguments.
    pub fn up(&self, manifest: &Path, extra: &[&str]) -> Up {
        self.start_up(manifest, extra, false)
    }

    /// Like [`Fixture::up`], but nothing reads its stdout (the console):
    /// a paused terminal. `Up::output` has its stderr only.
    pub fn up_with_stalled_console(&self, manifest: &Path, extra: &[&str]) -> Up {
        self.start_up(manifest, extra, true)
    }

    fn start_up(&self, manifest: &Path, extra: &[&str], stalled_console: bool) -> Up {
        let mut command = Command::new(SUPERVISOR);
        command
            .args(["--log", "info", "up", "--config"])
            .arg(manifest)
            .args(extra);
        Up::start(command, &self.record, stalled_console)
    }
}

impl Up {
    /// Starts `command` (a `supervisor ... up ...`) with its output captured
    /// and `record` as the fake agents' record file.
    pub fn spawn(command: Command, record: &Path) -> Up {
        Up::start(command, record, false)
    }

    fn start(mut command: Command, record: &Path, stalled_console: bool) -> Up {
        command
            .env("FAKE_AGENT_RECORD", record)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start supervisor");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let (console, stdout) = match stalled_console {
            true => (Some(stdout), None),
            false => (None, Some(stdout)),
        };
        let mut streams: Vec<Box<dyn std::io::Read + Send>> = Vec::new();
        if let Some(stdout) = stdout {
            streams.push(Box::new(stdout));
        }
        streams.push(Box::new(child.stderr.take().expect("stderr")));
        for stream in streams {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut output = output.lock().expect("output lock");
                    output.push_str(&line);
                    output.push('\n');
                }
            });
        }
        Up {
            child,
            output,
            record: record.to_path_buf(),
            status: None,
            _console: console,
        }
    }
}

/// A running `supervisor up`. Dropping it kills the supervisor and every
/// agent pid found in the record file.
pub struct Up {
    pub child: Child,
    output: Arc<Mutex<String>>,
    record: PathBuf,
    status: Option<ExitStatus>,
    /// With a stalled console: the read end of its stdout, held open and
    /// never read.
    _console: Option<std::process::ChildStdout>,
}

impl Up {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far (stdout and stderr, interleaved by line).
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    pub fn wait_for_output(&self, text: &str, timeout: Duration) {
        let what = format!("supervisor output containing {text:?}");
        let deadline = Instant::now() + timeout;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; output so far:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).expect("signal supervisor");
    }

    /// Waits for the supervisor to exit; panics with its output after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "supervisor still running after {timeout:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        for pid in text
            .lines()
            .filter_map(|line| line.split_whitespace().nth(3)?.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Kills a pid read from a file (a grandchild) when dropped.
pub struct KillOnDrop(pub Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}

pub fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos())
        .unwrap_or(0)
}

/// What a finished CLI command printed and returned.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `supervisor ARGS` to completion; kills it and panics after `timeout`.
pub fn cli(args: &[&str], timeout: Duration) -> CliOutput {
    let started = Instant::now();
    let mut child = Command::new(SUPERVISOR)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start supervisor CLI");
    let mut pipes = Vec::new();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        pipes.push(std::thread::spawn(move || {
            let mut text = String::new();
            let mut stream = stream;
            let _ = std::io::Read::read_to_string(&mut stream, &mut text);
            text
        }));
    }
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`supervisor {}` did not finish within {timeout:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let mut texts = pipes
        .into_iter()
        .map(|pipe| pipe.join().expect("pipe reader"));
    CliOutput {
        code: status.code(),
        stdout: texts.next().unwrap_or_default(),
        stderr: texts.next().unwrap_or_default(),
        took,
    }
}

/// `supervisor status --json --config MANIFEST`, parsed; `None` when it failed.
pub fn status_json(manifest: &Path) -> Option<serde_json::Value> {
    let manifest = manifest.to_str().expect("utf-8 path");
    let output = cli(
        &["status", "--json", "--config", manifest],
        Duration::from_secs(30),
    );
    if output.code != Some(0) {
        return None;
    }
    serde_json::from_str(&output.stdout).ok()
}

/// The `name` entry of a `status --json` object.
pub fn agent_of<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|agent| agent["name"] == name))
        .unwrap_or_else(|| panic!("no agent {name} in {status}"))
}

/// Polls `status --json` until `condition` holds; panics naming `what`.
pub fn wait_for_status(
    manifest: &Path,
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(status) = status_json(manifest) {
            if condition(&status) {
                return status;
            }
            last = Some(status);
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last status: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every agent in `names` is ready in `status`.
pub fn all_ready(status: &serde_json::Value, names: &[&str]) -> bool {
    names
        .iter()
        .all(|name| agent_of(status, name)["state"] == "ready")
}

/// The name of the unprivileged user the multi-user tests act as.
pub const OTHER_USER: &str = "sv-test-other";

/// The uid and gid of [`OTHER_USER`], created with `useradd` if missing.
/// `None` (with the reason printed, so the skip is visible) when this test
/// does not run as root and so cannot act as another user.
pub fn other_user(test: &str) -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED {test}: needs root to create and act as a second user");
        return None;
    }
    let lookup = || {
        nix::unistd::User::from_name(OTHER_USER)
            .ok()
            .flatten()
            .map(|user| (user.uid.as_raw(), user.gid.as_raw()))
    };
    if let Some(ids) = lookup() {
        return Some(ids);
    }
    // Tests run in parallel: a second useradd may fail on the lock or
    // because the first one just made the user; look again either way.
    for _ in 0..50 {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                OTHER_USER,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(ids) = lookup() {
            return Some(ids);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("could not create the test user {OTHER_USER} with useradd");
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (`body` as JSON when given):
/// the status code and the body of the answer. Panics when the server
/// cannot be reached or does not answer within 10 s.
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|error| panic!("connect to 127.0.0.1:{port}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let body = body.unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .unwrap_or_else(|error| panic!("read the answer of {method} {path}: {error}"));
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (code, body)
}
