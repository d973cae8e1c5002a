//! Issue 22: circuit breakers and aggregated health.
//!
//! - The Rust SDK's pool breaker against a real REP server that stops and
//!   comes back: it opens after the failures, refuses at once while open,
//!   half-opens after the recovery timeout (a failed trial opens it again),
//!   and closes on the first successful trial.
//! - Under a real `supervisor up`: `agent-echo-client` calls
//!   `agent-echo-service` through its pool; the service is killed with
//!   SIGKILL (and comes back after its 6 s restart delay): `status` shows
//!   the client degraded naming the service, first as a dependency down,
//!   then with its breaker open ("breaker to `echo-service` open for N s"),
//!   `/metrics` says the same, and once the service is back the client is
//!   healthy again with its breaker closed.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Fixture, agent_of, cli, port, wait_for_status};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use supervisor::transport::{BreakerConfig, BreakerState, PoolConfig, SocketPool, TransportError};

/// An echo REP server bound to `endpoint` until `stop` is set; the socket
/// is closed when it returns, so the endpoint is really gone.
fn serve(endpoint: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let bound = Arc::new(AtomicBool::new(false));
    let signal = bound.clone();
    let server = std::thread::spawn(move || {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::REP).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind(&endpoint).unwrap();
        signal.store(true, Ordering::SeqCst);
        while !stop.load(Ordering::SeqCst) {
            if socket.poll(zmq::POLLIN, 20).unwrap_or(0) > 0 {
                let request = socket.recv_bytes(0).unwrap();
                socket.send(request, 0).unwrap();
            }
        }
    });
    common::wait_until("the echo server to bind", Duration::from_secs(10), || {
        bound.load(Ordering::SeqCst)
    });
    server
}

#[test]
fn breaker_opens_half_opens_and_closes_against_a_server_that_stops_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/echo.sock", dir.path().display());
    let recovery = Duration::from_millis(600);
    let pool = SocketPool::with_config(PoolConfig {
        breaker: Some(BreakerConfig {
            failure_threshold: 2,
            window: Duration::from_secs(30),
            recovery_timeout: recovery,
        }),
        ..PoolConfig::default()
    });
    pool.name_endpoint(&endpoint, "echo");
    let timeout = Duration::from_millis(300);
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(endpoint.clone(), stop.clone());
    assert_eq!(pool.request(&endpoint, b"one", timeout, 0).unwrap(), b"one");
    assert_eq!(pool.breakers().state("echo"), BreakerState::Closed);

    // The server stops: two requests time out, the breaker opens.
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    for _ in 0..2 {
        let error = pool.request(&endpoint, b"two", timeout, 0).unwrap_err();
        assert!(matches!(error, TransportError::Timeout { .. }), "{error}");
    }
    assert_eq!(pool.breakers().state("echo"), BreakerState::Open);
    let report = &pool.breakers().reports()[0];
    assert_eq!(
        (report.target.as_str(), report.state),
        ("echo", BreakerState::Open)
    );

    // Open: refused at once, without waiting for the timeout.
    let started = Instant::now();
    let error = pool.request(&endpoint, b"three", timeout, 0).unwrap_err();
    assert!(
        matches!(error, TransportError::CircuitOpen { ref target, .. } if target == "echo"),
        "{error}"
    );
    assert!(
        started.elapsed() < timeout,
        "an open breaker must not wait: {:?}",
        started.elapsed()
    );

    // After the recovery timeout: half-open; the trial fails (still down),
    // so it opens again.
    std::thread::sleep(recovery + Duration::from_millis(50));
    assert_eq!(pool.breakers().state("echo"), BreakerState::HalfOpen);
    let error = pool.request(&endpoint, b"trial", timeout, 0).unwrap_err();
    assert!(
        matches!(error, TransportError::Timeout { .. }),
        "the trial is a real call: {error}"
    );
    assert_eq!(pool.breakers().state("echo"), BreakerState::Open);

    // The server comes back on the same endpoint: the next trial closes it.
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(endpoint.clone(), stop.clone());
    assert!(
        pool.request(&endpoint, b"early", timeout, 0).is_err(),
        "still open before the timeout"
    );
    std::thread::sleep(recovery + Duration::from_millis(50));
    assert_eq!(pool.breakers().state("echo"), BreakerState::HalfOpen);
    assert_eq!(
        pool.request(&endpoint, b"back", Duration::from_secs(5), 0)
            .unwrap(),
        b"back"
    );
    assert_eq!(pool.breakers().state("echo"), BreakerState::Closed);
    assert_eq!(
        pool.request(&endpoint, b"again", Duration::from_secs(5), 0)
            .unwrap(),
        b"again"
    );
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
}

/// `GET path` on 127.0.0.1:`port`: the body of the answer.
fn http_get(port: u16, path: &str) -> String {
    common::http(port, "GET", path, None).1
}

