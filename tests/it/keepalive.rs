//! HTTP probes keep their connection (issue 18): real servers on loopback.
//!
//! Covers `supervisor::health::Prober` against in-test servers that count
//! connections and requests (keep-alive, `Connection: close`, chunked and
//! long bodies, a server that hangs on the second request, one that closes
//! or resets kept connections), Python's `http.server` (HTTP/1.0, closes)
//! and uvicorn (keeps the connection, chunks a body without a length); and
//! `supervisor up` with `fake-agent`, whose liveness probe keeps one
//! connection for [`PROBES_PER_CONNECTION`] probes and starts afresh with a
//! restarted agent.
//!
//! Every await is bounded by `OUTER`; every process a test starts is killed
//! by pid when the test ends.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use supervisor::health::{PROBES_PER_CONNECTION, ProbeError, Prober};
use supervisor::manifest::Probe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::{self, Fixture, wait_until};

/// The timeout given to probes that should pass or fail fast.
const GENEROUS: Duration = Duration::from_secs(5);
/// The timeout given to probes that are expected to time out.
const SHORT: Duration = Duration::from_millis(300);
/// How late a timed-out probe may return: scheduling slack on a busy machine.
const SLACK: Duration = Duration::from_millis(800);
/// The bound on any single await in these tests.
const OUTER: Duration = Duration::from_secs(15);

const OK_KEPT: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

