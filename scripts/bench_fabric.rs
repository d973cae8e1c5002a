//! Benchmark (not a test) of the agent fabric, each figure printed next to a
//! baseline measured in the same run:
//!
//! 1. heartbeat ingestion at the agent endpoint from 500 simulated agents
//!    (raw DEALER sockets sending protocol heartbeats), vs a bare ROUTER
//!    receive loop that neither parses nor authenticates; also the endpoint
//!    thread's CPU per 1,000 heartbeats. Target ≥ 100,000 heartbeats/s.
//! 2. error bus throughput, SDK `report_error` -> endpoint -> bus ->
//!    `errors.jsonl`, checking zero loss by counting lines, vs writing the
//!    same records straight to a file. Target ≥ 50,000 errors/s.
//! 3. REQ/REP round trip through `SocketPool::request` vs a new socket per
//!    request (create, connect, send, receive, close), over ipc and tcp.
//!    Target: pooled ≥ 5× faster. Also printed: a persistent REQ socket
//!    without the pool (the best any pool can do, so the pool's own cost is
//!    the difference) and two threads ping-ponging over a socket pair (the
//!    machine's wake-up cost; a ZMQ round trip crosses six threads). Rounds
//!    of the three clients are interleaved and the median round is kept, so
//!    other load on the machine hits them alike.
//! 4. hang detection: a real `supervisor up` runs an SDK agent (heartbeat
//!    100 ms × 3); the agent is SIGSTOPped 20 times; for each, the time from
//!    SIGSTOP to the kill of its process group and to the start of its
//!    replacement, against the bound `interval × misses` (+ one interval).
//!
//! Run: `cargo bench --bench fabric` (release build); name sections to run
//! only those, e.g. `cargo bench --bench fabric -- round_trips`.

use std::io::Write;
use std::time::{Duration, Instant};

use supervisor::sdk::{Agent, AgentSettings, Severity};
use supervisor::transport::messages::{AgentMessage, ErrorRecord, HeartbeatPayload, MessageKind};
use supervisor::transport::{
    AgentEndpoint, EndpointConfig, EndpointEvent, ErrorBus, ErrorBusConfig, PoolConfig, SocketPool,
};

const AGENTS: usize = 500;
const HEARTBEATS_PER_AGENT: usize = 400;
const SENDER_THREADS: usize = 4;

/// One numbered part of the benchmark, run in the temp dir.
type Section = fn(&std::path::Path);

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "fabric benchmark (release), run dir {}",
        dir.path().display()
    );
    // cargo passes `--bench`; any other argument names a section to run.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with('-'))
        .collect();
    let sections: [(&str, Section); 4] = [
        ("heartbeats", heartbeats),
        ("errors", errors),
        ("round_trips", round_trips),
        ("hang_detection", hang_detection),
    ];
    for (name, section) in sections {
        if wanted.is_empty() || wanted.iter().any(|wanted| wanted == name) {
            section(dir.path());
        }
    }
}

/// User + system CPU time of the named thread of this process, if found.
fn thread_cpu(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() == name {
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let ticks: u64 =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            return Some(Duration::from_millis(ticks * 10)); // CLK_TCK = 100
        }
    }
    None
}