fn causes(status: &serde_json::Value, name: &str) -> Vec<(String, String, String)> {
    agent_of(status, name)["degraded_by"]
        .as_array()
        .map(|causes| {
            causes
                .iter()
                .map(|cause| {
                    let text = |key: &str| cause[key].as_str().unwrap_or_default().to_string();
                    (text("kind"), text("target"), text("message"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn status_and_metrics_name_the_dependency_down_and_the_open_breaker() {
    let fixture = Fixture::new();
    let (service_port, metrics_port) = (port(), port());
    let bin_dir = std::path::Path::new(common::SUPERVISOR)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
metrics: {{ listen: 127.0.0.1:{metrics_port} }}
agents:
  echo-service:
    command: ["{bin_dir}/agent-echo-service"]
    port: {service_port}
    readiness: sdk
    restart: {{ policy: always, backoff: {{ initial: 6s, max: 6s }} }}
  echo-client:
    command: ["{bin_dir}/agent-echo-client", "--service", "echo-service", "--interval", "100",
              "--timeout-ms", "200", "--retries", "0",
              "--breaker-failures", "2", "--breaker-recovery-ms", "1000"]
    dependencies: [echo-service]
    readiness: sdk
    heartbeat: {{ interval: 200ms, misses: 10 }}
"#
    ));
    let mut up = fixture.up(&manifest, &[]);
    let config = manifest.to_str().unwrap();
    let status_of = |what: &str, condition: &dyn Fn(&serde_json::Value) -> bool| {
        wait_for_status(&manifest, what, Duration::from_secs(60), |status| {
            condition(status)
        })
    };
    let ready = status_of(
        "both agents ready, the client healthy with its breaker closed",
        &|status| {
            let client = agent_of(status, "echo-client");
            common::all_ready(status, &["echo-service", "echo-client"])
                && client["health"] == "ok"
                && client["breakers"][0]["state"] == "closed"
                && client["breakers"][0]["target"] == "echo-service"
        },
    );
    let service_pid = agent_of(&ready, "echo-service")["pid"].as_u64().unwrap() as i32;

    kill(Pid::from_raw(service_pid), Signal::SIGKILL).unwrap();
    let down = status_of("the client degraded by its dependency", &|status| {
        causes(status, "echo-client")
            .iter()
            .any(|(kind, target, _)| kind == "dependency" && target == "echo-service")
    });
    assert_eq!(
        agent_of(&down, "echo-client")["state"],
        "ready",
        "degraded is not a state"
    );
    assert_eq!(agent_of(&down, "echo-client")["health"], "degraded");
    let broken = status_of("the client's breaker to the service open", &|status| {
        causes(status, "echo-client")
            .iter()
            .any(|(kind, target, message)| {
                kind == "breaker"
                    && target == "echo-service"
                    && message.starts_with("breaker to `echo-service` open for ")
            })
    });
    assert_eq!(
        agent_of(&broken, "echo-service")["state"],
        "backing-off",
        "{broken}"
    );

    // The same, for people and for Prometheus.
    let table = cli(&["status", "--config", config], Duration::from_secs(30));
    assert!(
        table.stdout.contains("ready (degraded)")
            && table.stdout.contains("echo-client: degraded: ")
            && table.stdout.contains("breaker to `echo-service`"),
        "{}",
        table.stdout
    );
    // `/metrics` reads the published snapshot, which follows heartbeats
    // with up to a second's delay.
    let mut metrics = String::new();
    common::wait_until(
        "/metrics naming the dependency and the open breaker",
        Duration::from_secs(30),
        || {
            metrics = http_get(metrics_port, "/metrics");
            [
            r#"supervisor_agent_degraded{agent="echo-client"} 1"#,
            r#"supervisor_agent_degraded_cause{agent="echo-client",kind="dependency",target="echo-service"} 1"#,
            r#"supervisor_agent_degraded_cause{agent="echo-client",kind="breaker",target="echo-service"} 1"#,
            r#"supervisor_agent_breaker_state{agent="echo-client",target="echo-service",state="closed"} 0"#,
        ]
        .iter()
        .all(|line| metrics.contains(line))
        },
    );
    let health = http_get(metrics_port, "/health");
    assert!(
        health.contains(r#""status":"degraded""#) && health.contains("echo-client"),
        "{health}"
    );

    // The service comes back after its restart delay; the breaker's next
    // trial succeeds and the client is healthy again.
    let healthy = status_of(
        "the client healthy again after the service's restart",
        &|status| {
            let client = agent_of(status, "echo-client");
            agent_of(status, "echo-service")["state"] == "ready"
                && client["health"] == "ok"
                && client["breakers"][0]["state"] == "closed"
        },
    );
    assert_ne!(
        agent_of(&healthy, "echo-service")["pid"].as_u64().unwrap() as i32,
        service_pid
    );
    common::wait_until(
        "/metrics saying the client is healthy again",
        Duration::from_secs(30),
        || {
            http_get(metrics_port, "/metrics")
                .contains(r#"supervisor_agent_degraded{agent="echo-client"} 0"#)
        },
    );
    let down = cli(&["down", "--config", config], Duration::from_secs(60));
    assert_eq!(down.code, Some(0), "{down:?}");
    assert!(
        up.wait(Duration::from_secs(60)).success(),
        "{}",
        up.output()
    );
}
