//! `SocketPool` against real servers: a REQ whose request timed out is never
//! handed out again (a server that stops answering), lazy-pirate requests
//! recover when the server comes back, and the limits and stats hold under
//! concurrent use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use supervisor::transport::{PoolConfig, SocketKind, SocketPool, TransportError};

/// An echo REP server on `endpoint` that answers while `answering` is true
/// and simply stops reading otherwise; ends when `stop` is set.
fn echo_server(
    endpoint: &str,
    answering: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::REP).unwrap();
    socket.set_linger(0).unwrap();
    socket.bind(endpoint).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if !answering.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            // Checked after the poll: a request that arrived after the switch
            // to silence is never read.
            if socket.poll(zmq::POLLIN, 20).unwrap_or(0) > 0 && answering.load(Ordering::SeqCst) {
                let request = socket.recv_bytes(0).unwrap();
                socket.send(request, 0).unwrap();
            }
        }
    })
}

#[test]
fn pool_never_returns_a_req_whose_request_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/echo.sock", dir.path().display());
    let answering = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let server = echo_server(&endpoint, answering.clone(), stop.clone());
    let pool = SocketPool::new();
    let reply = pool
        .request(&endpoint, b"one", Duration::from_secs(5), 0)
        .unwrap();
    assert_eq!(reply, b"one");
    assert_eq!(pool.stats().idle, 1);

    answering.store(false, Ordering::SeqCst);
    let error = pool
        .request(&endpoint, b"two", Duration::from_millis(100), 2)
        .unwrap_err();
    assert!(
        matches!(error, TransportError::Timeout { attempts: 3, .. }),
        "{error}"
    );
    let stats = pool.stats();
    assert_eq!(
        stats.discarded, 3,
        "every timed-out REQ is discarded: {stats:?}"
    );
    assert_eq!((stats.idle, stats.in_use), (0, 0), "{stats:?}");

    // Back to answering: the next request gets a fresh socket that works (a
    // reused broken REQ would fail with EFSM on send).
    answering.store(true, Ordering::SeqCst);
    let created_before = pool.stats().created;
    let reply = pool
        .request(&endpoint, b"three", Duration::from_secs(5), 2)
        .unwrap();
    assert_eq!(reply, b"three");
    assert_eq!(pool.stats().created, created_before + 1);
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
}

#[test]
fn lazy_pirate_recovers_when_the_server_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("ipc://{}/late.sock", dir.path().display());
    let pool = SocketPool::new();
    let starter = {
        let endpoint = endpoint.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let stop = Arc::new(AtomicBool::new(false));
            let server = echo_server(&endpoint, Arc::new(AtomicBool::new(true)), stop.clone());
            (server, stop)
        })
    };
    let reply = pool
        .request(&endpoint, b"hello", Duration::from_millis(200), 10)
        .expect("a retry reaches the late server");
    assert_eq!(reply, b"hello");
    let (server, stop) = starter.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
}

#[test]
fn limits_and_stats_hold_under_concurrent_use() {
    let answering = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let context = zmq::Context::new();
    // A ROUTER-based echo so several REQs can be served concurrently.
    let router = context.socket(zmq::ROUTER).unwrap();
    router.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = router.get_last_endpoint().unwrap().unwrap();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if router.poll(zmq::POLLIN, 20).unwrap_or(0) > 0 {
                    let frames = router.recv_multipart(0).unwrap();
                    router.send_multipart(frames, 0).unwrap();
                }
            }
        })
    };
    let _ = answering;
    let pool = SocketPool::with_config(PoolConfig {
        max_per_key: 4,
        ..PoolConfig::default()
    });
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let pool = pool.clone();
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                for index in 0..50 {
                    let message = format!("{worker}-{index}");
                    let reply = pool
                        .request(&endpoint, message.as_bytes(), Duration::from_secs(10), 0)
                        .unwrap();
                    assert_eq!(reply, message.as_bytes());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let stats = pool.stats();
    assert!(stats.created <= 4, "bounded per key: {stats:?}");
    assert_eq!(stats.created + stats.reused, 400, "{stats:?}");
    assert_eq!((stats.discarded, stats.in_use), (0, 0), "{stats:?}");
    assert_eq!(stats.idle as u64, stats.created);
    let _subscriber = pool.checkout(SocketKind::Sub, &endpoint).unwrap();
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
}
