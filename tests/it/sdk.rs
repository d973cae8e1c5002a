//! The agent endpoint and the SDK over real sockets: HELLO/READY/heartbeats
//! delivered with payloads, bad tokens and unknown agents rejected and
//! counted, malformed and oversized messages refused, RESOLVE answered
//! through its reply, and a real agent process handling SIGTERM.

use std::time::Duration;

use supervisor::sdk::{Agent, AgentSettings, AgentState, HeartbeatPayload, SdkError};
use supervisor::transport::{
    AgentEndpoint, EndpointConfig, EndpointEvent, EndpointHandle, Resolution, TransportError,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    endpoint: EndpointHandle,
    events: mpsc::Receiver<EndpointEvent>,
    runtime: tokio::runtime::Runtime,
}

fn setup() -> Fixture {
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
        _dir: dir,
        endpoint,
        events,
        runtime,
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

    fn agent(&self, name: &str, token: &str) -> Agent {
        Agent::connect(AgentSettings {
            name: name.into(),
            endpoint: self.endpoint.endpoint().into(),
            token: token.into(),
            heartbeat_interval: Duration::from_millis(50),
            call_timeout: Duration::from_secs(5),
        })
        .expect("agent connects")
    }
}

#[test]
fn hello_ready_and_heartbeats_with_payload_are_delivered() {
    let mut fixture = setup();
    fixture.endpoint.register("worker", "secret-1");
    let agent = fixture.agent("worker", "secret-1");
    let pid = fixture.wait_for("HELLO", |event| match event {
        EndpointEvent::Connected { agent, pid } if agent == "worker" => Some(pid),
        _ => None,
    });
    assert_eq!(pid, Some(std::process::id()));
    agent.ready().expect("READY acknowledged");
    fixture.wait_for("READY", |event| match event {
        EndpointEvent::ReportedReady { agent } => Some(agent),
        _ => None,
    });
    agent.progress(HeartbeatPayload {
        queue_depth: Some(5),
        in_flight: Some(2),
        ..HeartbeatPayload::default()
    });
    let payload = fixture.wait_for("a heartbeat with the payload", |event| match event {
        EndpointEvent::HeartbeatReceived {
            agent,
            payload: Some(payload),
            ..
        } if agent == "worker" && payload.queue_depth == Some(5) => Some(payload),
        _ => None,
    });
    assert_eq!(payload.in_flight, Some(2));
    assert!(
        payload.last_progress_ms.is_some(),
        "progress() stamps the time"
    );
    let stats = fixture.endpoint.stats();
    assert!(stats.heartbeats >= 1 && stats.readies == 1, "{stats:?}");
    assert_eq!(stats.rejected_bad_token + stats.rejected_unknown_agent, 0);
}

