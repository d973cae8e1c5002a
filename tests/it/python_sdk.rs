//! The Python SDK (`python/supervisor_sdk`) against the Rust agent endpoint
//! over real sockets: HELLO with the Python process's pid, READY with an
//! advertised endpoint, heartbeats carrying `progress()` payloads, RESOLVE
//! answered, errors (direct and through the `logging` handler) delivered in
//! order, a bad token refused, SIGTERM setting `shutdown_requested`.
//!
//! Needs `python3` with pyzmq (`pip install pyzmq`); fails, never skips,
//! without it. The SDK is imported from `python/` through PYTHONPATH, so it
//! need not be installed.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use supervisor::sdk::AgentState;
use supervisor::transport::{
    AgentEndpoint, EndpointConfig, EndpointEvent, EndpointHandle, Resolution,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// The agent under test; its behaviour is chosen by `MODE`.
const AGENT: &str = r#"
import logging, os, sys
from supervisor_sdk import Agent, RejectedError, Severity

mode = os.environ["MODE"]
agent = Agent.from_env()
if mode == "bad-token":
    try:
        agent.ready()
    except RejectedError as error:
        print("rejected:", error.reason, flush=True)
        sys.exit(3)
    sys.exit(0)
agent.progress(queue_depth=5, in_flight=1, model="v3")
agent.ready(endpoint="tcp://127.0.0.1:41234")
found = agent.resolve("echo")
print("resolved:", found.endpoint, found.state, flush=True)
for index in range(3):
    agent.report_error(f"error {index}", Severity.ERROR, kind="ordered", context={"index": index},
                       correlation_id="job-7")
logging.getLogger("db").addHandler(agent.logging_handler(logging.WARNING))
logging.getLogger("db").info("not forwarded")
logging.getLogger("db").warning("database slow")
print("waiting", flush=True)
agent.wait_for_shutdown(30)
print("shutdown:", agent.shutdown_requested.is_set(), flush=True)
agent.close()
"#;

/// Fails with the command to run when pyzmq is missing.
fn require_pyzmq() {
    let output = Command::new("python3")
        .args(["-c", "import zmq"])
        .output()
        .expect("python3 is needed for the Python SDK tests");
    assert!(
        output.status.success(),
        "the Python SDK tests need pyzmq: run `pip install pyzmq` (or `pip install ./python`)\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Fixture {
    dir: tempfile::TempDir,
    endpoint: EndpointHandle,
    events: mpsc::Receiver<EndpointEvent>,
    runtime: tokio::runtime::Runtime,
}

fn setup() -> Fixture {
    require_pyzmq();
    let dir = tempfile::tempdir().expect("temp dir");
    let (sender, events) = mpsc::channel(10_000);
    let (endpoint, _thread) =
        AgentEndpoint::spawn(&EndpointConfig::in_run_dir(dir.path()), sender, None)
            .expect("endpoint");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    Fixture {
        dir,
        endpoint,
        events,
        runtime,
    }
}

/// A Python agent process; SIGKILLed on drop.
struct PythonAgent(Child);

impl Drop for PythonAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl PythonAgent {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for exit; returns the code and stdout.
    fn finish(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the Python agent did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        if let Some(mut pipe) = self.0.stdout.take() {
            let _ = pipe.read_to_string(&mut stdout);
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status.code(), format!("{stdout}\n--- stderr:\n{stderr}"))
    }
}

impl Fixture {
    /// The next event matching `wanted`, skipping others; panics after WAIT.
    fn wait_for<T>(&mut self, what: &str, mut wanted: impl FnMut(EndpointEvent) -> Option<T>) -> T {
        let events = &mut self.events;
        self.runtime.block_on(async {
            tokio::time::timeout(WAIT, async {
                loop {
                    let event = events.recv().await.expect("endpoint channel open");
                    if let Some(found) = wanted(event) {
                        return found;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        })
    }

    fn spawn(&self, name: &str, token: &str, mode: &str) -> PythonAgent {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
        let script = self.dir.path().join("agent.py");
        std::fs::write(&script, AGENT).expect("write agent script");
        let child = Command::new("python3")
            .arg(&script)
            .env("PYTHONPATH", python)
            .env("SUPERVISOR_ENDPOINT", self.endpoint.endpoint())
            .env("AGENT_NAME", name)
            .env("AGENT_TOKEN", token)
            .env("AGENT_HEARTBEAT_INTERVAL_MS", "50")
            .env("MODE", mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python3");
        PythonAgent(child)
    }
}

#[test]
fn python_agent_speaks_the_protocol_to_the_rust_endpoint() {
    let mut fixture = setup();
    fixture.endpoint.register("py-worker", "secret-1");
    let agent = fixture.spawn("py-worker", "secret-1", "full");
    // One pass over the events, in arrival order: RESOLVE must be answered
    // when it comes, whatever else is awaited.
    let (mut pid, mut advertised, mut ready, mut payload) = (None, None, false, None);
    let (mut records, mut heartbeats) = (Vec::new(), 0);
    while !(ready && payload.is_some() && records.len() >= 4 && heartbeats >= 5) {
        fixture.wait_for("HELLO, READY, payload, 4 errors, 5 heartbeats", |event| {
            match event {
                EndpointEvent::Connected { pid: hello, .. } => pid = Some(hello),
                EndpointEvent::Advertised { endpoint, .. } => advertised = Some(endpoint),
                EndpointEvent::ReportedReady { .. } => ready = true,
                EndpointEvent::HeartbeatReceived { payload: beat, .. } => {
                    heartbeats += 1;
                    if beat.is_some() {
                        payload = beat;
                    }
                }
                EndpointEvent::ResolveRequested { name, reply, .. } => {
                    assert_eq!(name, "echo");
                    reply.answer(Resolution {
                        endpoint: Some("tcp://127.0.0.1:7200".into()),
                        state: AgentState::Ready,
                        instances: Vec::new(),
                    });
                }
                EndpointEvent::ErrorReported { record } => records.push(record),
                EndpointEvent::Rejected { agent, reason } => {
                    panic!("rejected {agent:?}: {reason:?}")
                }
            }
            Some(())
        });
    }
    assert_eq!(pid, Some(Some(agent.pid())), "HELLO carries the Python pid");
    assert_eq!(advertised.as_deref(), Some("tcp://127.0.0.1:41234"));
    let payload = payload.expect("a payload");
    assert_eq!(payload.queue_depth, Some(5));
    assert_eq!(payload.in_flight, Some(1));
    assert!(
        payload
            .last_progress_ms
            .is_some_and(|ms| ms > 1_600_000_000_000)
    );
    assert_eq!(
        payload.custom.get("model").and_then(|v| v.as_str()),
        Some("v3")
    );
    for (index, record) in records[..3].iter().enumerate() {
        assert_eq!(record.message, format!("error {index}"), "errors in order");
        assert_eq!(record.kind, "ordered");
        assert_eq!(record.agent, "py-worker");
        assert_eq!(record.correlation_id.as_deref(), Some("job-7"));
        assert_eq!(record.context["index"], index);
        assert!(record.timestamp.ends_with('Z'), "{}", record.timestamp);
    }
    let logged = &records[3];
    assert_eq!(logged.message, "database slow");
    assert_eq!(logged.kind, "db");
    assert_eq!(logged.severity.to_string(), "warning");
    assert_eq!(
        records.len(),
        4,
        "the INFO record is below the handler's level"
    );
    kill(Pid::from_raw(agent.pid() as i32), Signal::SIGTERM).expect("SIGTERM");
    let (code, output) = agent.finish(WAIT);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("resolved: tcp://127.0.0.1:7200 ready"),
        "{output}"
    );
    assert!(output.contains("shutdown: True"), "{output}");
    assert_eq!(fixture.endpoint.stats().readies, 1);
}

#[test]
fn python_agent_with_a_bad_token_is_rejected() {
    let mut fixture = setup();
    fixture.endpoint.register("py-worker", "secret-1");
    let agent = fixture.spawn("py-worker", "wrong", "bad-token");
    fixture.wait_for("the rejection", |event| match event {
        EndpointEvent::Rejected { agent, .. } if agent.as_deref() == Some("py-worker") => Some(()),
        EndpointEvent::ReportedReady { agent } => panic!("{agent} must not become ready"),
        _ => None,
    });
    let (code, output) = agent.finish(WAIT);
    assert_eq!(code, Some(3), "{output}");
    assert!(output.contains("rejected: bad token"), "{output}");
}
