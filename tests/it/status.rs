//! `supervisor status` from a second process against a running supervisor:
//! the table and `--json` show the right states, pids and resource figures;
//! the memory limit restarts an agent that allocates too much (issue 5).

use crate::common;

use std::time::Duration;

use common::{Fixture, agent_of, all_ready, cli, wait_for_status};

const BOUND: Duration = Duration::from_secs(30);

#[test]
fn status_shows_every_agent_as_a_table_and_as_json() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  db:
    command: ["FAKE"]
    readiness: { start_period: 200ms }
  api:
    command: ["FAKE"]
    dependencies: [db]
    readiness: { start_period: 200ms }
  broken:
    command: ["FAKE", "--crash-after", "50ms"]
    required: false
    restart: { policy: never }
  waits:
    command: ["FAKE"]
    dependencies: [broken]
    required: false
"#,
    );
    let _up = fixture.up(&manifest, &[]);
    let manifest_path = manifest.to_str().unwrap();
    // Resource figures arrive with the first sample (every second).
    let status = wait_for_status(&manifest, "ready with resource figures", BOUND, |status| {
        all_ready(status, &["db", "api"]) && agent_of(status, "api")["rss_bytes"].is_u64()
    });
    let api = agent_of(&status, "api");
    assert!(api["pid"].is_u64());
    assert_eq!(api["host"], "localhost");
    assert!(api["rss_bytes"].as_u64().unwrap() > 100 * 1024, "{api}");
    assert!(api["cpu_percent"].is_f64(), "{api}");
    assert!(api["uptime_s"].as_f64().unwrap() > 0.0);
    assert!(api["heartbeat_age_s"].is_null(), "no SDK heartbeats yet");
    let broken = agent_of(&status, "broken");
    assert_eq!(broken["state"], "failed");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains("exited with code 1"),
        "{broken}"
    );
    assert_eq!(agent_of(&status, "waits")["state"], "blocked");

    let output = cli(&["status", "--config", manifest_path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let table = output.stdout;
    let header = table.lines().nth(1).expect("a header line");
    for column in [
        "AGENT",
        "HOST",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST REASON",
        "READY IN",
        "HEARTBEAT",
        "CPU%",
        "RSS",
    ] {
        assert!(header.contains(column), "{column} missing in {header}");
    }
    let line = |name: &str| {
        table
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
            .to_string()
    };
    assert!(
        line("db").contains("ready") && line("db").contains("MiB"),
        "{table}"
    );
    assert!(line("broken").contains("failed"), "{table}");
    assert!(line("waits").contains("blocked"), "{table}");
    assert!(table.contains(&api["pid"].to_string()), "{table}");
}

#[test]
fn an_agent_above_its_memory_limit_is_restarted_with_the_reason() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  hog:
    command: ["FAKE", "--allocate-mb", "64"]
    readiness: { start_period: 100ms }
    limits: { memory_mb: 32, grace: 1s }
    restart: { policy: always, backoff: { initial: 100ms }, max_restarts: 10 }
  calm:
    command: ["FAKE"]
    readiness: { start_period: 100ms }
    limits: { memory_mb: 512 }
"#,
    );
    let _up = fixture.up(&manifest, &[]);
    let status = wait_for_status(&manifest, "a memory restart of hog", BOUND, |status| {
        agent_of(status, "hog")["restarts_by_cause"]["memory"].as_u64() >= Some(1)
    });
    let hog = agent_of(&status, "hog");
    assert!(
        hog["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("above the limit of 32 MiB"),
        "{hog}"
    );
    common::wait_until("hog started again", BOUND, || {
        fixture.records_of("start", "hog").len() >= 2
    });
    assert_eq!(
        fixture.records_of("start", "calm").len(),
        1,
        "calm untouched"
    );
}
