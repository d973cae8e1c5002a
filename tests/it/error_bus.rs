//! The error bus over real sockets: errors from many SDK agents all land in
//! `errors.jsonl` in order per agent, legacy `ERROR:` messages are accepted
//! in all four shapes, and followers filter by `<severity>.<agent>` topics.

use std::time::{Duration, Instant};

use supervisor::sdk::{Agent, AgentSettings, Severity};
use supervisor::transport::messages::ErrorRecord;
use supervisor::transport::{
    AgentEndpoint, EndpointConfig, ErrorBus, ErrorBusConfig, ErrorBusHandle,
};

const WAIT: Duration = Duration::from_secs(30);

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn journal(path: &std::path::Path) -> Vec<ErrorRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a record"))
        .collect()
}

#[test]
fn errors_from_many_agents_all_arrive_in_order_per_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, _bus_thread) = ErrorBus::spawn(&ErrorBusConfig::in_run_dir(dir.path())).unwrap();
    let (sender, _events) = tokio::sync::mpsc::channel(100);
    let (endpoint, _thread) = AgentEndpoint::spawn(
        &EndpointConfig::in_run_dir(dir.path()),
        sender,
        Some(bus.sink()),
    )
    .unwrap();
    const AGENTS: usize = 20;
    const ERRORS: usize = 250;
    let mut threads = Vec::new();
    for index in 0..AGENTS {
        let name = format!("agent-{index}");
        endpoint.register(&name, &format!("token-{index}"));
        let settings = AgentSettings {
            name,
            endpoint: endpoint.endpoint().into(),
            token: format!("token-{index}"),
            heartbeat_interval: Duration::from_secs(1),
            call_timeout: Duration::from_secs(10),
        };
        threads.push(std::thread::spawn(move || {
            let agent = Agent::connect(settings).unwrap();
            for sequence in 0..ERRORS {
                let severity = if sequence % 50 == 0 {
                    Severity::Fatal
                } else {
                    Severity::Warning
                };
                assert!(
                    agent
                        .report_error(severity, "burst")
                        .kind("test")
                        .context("sequence", sequence)
                        .send()
                );
            }
            // Dropping the agent flushes its queue.
        }));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let total = (AGENTS * ERRORS) as u64;
    let deadline = Instant::now() + WAIT;
    while bus.stats().written < total {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for every error in the journal: {:?} {:?}",
            bus.stats(),
            endpoint.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(bus.flush(WAIT));
    let records = journal(&dir.path().join("errors.jsonl"));
    assert_eq!(records.len() as u64, total);
    let mut next = [0u64; AGENTS];
    for record in &records {
        let index: usize = record.agent.trim_start_matches("agent-").parse().unwrap();
        assert_eq!(
            record.context["sequence"], next[index],
            "order of {}",
            record.agent
        );
        next[index] += 1;
    }
    let counts = bus.counts(WAIT).unwrap();
    assert_eq!(counts["agent-3"][&Severity::Fatal], (ERRORS / 50) as u64);
    assert_eq!(
        counts["agent-3"][&Severity::Warning],
        (ERRORS - ERRORS / 50) as u64
    );
    let stats = bus.stats();
    assert_eq!((stats.lost, stats.write_failures), (0, 0), "{stats:?}");
    assert_eq!(endpoint.stats().errors, total);
}

fn legacy_bus(dir: &std::path::Path) -> ErrorBusHandle {
    let mut config = ErrorBusConfig::in_run_dir(dir);
    config.legacy = Some("tcp://127.0.0.1:*".into());
    ErrorBus::spawn(&config).unwrap().0
}

#[test]
fn legacy_error_messages_are_accepted_in_all_four_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let bus = legacy_bus(dir.path());
    let context = zmq::Context::new();
    let publisher = context.socket(zmq::PUB).unwrap();
    publisher.set_linger(1000).unwrap();
    publisher
        .connect(bus.legacy_endpoint().expect("legacy endpoint"))
        .unwrap();
    // PUB drops until the SUB's subscription has arrived: probe until one lands.
    wait_until("the legacy subscription", || {
        publisher
            .send(&br#"ERROR:{"agent":"probe","message":"probe"}"#[..], 0)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        bus.stats().legacy_accepted > 0
    });
    let before = bus.stats().legacy_accepted;
    publisher
        .send(&br#"ERROR:{"source":"Tts","severity":"critical","message":"one","context":{"a":1}}"#[..], 0)
        .unwrap();
    publisher
        .send_multipart(
            [
                &b"ERROR"[..],
                br#"{"agent":"Memory","type":"db","message":"two"}"#,
            ],
            0,
        )
        .unwrap();
    publisher
        .send_multipart(
            [&b"ERROR:"[..], br#"{"agent":"Vision","message":"three"}"#],
            0,
        )
        .unwrap();
    publisher
        .send(&b"ERROR:Audio:device:four: busy"[..], 0)
        .unwrap();
    publisher.send(&b"ERROR:{broken"[..], 0).unwrap();
    wait_until("the four legacy errors", || {
        bus.stats().legacy_accepted >= before + 4
    });
    wait_until("the broken one refused", || {
        bus.stats().legacy_rejected >= 1
    });
    assert!(bus.flush(WAIT));
    let records: Vec<ErrorRecord> = journal(&dir.path().join("errors.jsonl"))
        .into_iter()
        .filter(|record| record.agent != "probe")
        .collect();
    let summary: Vec<(&str, &str, Severity)> = records
        .iter()
        .map(|record| {
            (
                record.agent.as_str(),
                record.message.as_str(),
                record.severity,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Tts", "one", Severity::Critical),
            ("Memory", "two", Severity::Error),
            ("Vision", "three", Severity::Error),
            ("Audio", "four: busy", Severity::Error),
        ]
    );
    assert_eq!(records[1].kind, "db");
}

#[test]
fn followers_filter_by_severity_and_agent_topic() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, _thread) = ErrorBus::spawn(&ErrorBusConfig::in_run_dir(dir.path())).unwrap();
    let context = zmq::Context::new();
    let follower = context.socket(zmq::SUB).unwrap();
    follower.set_subscribe(b"fatal.").unwrap();
    follower.set_rcvtimeo(50).unwrap();
    follower.connect(bus.publish_endpoint().unwrap()).unwrap();
    let record = |agent: &str, severity: Severity| ErrorRecord {
        timestamp: "2026-01-01T00:00:00.000Z".into(),
        agent: agent.into(),
        severity,
        kind: String::new(),
        message: "m".into(),
        context: Default::default(),
        correlation_id: None,
        source: supervisor::transport::messages::ErrorSource::Supervisor,
    };
    let sink = bus.sink();
    let deadline = Instant::now() + WAIT;
    let received = loop {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a fatal.* message"
        );
        sink.publish(record("api", Severity::Warning));
        sink.publish(record("api", Severity::Fatal));
        if let Ok(frames) = follower.recv_multipart(0) {
            break frames;
        }
    };
    assert_eq!(received[0], b"fatal.api");
    let body: ErrorRecord = serde_json::from_slice(&received[1]).unwrap();
    assert_eq!(body.severity, Severity::Fatal);
    // Only fatal ones ever reach this follower.
    for _ in 0..5 {
        if let Ok(frames) = follower.recv_multipart(0) {
            assert!(frames[0].starts_with(b"fatal."));
        }
    }
}

/// Secret-looking context values an agent reports never reach the journal.
#[test]
fn secret_context_values_are_redacted_before_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, _bus_thread) = ErrorBus::spawn(&ErrorBusConfig::in_run_dir(dir.path())).unwrap();
    let (sender, _events) = tokio::sync::mpsc::channel(100);
    let (endpoint, _thread) = AgentEndpoint::spawn(
        &EndpointConfig::in_run_dir(dir.path()),
        sender,
        Some(bus.sink()),
    )
    .unwrap();
    endpoint.register("leaky", "token-leaky");
    let agent = Agent::connect(AgentSettings {
        name: "leaky".into(),
        endpoint: endpoint.endpoint().into(),
        token: "token-leaky".into(),
        heartbeat_interval: Duration::from_secs(1),
        call_timeout: Duration::from_secs(10),
    })
    .unwrap();
    assert!(
        agent
            .report_error(Severity::Error, "login failed")
            .context("OPENAI_API_KEY", "sk-live-123")
            .context("db_password", "hunter2")
            .context("user", "ana")
            .send()
    );
    drop(agent);
    wait_until("the error in the journal", || bus.stats().written >= 1);
    assert!(bus.flush(WAIT));
    let text = std::fs::read_to_string(dir.path().join("errors.jsonl")).unwrap();
    assert!(
        !text.contains("sk-live-123") && !text.contains("hunter2"),
        "{text}"
    );
    let record = &journal(&dir.path().join("errors.jsonl"))[0];
    assert_eq!(record.context["OPENAI_API_KEY"], "[redacted]");
    assert_eq!(record.context["user"], "ana");
}
