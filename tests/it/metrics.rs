//! `/metrics` and `/health` of a running supervisor, scraped over HTTP and
//! parsed with a Prometheus text parser (issue 5).

use crate::common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Fixture, all_ready, cli, port, wait_for_status};

const BOUND: Duration = Duration::from_secs(30);

/// A plain HTTP/1.0 GET; returns (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[test]
fn metrics_are_valid_prometheus_text_and_health_is_json() {
    let fixture = Fixture::new();
    let listen = port();
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
metrics: {{ listen: "127.0.0.1:{listen}" }}
agents:
  db:
    command: ["FAKE"]
    readiness: {{ start_period: 200ms }}
  api:
    command: ["FAKE"]
    dependencies: [db]
    readiness: {{ start_period: 200ms }}
"#
    ));
    let _up = fixture.up(&manifest, &[]);
    wait_for_status(&manifest, "ready with figures", BOUND, |status| {
        all_ready(status, &["db", "api"]) && common::agent_of(status, "api")["rss_bytes"].is_u64()
    });
    let output = cli(
        &["restart", "db", "--config", manifest.to_str().unwrap()],
        BOUND,
    );
    assert_eq!(output.code, Some(0), "{output:?}");
    let (status_line, body) = get(listen, "/metrics");
    assert!(status_line.contains("200"), "{status_line}");
    let lines = body.lines().map(|line| Ok(line.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("parsable Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|sample| {
                sample.metric == name
                    && labels
                        .iter()
                        .all(|(key, value)| sample.labels.get(key) == Some(*value))
            })
            .map(|sample| match sample.value {
                prometheus_parse::Value::Counter(value)
                | prometheus_parse::Value::Gauge(value)
                | prometheus_parse::Value::Untyped(value) => value,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{body}"))
    };
    assert_eq!(value("supervisor_agent_up", &[("agent", "api")]), 1.0);
    assert_eq!(
        value(
            "supervisor_agent_state",
            &[("agent", "api"), ("state", "ready")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "supervisor_agent_state",
            &[("agent", "api"), ("state", "failed")]
        ),
        0.0
    );
    assert_eq!(
        value(
            "supervisor_agent_restarts_total",
            &[("agent", "db"), ("cause", "operator")]
        ),
        1.0
    );
    assert!(value("supervisor_agent_ready_seconds", &[("agent", "db")]) > 0.1);
    assert!(value("supervisor_agent_rss_bytes", &[("agent", "api")]) > 100_000.0);
    value("supervisor_agent_cpu_percent", &[("agent", "api")]);
    assert!(value("supervisor_start_duration_seconds", &[]) > 0.1);
    assert_eq!(value("supervisor_reloads_total", &[]), 0.0);
    assert!(value("supervisor_control_requests_total", &[]) >= 1.0);

    let (status_line, body) = get(listen, "/health");
    assert!(status_line.contains("200"), "{status_line}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["ready"], 2);
}
