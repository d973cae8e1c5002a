//! The SDK's async API (cargo feature `async`) over real sockets: READY,
//! RESOLVE and pooled requests awaited on a single-threaded Tokio runtime
//! while the same thread keeps serving other tasks (a blocking call there
//! would starve them and time out), rejections and timeouts surfacing as the
//! blocking calls report them, and the futures being `Send`.

#![cfg(feature = "async")]

use std::sync::Arc;
use std::time::Duration;

use supervisor::sdk::{Agent, AgentSettings, AgentState, SdkError, SocketPool};
use supervisor::transport::{
    AgentEndpoint, EndpointConfig, EndpointEvent, EndpointHandle, Resolution, TransportError,
};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    endpoint: EndpointHandle,
    events: mpsc::Receiver<EndpointEvent>,
}

fn setup() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let (sender, events) = mpsc::channel(10_000);
    let (endpoint, _thread) =
        AgentEndpoint::spawn(&EndpointConfig::in_run_dir(dir.path()), sender, None)
            .expect("endpoint");
    Fixture {
        _dir: dir,
        endpoint,
        events,
    }
}

impl Fixture {
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

/// The next event matching `wanted`, skipping others; panics after WAIT.
async fn wait_for<T>(
    events: &mut mpsc::Receiver<EndpointEvent>,
    what: &str,
    mut wanted: impl FnMut(EndpointEvent) -> Option<T>,
) -> T {
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
}

/// Bounds `future` by WAIT, naming what was awaited.
async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test(flavor = "current_thread")]
async fn ready_and_resolve_are_awaited_without_blocking_the_runtime() {
    let mut fixture = setup();
    fixture.endpoint.register("client", "token");
    let agent = fixture.agent("client", "token");

    bounded("READY acknowledged", agent.ready_async())
        .await
        .expect("READY acknowledged");
    wait_for(&mut fixture.events, "READY", |event| match event {
        EndpointEvent::ReportedReady { agent } if agent == "client" => Some(()),
        _ => None,
    })
    .await;

    // The answer to RESOLVE comes from this same thread: if resolve_async
    // blocked it, nobody would answer and the wait would time out.
    let events = &mut fixture.events;
    let answering = async {
        for _ in 0..2 {
            let (name, reply) = wait_for(events, "RESOLVE", |event| match event {
                EndpointEvent::ResolveRequested { agent, name, reply } => {
                    assert_eq!(agent, "client");
                    Some((name, reply))
                }
                _ => None,
            })
            .await;
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
    };
    let asking = async {
        let found = agent.resolve_async("echo").await;
        let missing = agent.resolve_async("ghost").await;
        (found, missing)
    };
    let ((found, missing), ()) = bounded("both RESOLVE answers", async {
        tokio::join!(asking, answering)
    })
    .await;
    let found = found.expect("echo resolved");
    assert_eq!(found.endpoint.as_deref(), Some("tcp://127.0.0.1:7200"));
    assert_eq!(found.state, AgentState::Ready);
    assert!(
        matches!(missing, Err(SdkError::NotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn ready_at_async_advertises_the_endpoint_and_rejections_are_errors() {
    let mut fixture = setup();
    fixture.endpoint.register("service", "right");
    let agent = fixture.agent("service", "right");
    bounded(
        "READY acknowledged",
        agent.ready_at_async("tcp://127.0.0.1:41234"),
    )
    .await
    .expect("READY acknowledged");
    let endpoint = wait_for(
        &mut fixture.events,
        "the advertised endpoint",
        |event| match event {
            EndpointEvent::Advertised { agent, endpoint } if agent == "service" => Some(endpoint),
            EndpointEvent::ReportedReady { .. } => panic!("READY before the endpoint"),
            _ => None,
        },
    )
    .await;
    assert_eq!(endpoint, "tcp://127.0.0.1:41234");

    let impostor = fixture.agent("service", "wrong");
    match bounded("the rejection", impostor.ready_async()).await {
        Err(SdkError::Transport(TransportError::Rejected { reason, .. })) => {
            assert_eq!(reason, "bad token")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // No shutdown was requested: the wait ends with its timeout.
    assert!(
        !agent
            .wait_for_shutdown_async(Some(Duration::from_millis(20)))
            .await
    );
}

/// An echo REP server on `endpoint` (its own context and thread); answers
/// `count` requests.
fn echo_server(endpoint: &str, count: usize) -> std::thread::JoinHandle<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::REP).unwrap();
    socket.set_linger(0).unwrap();
    socket.bind(endpoint).unwrap();
    std::thread::spawn(move || {
        for _ in 0..count {
            let request = socket.recv_bytes(0).unwrap();
            socket.send(request, 0).unwrap();
        }
    })
}

#[tokio::test(flavor = "current_thread")]
async fn pooled_requests_are_awaited_while_the_runtime_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/echo.sock", dir.path().display());
    let server = echo_server(&endpoint, 20);
    let pool = SocketPool::new();
    for index in 0..20 {
        let message = format!("m{index}");
        let reply = bounded(
            "a pooled reply",
            pool.request_async(&endpoint, message.as_bytes(), Duration::from_secs(5), 0),
        )
        .await
        .expect("pooled reply");
        assert_eq!(reply, message.as_bytes());
    }
    server.join().unwrap();
    let stats = pool.stats();
    assert_eq!((stats.created, stats.reused), (1, 19), "{stats:?}");

    // Nobody answers here: while the request waits out its attempts, a timer
    // on the same (single) runtime thread keeps ticking.
    let silent = format!("ipc://{}/silent.sock", dir.path().display());
    let context = zmq::Context::new();
    let deaf = context.socket(zmq::REP).unwrap();
    deaf.set_linger(0).unwrap();
    deaf.bind(&silent).unwrap();
    let ticking = async {
        let mut ticks = 0;
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        for _ in 0..10 {
            interval.tick().await;
            ticks += 1;
        }
        ticks
    };
    let request = pool.request_async(&silent, b"hello?", Duration::from_millis(150), 1);
    let (outcome, ticks) = bounded("the timed-out request", async {
        tokio::join!(request, ticking)
    })
    .await;
    assert_eq!(ticks, 10);
    assert!(
        matches!(outcome, Err(TransportError::Timeout { attempts: 2, .. })),
        "{outcome:?}"
    );
    assert_eq!(pool.stats().discarded, 2, "timed-out REQs are discarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_run_in_spawned_tasks() {
    let mut fixture = setup();
    fixture.endpoint.register("worker", "token");
    let agent = Arc::new(fixture.agent("worker", "token"));
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/echo.sock", dir.path().display());
    let server = echo_server(&endpoint, 8);
    // tokio::spawn needs Send futures: this compiles only if they are.
    let tasks: Vec<_> = (0..8)
        .map(|index| {
            let agent = agent.clone();
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let message = format!("task-{index}");
                let reply = agent
                    .pool()
                    .request_async(&endpoint, message.as_bytes(), Duration::from_secs(5), 0)
                    .await
                    .expect("pooled reply");
                assert_eq!(reply, message.as_bytes());
            })
        })
        .collect();
    let ready = tokio::spawn({
        let agent = agent.clone();
        async move { agent.ready_async().await }
    });
    for task in tasks {
        bounded("a request task", task).await.unwrap();
    }
    bounded("the READY task", ready)
        .await
        .unwrap()
        .expect("READY acknowledged");
    wait_for(&mut fixture.events, "READY", |event| match event {
        EndpointEvent::ReportedReady { agent } if agent == "worker" => Some(()),
        _ => None,
    })
    .await;
    server.join().unwrap();
}