/// What the in-test server does with one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Answer and keep the connection for the next request.
    Keep(&'static str),
    /// Answer, then close (FIN).
    Close(&'static str),
    /// Never answer; hold the connection.
    Hang,
    /// Close without answering (FIN), as a server closing an idle
    /// connection just as the request arrives.
    Drop,
    /// Reset without answering (RST).
    Reset,
}

/// An HTTP server on a loopback port that decides each answer by
/// `rule(connection, request)` (both counted from 0; `request` within its
/// connection) and counts connections that sent a request, and requests.
struct Server {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// `idle_close`: close a kept connection after this long without a request.
    async fn start(rule: fn(usize, usize) -> Reply, idle_close: Option<Duration>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("listener address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (counted_connections, counted_requests) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connections = counted_connections.clone();
                let requests = counted_requests.clone();
                tokio::spawn(serve(stream, rule, idle_close, connections, requests));
            }
        });
        Server {
            port,
            connections,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    rule: fn(usize, usize) -> Reply,
    idle_close: Option<Duration>,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
) {
    let mut connection = None;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    for request in 0.. {
        while !buffer.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = match idle_close {
                Some(idle) if request > 0 => {
                    match tokio::time::timeout(idle, stream.read(&mut chunk)).await {
                        Ok(read) => read,
                        // Idle too long: close, as servers do.
                        Err(_) => return,
                    }
                }
                _ => stream.read(&mut chunk).await,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        let end = buffer
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("a complete head")
            + 4;
        buffer.drain(..end);
        let index = *connection.get_or_insert_with(|| connections.fetch_add(1, Ordering::SeqCst));
        requests.fetch_add(1, Ordering::SeqCst);
        match rule(index, request) {
            Reply::Keep(answer) => {
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Close(answer) => {
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            }
            Reply::Hang => std::future::pending::<()>().await,
            Reply::Drop => return,
            Reply::Reset => {
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                let _ = nix::sys::socket::setsockopt(
                    &stream,
                    nix::sys::socket::sockopt::Linger,
                    &linger,
                );
                return;
            }
        }
    }
}

/// One probe of `prober` under the outer bound, and how long it took.
async fn probe(prober: &mut Prober, timeout: Duration) -> (Result<(), ProbeError>, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(OUTER, prober.probe(timeout))
        .await
        .expect("the probe returned within the outer bound");
    (result, started.elapsed())
}

fn http(url: &str) -> Prober {
    Prober::new(Probe::Http {
        url: url.to_string(),
    })
}

#[tokio::test]
async fn one_connection_serves_n_probes_then_a_fresh_one_is_opened() {
    let server = Server::start(|_, _| Reply::Keep(OK_KEPT), None).await;
    let mut prober = http(&server.url());
    let n = PROBES_PER_CONNECTION as usize;
    for done in 1..=(2 * n + n / 2) {
        let (result, _) = probe(&mut prober, GENEROUS).await;
        result.expect("a 200 on a kept connection passes");
        assert_eq!(server.requests(), done);
        // Probes 1..=N on the first connection, N+1..=2N on the second ...
        assert_eq!(
            server.connections(),
            done.div_ceil(n),
            "after {done} probes"
        );
    }
}

#[tokio::test]
async fn connection_close_answers_get_a_fresh_connection_every_probe() {
    let server = Server::start(
        |_, _| Reply::Close("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
        None,
    )
    .await;
    let mut prober = http(&server.url());
    for done in 1..=4 {
        probe(&mut prober, GENEROUS)
            .await
            .0
            .expect("a closing 200 passes");
        assert_eq!(server.connections(), done);
    }
}

#[tokio::test]
async fn a_chunked_answer_is_read_to_its_end_and_the_connection_kept() {
    let server = Server::start(
        |_, _| {
            Reply::Keep(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n7;x=y\r\npedia i\r\n0\r\nX-Trailer: 1\r\n\r\n",
            )
        },
        None,
    )
    .await;
    let mut prober = http(&server.url());
    for _ in 0..5 {
        probe(&mut prober, GENEROUS)
            .await
            .0
            .expect("a chunked 200 passes");
    }
    assert_eq!(server.requests(), 5);
    assert_eq!(server.connections(), 1, "the chunked body was consumed");
}

#[tokio::test]
async fn a_body_longer_than_the_buffer_is_discarded_and_the_connection_kept() {
    fn long_body(_: usize, _: usize) -> Reply {
        static ANSWER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        Reply::Keep(ANSWER.get_or_init(|| {
            let body = "x".repeat(20_000);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }))
    }
    let server = Server::start(long_body, None).await;
    let mut prober = http(&server.url());
    for _ in 0..5 {
        probe(&mut prober, GENEROUS)
            .await
            .0
            .expect("a long 200 passes");
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_bad_status_on_a_kept_connection_fails_and_the_next_probe_is_fresh() {
    let server = Server::start(
        |connection, request| match (connection, request) {
            (0, 1) => {
                Reply::Keep("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
            }
            _ => Reply::Keep(OK_KEPT),
        },
        None,
    )
    .await;
    let mut prober = http(&server.url());
    probe(&mut prober, GENEROUS).await.0.expect("first 200");
    match probe(&mut prober, GENEROUS).await.0 {
        Err(ProbeError::HttpStatus { status: 503, .. }) => {}
        other => panic!("expected status 503, got {other:?}"),
    }
    probe(&mut prober, GENEROUS).await.0.expect("third 200");
    assert_eq!(
        server.connections(),
        2,
        "a fresh connection after a failure"
    );
}

/// Hang detection stays: a server that accepts the next request on a kept
/// connection and never answers fails that probe at its timeout.
#[tokio::test]
async fn a_server_hanging_on_the_second_request_fails_at_the_timeout() {
    let server = Server::start(
        |connection, request| match (connection, request) {
            (0, 1) => Reply::Hang,
            _ => Reply::Keep(OK_KEPT),
        },
        None,
    )
    .await;
    let mut prober = http(&server.url());
    probe(&mut prober, SHORT)
        .await
        .0
        .expect("the first request is answered");
    let (result, elapsed) = probe(&mut prober, SHORT).await;
    match result {
        Err(ProbeError::Timeout { after, .. }) => assert_eq!(after, SHORT),
        other => panic!("expected a timeout on the kept connection, got {other:?}"),
    }
    assert!(elapsed >= SHORT, "returned after {elapsed:?}");
    assert!(elapsed < SHORT + SLACK, "returned after {elapsed:?}");
    assert_eq!(server.connections(), 1, "a timeout is not retried");
    probe(&mut prober, SHORT)
        .await
        .0
        .expect("a fresh connection is answered");
    assert_eq!(server.connections(), 2);
}

/// A kept connection that the server closed (or reset) as the request
/// arrived is retried at once on a fresh connection: not a failure.
#[tokio::test]
async fn a_kept_connection_closed_before_the_answer_is_retried_on_a_fresh_one() {
    for (name, rule) in [
        (
            "closed",
            (|connection, request| match (connection, request) {
                (0, 1) => Reply::Drop,
                _ => Reply::Keep(OK_KEPT),
            }) as fn(usize, usize) -> Reply,
        ),
        ("reset", |connection, request| match (connection, request) {
            (0, 1) => Reply::Reset,
            _ => Reply::Keep(OK_KEPT),
        }),
    ] {
        let server = Server::start(rule, None).await;
        let mut prober = http(&server.url());
        for probes in 1..=3 {
            let (result, _) = probe(&mut prober, GENEROUS).await;
            result.unwrap_or_else(|error| panic!("{name}: probe {probes} failed: {error}"));
        }
        // 1st on connection 0; 2nd sent on it (dropped), retried on 1; 3rd on 1.
        assert_eq!(server.requests(), 4, "{name}");
        assert_eq!(server.connections(), 2, "{name}");
    }
}

/// The retry is for kept connections only: a fresh connection closed
/// without an answer is a failure.
#[tokio::test]
async fn a_fresh_connection_closed_without_an_answer_fails() {
    let server = Server::start(|_, _| Reply::Drop, None).await;
    let mut prober = http(&server.url());
    match probe(&mut prober, GENEROUS).await.0 {
        Err(ProbeError::BadReply { reason, .. }) => {
            assert!(reason.contains("without a reply"), "{reason}")
        }
        other => panic!("expected a bad reply, got {other:?}"),
    }
    assert_eq!(server.requests(), 1, "no retry on a fresh connection");
}

/// A server that closes idle kept connections sooner than the probe
/// interval: every probe passes, each on a fresh connection.
#[tokio::test]
async fn a_server_closing_idle_connections_quickly_is_not_failed() {
    let server = Server::start(|_, _| Reply::Keep(OK_KEPT), Some(Duration::from_millis(30))).await;
    let mut prober = http(&server.url());
    for probes in 1..=5 {
        let (result, _) = probe(&mut prober, GENEROUS).await;
        result.unwrap_or_else(|error| panic!("probe {probes} failed: {error}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(
        server.requests(),
        5,
        "no request was lost to a closed connection"
    );
    assert_eq!(server.connections(), 5);
}

/// An agent that stops accepting connections while its kept one still
/// answers is caught within `PROBES_PER_CONNECTION` probes.
#[tokio::test]
async fn an_agent_that_stops_accepting_is_caught_within_n_probes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (counted_connections, counted_requests) = (connections.clone(), requests.clone());
    // Accepts one connection, then closes its listener: new connections are refused.
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        drop(listener);
        serve(
            stream,
            |_, _| Reply::Keep(OK_KEPT),
            None,
            counted_connections,
            counted_requests,
        )
        .await;
    });
    let mut prober = http(&format!("http://127.0.0.1:{port}/health"));
    let mut failed_at = None;
    for probes in 1..=(2 * PROBES_PER_CONNECTION) {
        if let Err(error) = probe(&mut prober, GENEROUS).await.0 {
            assert!(matches!(error, ProbeError::Refused { .. }), "{error}");
            failed_at = Some(probes);
            break;
        }
    }
    assert_eq!(failed_at, Some(PROBES_PER_CONNECTION + 1));
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    server.abort();
}

// ------------------------------------------------------------ real servers

/// A server process, killed by pid when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_module(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Probes `url` until it passes (the server is starting), within `OUTER`.
async fn wait_serving(url: &str) {
    let deadline = Instant::now() + OUTER;
    loop {
        if supervisor::health::probe(
            &Probe::Http {
                url: url.to_string(),
            },
            GENEROUS,
        )
        .await
        .is_ok()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn python_http_server_http_1_0_passes_every_probe() {
    if !python_module("http.server") {
        common::corpus::skip(
            "keepalive::python_http_server_http_1_0_passes_every_probe",
            "python3 (http.server) is not installed",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("health"), "ok\n").expect("write health file");
    let port = common::port();
    let _server = Process(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server"),
    );
    let url = format!("http://127.0.0.1:{port}/health");
    wait_serving(&url).await;
    let mut prober = http(&url);
    for probes in 1..=15 {
        let (result, _) = probe(&mut prober, GENEROUS).await;
        result.unwrap_or_else(|error| panic!("probe {probes} of http.server failed: {error}"));
    }
}

const UVICORN_APP: &str = r#"
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain")]
    if scope["path"] == "/length":
        headers.append((b"content-length", b"2"))
    # Without a length, uvicorn sends the body chunked.
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok", "more_body": scope["path"] != "/length"})
    if scope["path"] != "/length":
        await send({"type": "http.response.body", "body": b" and more"})
"#;

/// The client ports of `GET path` lines in uvicorn's access log.
fn client_ports(log: &std::path::Path, path: &str) -> Vec<u16> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|line| line.contains(&format!("\"GET {path} HTTP/1.1\" 200")))
        .filter_map(|line| {
            let address = line
                .split_whitespace()
                .find(|word| word.starts_with("127.0.0.1:"))?;
            address.trim_start_matches("127.0.0.1:").parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn uvicorn_keeps_the_connection_with_a_length_and_chunked() {
    if !python_module("uvicorn") {
        common::corpus::skip(
            "keepalive::uvicorn_keeps_the_connection_with_a_length_and_chunked",
            "the Python package uvicorn is not installed (.ci/run installs it)",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("probe_app.py"), UVICORN_APP).expect("write app");
    let log = dir.path().join("uvicorn.log");
    let port = common::port();
    let _server = Process(
        Command::new("python3")
            .args([
                "-m",
                "uvicorn",
                "probe_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--log-level",
                "info",
            ])
            .current_dir(dir.path())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start uvicorn"),
    );
    wait_serving(&format!("http://127.0.0.1:{port}/ready")).await;
    for path in ["/length", "/chunked"] {
        let mut prober = http(&format!("http://127.0.0.1:{port}{path}"));
        for probes in 1..=5 {
            let (result, _) = probe(&mut prober, GENEROUS).await;
            result
                .unwrap_or_else(|error| panic!("probe {probes} of uvicorn {path} failed: {error}"));
        }
        let mut ports = Vec::new();
        wait_until(
            &format!("uvicorn to log 5 requests of {path}"),
            Duration::from_secs(10),
            || {
                ports = client_ports(&log, path);
                ports.len() >= 5
            },
        );
        assert!(
            ports.iter().all(|port| *port == ports[0]),
            "{path}: uvicorn saw the probes from several connections: {ports:?}"
        );
    }
}

// ------------------------------------------------- the supervisor, end to end

/// `supervisor up` with a fake agent under HTTP liveness every 100 ms: the
/// agent sees one connection per `PROBES_PER_CONNECTION` requests, and
/// after a kill -9 the new instance gets fresh connections and passes.
#[test]
fn liveness_keeps_one_connection_per_n_probes_and_starts_afresh_after_a_restart() {
    let fixture = Fixture::new();
    let port = common::port();
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  kept:
    command: ["FAKE", "--record-http"]
    port: {port}
    readiness: {{ tcp: {port}, timeout: 20s, interval: 20ms }}
    liveness: {{ http: "http://127.0.0.1:{port}/health", interval: 100ms, timeout: 1s, failures: 2 }}
    restart: {{ policy: always, backoff: {{ initial: 100ms, max: 1s, multiplier: 2 }} }}
"#
    ));
    let up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready", OUTER);
    let n = PROBES_PER_CONNECTION as usize;
    let first = fixture.first("start", "kept").pid;
    let of = |kind: &str, pid: u32| {
        fixture
            .records_of(kind, "kept")
            .into_iter()
            .filter(|record| record.pid == pid)
            .count()
    };
    wait_until("25 liveness requests", OUTER, || {
        of("http-request", first) >= 25
    });
    let (requests, connections) = (of("http-request", first), of("http-connection", first));
    assert!(
        connections >= requests / n && connections <= requests.div_ceil(n) + 1,
        "{requests} requests came on {connections} connections"
    );

    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill -9 the agent");
    wait_until("a second start", OUTER, || {
        fixture.records_of("start", "kept").len() >= 2
    });
    let second = fixture.records_of("start", "kept")[1].pid;
    wait_until("15 liveness requests to the new instance", OUTER, || {
        of("http-request", second) >= 15
    });
    assert!(of("http-connection", second) >= 1);
    assert_eq!(
        fixture.records_of("start", "kept").len(),
        2,
        "the new instance was restarted: {}",
        up.output()
    );
    // A probe that raced the kill may have failed once; none reached the
    // two failures that mean "hung".
    assert!(
        !up.output().contains("hung: liveness probe failed"),
        "{}",
        up.output()
    );
}

/// Hang detection on a kept connection, end to end: an agent that stops
/// answering (its kept connection stays open) is replaced after about
/// `interval` x `failures` plus at most one interval.
#[test]
fn a_hung_agent_on_a_kept_connection_is_replaced_within_the_bound() {
    let fixture = Fixture::new();
    let port = common::port();
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  hangs:
    command: ["FAKE", "--record-http", "--hang-after", "2s"]
    port: {port}
    readiness: {{ tcp: {port}, timeout: 20s, interval: 20ms }}
    liveness: {{ http: "http://127.0.0.1:{port}/health", interval: 300ms, timeout: 300ms, failures: 3 }}
    restart: {{ policy: always, backoff: {{ initial: 100ms, max: 1s, multiplier: 2 }} }}
"#
    ));
    let up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready", OUTER);
    wait_until("a second start of `hangs`", OUTER, || {
        fixture.records_of("start", "hangs").len() >= 2
    });
    let starts = fixture.records_of("start", "hangs");
    let first = starts[0].pid;
    let of = |kind: &str| {
        fixture
            .records_of(kind, "hangs")
            .into_iter()
            .filter(|record| record.pid == first)
            .count()
    };
    assert!(
        of("http-connection") < of("http-request"),
        "the probes before the hang shared connections: {} connections, {} requests",
        of("http-connection"),
        of("http-request")
    );
    let hung_at = starts[0].nanos + 2_000_000_000;
    let replaced_after = Duration::from_nanos((starts[1].nanos - hung_at) as u64);
    eprintln!("hung agent replaced {replaced_after:?} after the hang");
    // Bound: 3 x 300 ms + one interval = 1.2 s; the rest is the stop, the
    // 100 ms backoff and the spawn on a busy machine.
    assert!(
        replaced_after < Duration::from_millis(1200) + Duration::from_secs(2),
        "replaced {replaced_after:?} after the hang"
    );
    assert!(
        up.output()
            .contains("hung: liveness probe failed 3 times in a row"),
        "{}",
        up.output()
    );
}