#[test]
fn wrong_token_and_unknown_agent_are_rejected_and_counted() {
    let mut fixture = setup();
    fixture.endpoint.register("worker", "right");
    let impostor = fixture.agent("worker", "wrong");
    match impostor.ready() {
        Err(SdkError::Transport(TransportError::Rejected { reason, .. })) => {
            assert_eq!(reason, "bad token")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let stranger = fixture.agent("stranger", "anything");
    assert!(stranger.ready().is_err());
    fixture.wait_for("the rejection event", |event| match event {
        EndpointEvent::Rejected {
            agent: Some(agent), ..
        } if agent == "stranger" => Some(()),
        EndpointEvent::ReportedReady { agent } => panic!("{agent} must not become ready"),
        _ => None,
    });
    let stats = fixture.endpoint.stats();
    assert!(stats.rejected_bad_token >= 1, "{stats:?}");
    assert!(stats.rejected_unknown_agent >= 1, "{stats:?}");
    assert_eq!(stats.readies, 0);
    // Heartbeats of the impostor are rejected too, and the SDK counts the rejections.
    std::thread::sleep(Duration::from_millis(200));
    assert!(impostor.link_stats().expect("supervised").rejections >= 1);

    // Unregistering refuses a formerly good agent.
    fixture.endpoint.register("late", "token");
    let late = fixture.agent("late", "token");
    late.ready().expect("registered agent is accepted");
    fixture.endpoint.unregister("late");
    assert!(late.ready().is_err());
}

#[test]
fn malformed_and_oversized_messages_are_refused_and_counted() {
    let fixture = setup();
    let context = zmq::Context::new();
    let dealer = context.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.set_rcvtimeo(10_000).unwrap();
    dealer.connect(fixture.endpoint.endpoint()).unwrap();
    let exchange = |frames: Vec<Vec<u8>>| -> String {
        dealer.send_multipart(frames, 0).unwrap();
        let reply = dealer.recv_multipart(0).expect("a rejection reply");
        String::from_utf8(reply.last().unwrap().clone()).unwrap()
    };
    assert!(exchange(vec![vec![], b"{not json".to_vec()]).contains("malformed"));
    assert!(
        exchange(vec![
            vec![],
            br#"{"v":9,"type":"ready","agent":"a","token":"t"}"#.to_vec()
        ])
        .contains("version")
    );
    assert!(exchange(vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]).contains("malformed"));
    let huge = format!(
        r#"{{"v":1,"type":"heartbeat","agent":"a","token":"t","payload":{{"custom":{{"blob":"{}"}}}}}}"#,
        "x".repeat(70_000)
    );
    assert!(exchange(vec![vec![], huge.into_bytes()]).contains("too large"));
    let stats = fixture.endpoint.stats();
    assert_eq!(stats.rejected_malformed, 3, "{stats:?}");
    assert_eq!(stats.rejected_oversized, 1, "{stats:?}");
}

#[test]
fn resolve_is_answered_through_the_reply_handle() {
    let mut fixture = setup();
    fixture.endpoint.register("client", "token");
    let agent = fixture.agent("client", "token");
    let asking = std::thread::spawn(move || {
        let found = agent.resolve("echo");
        let missing = agent.resolve("ghost");
        (found, missing)
    });
    for _ in 0..2 {
        let (name, reply) = fixture.wait_for("RESOLVE", |event| match event {
            EndpointEvent::ResolveRequested { agent, name, reply } => {
                assert_eq!(agent, "client");
                Some((name, reply))
            }
            _ => None,
        });
        if name == "echo" {
            reply.answer(Resolution {
                endpoint: Some("tcp://127.0.0.1:7200".into()),
                state: AgentState::Ready,
                instances: Vec::new(),
            });
        } else {
            drop(reply); // dropping answers "not found"
        }
    }
    let (found, missing) = asking.join().unwrap();
    let found = found.expect("echo resolved");
    assert_eq!(found.endpoint.as_deref(), Some("tcp://127.0.0.1:7200"));
    assert_eq!(found.state, AgentState::Ready);
    assert!(matches!(missing, Err(SdkError::NotFound { .. })));
}

#[test]
fn a_real_agent_becomes_ready_beats_and_stops_on_sigterm() {
    let mut fixture = setup();
    fixture.endpoint.register("worker", "tok");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agent-worker"))
        .env("SUPERVISOR_ENDPOINT", fixture.endpoint.endpoint())
        .env("AGENT_NAME", "worker")
        .env("AGENT_TOKEN", "tok")
        .env("AGENT_HEARTBEAT_INTERVAL_MS", "50")
        .spawn()
        .expect("spawn agent-worker");
    fixture.wait_for("the worker's READY", |event| match event {
        EndpointEvent::ReportedReady { agent } if agent == "worker" => Some(()),
        _ => None,
    });
    fixture.wait_for("a progress heartbeat", |event| match event {
        EndpointEvent::HeartbeatReceived {
            payload: Some(payload),
            ..
        } if payload.last_progress_ms.is_some() => Some(()),
        _ => None,
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn from_env_outside_a_supervisor_names_the_missing_variable() {
    // The test harness is not started by a supervisor.
    if std::env::var("SUPERVISOR_ENDPOINT").is_ok() {
        return;
    }
    let error = Agent::from_env().unwrap_err();
    assert!(error.to_string().contains("SUPERVISOR_ENDPOINT"), "{error}");
    let agent = Agent::from_env_or_standalone("by-hand");
    assert!(!agent.is_supervised());
}

#[test]
fn ready_at_advertises_the_endpoint_before_readiness() {
    let mut fixture = setup();
    fixture.endpoint.register("service", "tok");
    let agent = fixture.agent("service", "tok");
    agent
        .ready_at("tcp://127.0.0.1:41234")
        .expect("READY acknowledged");
    let endpoint = fixture.wait_for("the advertised endpoint", |event| match event {
        EndpointEvent::Advertised { agent, endpoint } if agent == "service" => Some(endpoint),
        EndpointEvent::ReportedReady { .. } => panic!("READY before the endpoint"),
        _ => None,
    });
    assert_eq!(endpoint, "tcp://127.0.0.1:41234");
    fixture.wait_for("READY", |event| match event {
        EndpointEvent::ReportedReady { agent } if agent == "service" => Some(()),
        _ => None,
    });
}

/// A flood of garbage and forged messages from one peer (bad tokens, unknown
/// agents, unknown message kinds, malformed frames) is rejected and counted,
/// and an honest agent is still served meanwhile (issue 6, wire input).
#[test]
fn a_flood_of_bad_messages_does_not_stop_an_honest_agent() {
    let mut fixture = setup();
    fixture.endpoint.register("honest", "good-token");
    fixture.endpoint.register("victim", "victim-token");
    let endpoint = fixture.endpoint.endpoint().to_string();
    const FLOOD: usize = 20_000;
    let flooder = std::thread::spawn(move || {
        let context = zmq::Context::new();
        let dealer = context.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        dealer.set_sndhwm(0).unwrap();
        dealer.connect(&endpoint).unwrap();
        let shapes: [&[u8]; 4] = [
            br#"{"v":1,"type":"heartbeat","agent":"victim","token":"forged"}"#,
            br#"{"v":1,"type":"ready","agent":"nobody","token":"t"}"#,
            br#"{"v":1,"type":"launch_missiles","agent":"victim","token":"victim-token"}"#,
            b"\xff\xfe not json",
        ];
        for index in 0..FLOOD {
            dealer
                .send_multipart([&b""[..], shapes[index % shapes.len()]], 0)
                .unwrap();
        }
        // Stay connected until the endpoint has read everything.
        std::thread::sleep(Duration::from_secs(2));
    });
    // Meanwhile the honest agent gets its READY through.
    let agent = fixture.agent("honest", "good-token");
    let started = std::time::Instant::now();
    agent.ready().expect("READY acknowledged during the flood");
    let took = started.elapsed();
    fixture.wait_for("the honest READY", |event| match event {
        EndpointEvent::ReportedReady { agent, .. } if agent == "honest" => Some(()),
        _ => None,
    });
    flooder.join().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stats = fixture.endpoint.stats();
        let rejected =
            stats.rejected_bad_token + stats.rejected_unknown_agent + stats.rejected_malformed;
        if rejected >= FLOOD as u64 {
            assert_eq!(stats.rejected_bad_token, (FLOOD / 4) as u64, "{stats:?}");
            assert_eq!(
                stats.rejected_unknown_agent,
                (FLOOD / 4) as u64,
                "{stats:?}"
            );
            assert_eq!(
                stats.rejected_malformed,
                (FLOOD / 2) as u64,
                "unknown kinds and garbage: {stats:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every bad message was counted: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every heartbeat that got through is the honest agent's own.
    while let Ok(event) = fixture.events.try_recv() {
        if let EndpointEvent::HeartbeatReceived { agent, .. } = &event {
            assert_eq!(agent, "honest", "a forged heartbeat was accepted");
        }
    }
    eprintln!("flood: READY acknowledged in {took:?} while {FLOOD} bad messages arrived");
}