/// Sends `per_agent` heartbeats from each of `sockets` (round robin), spread
/// over sender threads. Returns when everything is queued.
fn flood(endpoint: &str, bodies: Vec<Vec<u8>>, per_agent: usize) {
    let chunk = bodies.len().div_ceil(SENDER_THREADS);
    let threads: Vec<_> = bodies
        .chunks(chunk)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let endpoint = endpoint.to_string();
            std::thread::spawn(move || {
                let context = zmq::Context::new();
                let sockets: Vec<zmq::Socket> = chunk
                    .iter()
                    .map(|_| {
                        let socket = context.socket(zmq::DEALER).expect("socket");
                        socket.set_sndhwm(0).expect("hwm");
                        socket.set_linger(5000).expect("linger");
                        socket.connect(&endpoint).expect("connect");
                        socket
                    })
                    .collect();
                for _ in 0..per_agent {
                    for (socket, body) in sockets.iter().zip(&chunk) {
                        socket
                            .send_multipart([&[][..], &body[..]], 0)
                            .expect("send");
                    }
                }
                drop(sockets); // linger delivers the rest
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("sender thread");
    }
}

fn heartbeats(dir: &std::path::Path) {
    let total = (AGENTS * HEARTBEATS_PER_AGENT) as u64;
    println!(
        "\n1. heartbeat ingestion: {AGENTS} agents x {HEARTBEATS_PER_AGENT} = {total} heartbeats over ipc"
    );

    // Baseline: a bare ROUTER that only receives.
    let context = zmq::Context::new();
    let router = context.socket(zmq::ROUTER).expect("router");
    let baseline_endpoint = format!("ipc://{}/baseline.sock", dir.display());
    router.set_rcvhwm(0).expect("hwm");
    router.bind(&baseline_endpoint).expect("bind");
    let body = AgentMessage::new(MessageKind::Heartbeat, "agent-0", "token-0", 1).encode();
    let receiver = std::thread::spawn(move || {
        let mut first = None;
        for _ in 0..total {
            router.recv_multipart(0).expect("receive");
            first.get_or_insert_with(Instant::now);
        }
        first.map(|first| first.elapsed())
    });
    let started = Instant::now();
    flood(&baseline_endpoint, vec![body; AGENTS], HEARTBEATS_PER_AGENT);
    receiver.join().expect("receiver");
    let baseline = started.elapsed();

    // The endpoint: parse, authenticate, deliver events to a consumer.
    let (sender, mut events) = tokio::sync::mpsc::channel(65_536);
    let (endpoint, _thread) = AgentEndpoint::spawn(
        &EndpointConfig::at(&format!("ipc://{}/agents.sock", dir.display())),
        sender,
        None,
    )
    .expect("endpoint");
    let mut bodies = Vec::new();
    for index in 0..AGENTS {
        let (name, token) = (format!("agent-{index}"), format!("token-{index}"));
        endpoint.register(&name, &token);
        let mut message = AgentMessage::new(MessageKind::Heartbeat, &name, &token, 1);
        message.payload = Some(HeartbeatPayload {
            queue_depth: Some(3),
            in_flight: Some(1),
            last_progress_ms: Some(1_700_000_000_000),
            ..HeartbeatPayload::default()
        });
        bodies.push(message.encode());
    }
    let consumer = std::thread::spawn(move || {
        let mut heartbeats = 0u64;
        while let Some(event) = events.blocking_recv() {
            if matches!(event, EndpointEvent::HeartbeatReceived { .. }) {
                heartbeats += 1;
                if heartbeats == total {
                    break;
                }
            }
        }
        heartbeats
    });
    let cpu_before = thread_cpu("agent-endpoint").unwrap_or_default();
    let started = Instant::now();
    flood(endpoint.endpoint(), bodies, HEARTBEATS_PER_AGENT);
    let deadline = Instant::now() + Duration::from_secs(120);
    while endpoint.stats().heartbeats < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    let cpu = thread_cpu("agent-endpoint")
        .unwrap_or_default()
        .saturating_sub(cpu_before);
    let stats = endpoint.stats();
    endpoint.stop();
    let delivered = if stats.events_dropped == 0 {
        consumer.join().unwrap_or(0)
    } else {
        0
    };
    let rate = stats.heartbeats as f64 / elapsed.as_secs_f64();
    let baseline_rate = total as f64 / baseline.as_secs_f64();
    println!(
        "   baseline (bare ROUTER recv):     {:>10.0} msg/s   ({:.0} ms)",
        baseline_rate,
        baseline.as_secs_f64() * 1000.0
    );
    println!(
        "   endpoint (parse+auth+event):     {:>10.0} heartbeats/s ({:.0} ms), {:.0}% of baseline  target >= 100000: {}",
        rate,
        elapsed.as_secs_f64() * 1000.0,
        100.0 * rate / baseline_rate,
        if rate >= 100_000.0 { "PASS" } else { "FAIL" }
    );
    println!(
        "   endpoint thread CPU: {:.1} ms total, {:.3} ms per 1,000 heartbeats; events delivered {delivered}, dropped {}, rejected {}",
        cpu.as_secs_f64() * 1000.0,
        cpu.as_secs_f64() * 1000.0 / (stats.heartbeats as f64 / 1000.0),
        stats.events_dropped,
        stats.rejected_bad_token + stats.rejected_unknown_agent + stats.rejected_malformed
    );
}

fn errors(dir: &std::path::Path) {
    const ERROR_AGENTS: usize = 20;
    const PER_AGENT: usize = 5_000;
    let total = (ERROR_AGENTS * PER_AGENT) as u64;
    println!(
        "\n2. error bus: {ERROR_AGENTS} SDK agents x {PER_AGENT} = {total} errors -> errors.jsonl"
    );

    // Baseline: the same records serialised straight into a file.
    let record = ErrorRecord::from_agent(
        "agent-0",
        supervisor::transport::messages::ErrorFields {
            severity: Severity::Error,
            message: "request failed".into(),
            kind: "bench".into(),
            context: [("sequence".to_string(), 1.into())].into_iter().collect(),
            timestamp: None,
            correlation_id: Some("c-1".into()),
        },
    );
    let started = Instant::now();
    {
        let file = std::fs::File::create(dir.join("baseline.jsonl")).expect("file");
        let mut writer = std::io::BufWriter::new(file);
        for _ in 0..total {
            serde_json::to_writer(&mut writer, &record).expect("write");
            writer.write_all(b"\n").expect("write");
        }
        writer.flush().expect("flush");
    }
    let baseline = started.elapsed();

    let run_dir = dir.join("bus");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    let (bus, _bus_thread) = ErrorBus::spawn(&ErrorBusConfig::in_run_dir(&run_dir)).expect("bus");
    let (sender, mut events) = tokio::sync::mpsc::channel(65_536);
    // The supervisor's part: consume events (READY needs a reader to be accepted).
    std::thread::spawn(move || while events.blocking_recv().is_some() {});
    let (endpoint, _thread) = AgentEndpoint::spawn(
        &EndpointConfig::in_run_dir(&run_dir),
        sender,
        Some(bus.sink()),
    )
    .expect("endpoint");
    let agents: Vec<Agent> = (0..ERROR_AGENTS)
        .map(|index| {
            endpoint.register(&format!("agent-{index}"), "token");
            Agent::connect(AgentSettings {
                name: format!("agent-{index}"),
                endpoint: endpoint.endpoint().into(),
                token: "token".into(),
                heartbeat_interval: Duration::from_secs(1),
                call_timeout: Duration::from_secs(10),
            })
            .expect("agent")
        })
        .collect();
    for agent in &agents {
        agent.ready().expect("ready");
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        for agent in &agents {
            scope.spawn(move || {
                for sequence in 0..PER_AGENT {
                    agent
                        .report_error(Severity::Error, "request failed")
                        .kind("bench")
                        .context("sequence", sequence)
                        .correlation_id("c-1")
                        .send();
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while bus.stats().written < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    bus.flush(Duration::from_secs(30));
    let elapsed = started.elapsed();
    let lines = std::fs::read_to_string(run_dir.join("errors.jsonl"))
        .map(|text| text.lines().count())
        .unwrap_or(0);
    let stats = bus.stats();
    let rate = stats.written as f64 / elapsed.as_secs_f64();
    let baseline_rate = total as f64 / baseline.as_secs_f64();
    println!(
        "   baseline (serialise + write):    {:>10.0} errors/s ({:.0} ms)",
        baseline_rate,
        baseline.as_secs_f64() * 1000.0
    );
    println!(
        "   SDK -> endpoint -> bus -> file:  {:>10.0} errors/s ({:.0} ms), {:.0}% of baseline  target >= 50000: {}",
        rate,
        elapsed.as_secs_f64() * 1000.0,
        100.0 * rate / baseline_rate,
        if rate >= 50_000.0 { "PASS" } else { "FAIL" }
    );
    println!(
        "   loss: {} lines in errors.jsonl for {total} sent ({}), bus lost {}, back-pressure waits {}",
        lines,
        if lines as u64 == total {
            "zero loss"
        } else {
            "LOSS"
        },
        stats.lost,
        stats.backpressure_waits
    );
    drop(agents);
    endpoint.stop();
    bus.stop();
}

fn echo_server(endpoint: &str) -> String {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::REP).expect("rep");
    socket.set_linger(0).expect("linger");
    socket.bind(endpoint).expect("bind");
    let bound = socket
        .get_last_endpoint()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| endpoint.to_string());
    std::thread::spawn(move || {
        while let Ok(request) = socket.recv_bytes(0) {
            if socket.send(request, 0).is_err() {
                break;
            }
        }
    });
    bound
}

fn round_trips(dir: &std::path::Path) {
    const ROUNDS: usize = 7;
    const PER_ROUND: usize = 300;
    const SPIN: Duration = Duration::from_micros(200);
    println!(
        "\n3. REQ/REP round trip to an echo REP server (own context and thread), \
         {ROUNDS} interleaved rounds x {PER_ROUND} requests per client, median round"
    );
    let floor = wake_up_floor(ROUNDS, PER_ROUND);
    println!(
        "   OS floor: two threads ping-ponging a byte over a socket pair: {:.1} us \
         (2 thread wake-ups; a ZMQ round trip has 6: client -> its I/O thread -> \
         server I/O thread -> server and back)",
        floor.as_secs_f64() * 1e6
    );
    for requested in [
        format!("ipc://{}/echo.sock", dir.display()),
        "tcp://127.0.0.1:*".to_string(),
    ] {
        let endpoint = echo_server(&requested);
        let transport = if endpoint.starts_with("ipc") {
            "ipc"
        } else {
            "tcp"
        };
        // Baseline: what a client without a pool pays per request: create,
        // connect, send, receive, close.
        let context = zmq::Context::new();
        let fresh_socket = || {
            let socket = context.socket(zmq::REQ).expect("req");
            socket.set_linger(0).expect("linger");
            socket.connect(&endpoint).expect("connect");
            socket.send(&b"ping"[..], 0).expect("send");
            socket.recv_bytes(0).expect("reply");
        };
        // Reference: the best a persistent socket can do, without a pool.
        let persistent = context.socket(zmq::REQ).expect("req");
        persistent.set_linger(0).expect("linger");
        persistent.connect(&endpoint).expect("connect");
        let persistent_socket = || {
            persistent.send(&b"ping"[..], 0).expect("send");
            persistent.recv_bytes(0).expect("reply");
        };
        // The same with PoolConfig::spin: trades client CPU for wake-ups.
        let spinning_pool = SocketPool::with_config(PoolConfig {
            spin: SPIN,
            ..PoolConfig::default()
        });
        let spinning_request = || {
            spinning_pool
                .request(&endpoint, b"ping", Duration::from_secs(5), 0)
                .expect("pooled reply");
        };
        let pool = SocketPool::new();
        let pooled_request = || {
            pool.request(&endpoint, b"ping", Duration::from_secs(5), 0)
                .expect("pooled reply");
        };
        // The same without the circuit breaker: what the breaker costs.
        let unguarded_pool = SocketPool::with_config(PoolConfig {
            breaker: None,
            ..PoolConfig::default()
        });
        let unguarded_request = || {
            unguarded_pool
                .request(&endpoint, b"ping", Duration::from_secs(5), 0)
                .expect("pooled reply");
        };
        // Warm up: connections up, code paths hot.
        for _ in 0..20 {
            fresh_socket();
            persistent_socket();
            pooled_request();
            spinning_request();
            unguarded_request();
        }
        let mut fresh = Measured::default();
        let mut unguarded = Measured::default();
        let mut raw = Measured::default();
        let mut pooled = Measured::default();
        let mut spinning = Measured::default();
        for _ in 0..ROUNDS {
            fresh.round(PER_ROUND, fresh_socket);
            raw.round(PER_ROUND, persistent_socket);
            pooled.round(PER_ROUND, pooled_request);
            spinning.round(PER_ROUND, spinning_request);
            unguarded.round(PER_ROUND, unguarded_request);
        }
        let unguarded = unguarded.median();
        let cpu = [&fresh, &raw, &pooled, &spinning].map(|measured| measured.cpu_per_call());
        let (fresh, raw, pooled) = (fresh.median(), raw.median(), pooled.median());
        let spinning = spinning.median();
        let speedup = fresh.as_secs_f64() / pooled.as_secs_f64();
        let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
        let row = |label: &str, time: Duration| {
            format!(
                "   {transport}: {label:<60} {:>7.1} us  ({:.1}x)",
                micros(time),
                fresh.as_secs_f64() / time.as_secs_f64()
            )
        };
        println!(
            "{}",
            row(
                "new socket per request (create, connect, send, recv, close)",
                fresh
            )
        );
        println!("{}", row("persistent REQ socket, no pool (best case)", raw));
        println!(
            "{}  target >= 5x: {}",
            row("SocketPool::request", pooled),
            if speedup >= 5.0 { "PASS" } else { "FAIL" },
        );
        let spin_label = format!(
            "SocketPool::request, PoolConfig::spin {} us",
            SPIN.as_micros()
        );
        println!("{}", row(&spin_label, spinning));
        println!(
            "{}",
            row("SocketPool::request without its circuit breaker", unguarded)
        );
        println!(
            "   {transport}: CPU of this process (client, I/O threads, server) per request: \
             new socket {:.1} us, persistent {:.1} us, pooled {:.1} us, spinning {:.1} us",
            micros(cpu[0]),
            micros(cpu[1]),
            micros(cpu[2]),
            micros(cpu[3])
        );
        println!(
            "   {transport}: pool overhead over the persistent socket {:+.1} us \
             (of which the circuit breaker {:+.1} us); {:?}",
            micros(pooled) - micros(raw),
            micros(pooled) - micros(unguarded),
            pool.stats()
        );
    }
}

/// Rounds of one client: time per call of each round, and CPU in total.
#[derive(Default)]
struct Measured {
    rounds: Vec<Duration>,
    cpu: Duration,
    calls: u32,
}

impl Measured {
    fn round(&mut self, count: usize, call: impl FnMut()) {
        let cpu_before = process_cpu();
        self.rounds.push(per_call(count, call));
        self.cpu += process_cpu().saturating_sub(cpu_before);
        self.calls += count as u32;
    }

    fn median(self) -> Duration {
        median(self.rounds)
    }

    fn cpu_per_call(&self) -> Duration {
        self.cpu / self.calls.max(1)
    }
}

/// User + system CPU time of this whole process (10 ms ticks).
fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let after_name = stat[stat.rfind(')')? + 2..].to_string();
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10) // CLK_TCK = 100
}

/// Mean time of one call of `call` over `count` calls.
fn per_call(count: usize, mut call: impl FnMut()) -> Duration {
    let started = Instant::now();
    for _ in 0..count {
        call();
    }
    started.elapsed() / count as u32
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Median round trip of one byte between two threads over a Unix socket
/// pair: the cost of two thread wake-ups on this machine, without ZeroMQ.
fn wake_up_floor(rounds: usize, per_round: usize) -> Duration {
    use std::io::Read;
    let (mut near, mut far) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8];
        while far.read_exact(&mut byte).is_ok() {
            if far.write_all(&byte).is_err() {
                break;
            }
        }
    });
    let mut byte = [0u8];
    let mut times = Vec::new();
    for _ in 0..rounds {
        times.push(per_call(per_round, || {
            near.write_all(&[1]).expect("write");
            near.read_exact(&mut byte).expect("read");
        }));
    }
    drop(near);
    let _ = echo.join();
    median(times)
}

