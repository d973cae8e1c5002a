//! `up --legacy-errors ENDPOINT`: unmodified legacy agents publish
//! `ERROR:`-prefixed messages on a PUB socket; they land in the run's
//! `errors.jsonl` next to SDK errors (issue 4, legacy compatibility).

use crate::common;

use std::time::{Duration, Instant};

use common::{Fixture, port};

#[test]
fn legacy_error_messages_reach_errors_jsonl_through_up() {
    let fixture = Fixture::new();
    let legacy = format!("tcp://127.0.0.1:{}", port());
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  idle:
    command: ["FAKE"]
    readiness: { start_period: 100ms }
"#,
    );
    let up = fixture.up(&manifest, &["--no-console", "--legacy-errors", &legacy]);
    up.wait_for_output("all ready", Duration::from_secs(30));
    let context = zmq::Context::new();
    let publisher = context.socket(zmq::PUB).expect("PUB socket");
    publisher.set_linger(1000).expect("linger");
    publisher
        .connect(&legacy)
        .expect("connect to the legacy port");
    let journal = fixture.path(".supervisor/errors.jsonl");
    // PUB drops messages until the subscription has arrived: publish until one lands.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publisher
            .send(&br#"ERROR:{"agent":"LegacyTts","severity":"critical","message":"device lost","error_type":"audio"}"#[..], 0)
            .expect("publish");
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        if text.contains("device lost") {
            let line = text
                .lines()
                .find(|line| line.contains("device lost"))
                .expect("found above");
            let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(record["agent"], "LegacyTts", "{record}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no legacy error reached {}; output:\n{}",
            journal.display(),
            up.output()
        );
    }
}