fn hang_detection(dir: &std::path::Path) {
    const HANGS: usize = 20;
    const INTERVAL_MS: u64 = 100;
    const MISSES: u64 = 3;
    println!(
        "\n4. hang detection, {HANGS} SIGSTOPs of an SDK agent (heartbeat {INTERVAL_MS} ms x {MISSES})"
    );
    let record = dir.join("hangs.txt");
    let manifest = dir.join("hangs.yaml");
    // `$$` is the manifest's escape for `$`: the wrapper records each start.
    let command = format!(
        r#"echo $$(date +%s%N) $$$$ >> "{}"; exec {}"#,
        record.display(),
        env!("CARGO_BIN_EXE_agent-worker")
    );
    std::fs::write(
        &manifest,
        format!(
            "version: 1\nagents:\n  worker:\n    command: '{command}'\n    shell: true\n    \
             readiness: {{ sdk: true }}\n    heartbeat: {{ interval: {INTERVAL_MS}ms, misses: {MISSES} }}\n    \
             restart: {{ policy: always, backoff: {{ initial: 10ms, max: 10ms }}, max_restarts: 1000, within: 60s }}\n"
        ),
    )
    .expect("write the manifest");
    let mut supervisor = std::process::Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .args(["--log", "warn", "up", "--no-console", "--config"])
        .arg(&manifest)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start supervisor up");
    let starts = || -> Vec<(u128, i32)> {
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            })
            .collect()
    };
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos()
    };
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let state = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .next()?
                    .to_string();
                Some(state != "Z" && state != "X")
            })
            .unwrap_or(false)
    };
    let wait = |what: &str, mut done: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let mut to_kill = Vec::new();
    let mut to_restart = Vec::new();
    for hang in 0..HANGS {
        wait("the agent to start", Box::new(|| starts().len() > hang));
        let (_, pid) = starts()[hang];
        // Let it connect and beat, then freeze it at a random phase.
        std::thread::sleep(Duration::from_millis(300 + (hang as u64 * 37) % 100));
        let stopped_at = wall();
        let frozen = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        );
        wait("the kill", Box::new(|| !alive(pid)));
        to_kill.push(frozen.elapsed());
        wait("the restart", Box::new(|| starts().len() > hang + 1));
        let (started, _) = starts()[hang + 1];
        to_restart.push(Duration::from_nanos((started - stopped_at) as u64));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = supervisor.wait();
    let summary = |values: &mut Vec<Duration>| {
        values.sort();
        (values[values.len() / 2], values[values.len() - 1])
    };
    let (kill_median, kill_max) = summary(&mut to_kill);
    let (restart_median, restart_max) = summary(&mut to_restart);
    let bound = Duration::from_millis(INTERVAL_MS * MISSES);
    let limit = bound + Duration::from_millis(INTERVAL_MS);
    println!(
        "   SIGSTOP -> kill:        median {:>6.1} ms, max {:>6.1} ms   (interval x misses = {} ms)",
        kill_median.as_secs_f64() * 1e3,
        kill_max.as_secs_f64() * 1e3,
        bound.as_millis()
    );
    println!(
        "   SIGSTOP -> new process: median {:>6.1} ms, max {:>6.1} ms   target <= {} ms: {}",
        restart_median.as_secs_f64() * 1e3,
        restart_max.as_secs_f64() * 1e3,
        limit.as_millis(),
        if restart_max <= limit { "PASS" } else { "FAIL" }
    );
}
