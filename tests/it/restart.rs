//! Keeping agents running, with real processes: restarts under the
//! intensity limit, a hung (SIGSTOPped) agent replaced through its liveness
//! probe, and the `rest_for_one` strategy. Backoff timings themselves are
//! tested with a paused clock and a fake spawner in `src/supervisor`.

use crate::common;

use std::time::Duration;

use common::{Fixture, alive, port, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BOUND: Duration = Duration::from_secs(30);

#[test]
fn a_crashing_agent_is_restarted_until_the_intensity_limit() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  crashy:
    command: ["FAKE", "--crash-after", "200ms", "--exit-code", "4"]
    readiness: { start_period: 50ms }
    restart: { policy: on-failure, backoff: { initial: 100ms, max: 1s, multiplier: 2 }, max_restarts: 2, within: 60s }
"#,
    );
    let mut up = fixture.up(&manifest, &[]);
    let status = up.wait(BOUND);
    assert_eq!(status.code(), Some(1), "output:\n{}", up.output());
    assert_eq!(
        fixture.records_of("start", "crashy").len(),
        3,
        "one start and two restarts"
    );
    let output = up.output();
    assert!(
        output.contains("required agent `crashy` failed"),
        "{output}"
    );
    assert!(output.contains("max_restarts: 2"), "{output}");
    // The gaps between starts grow: 200 ms run + ~100 ms, then + ~200 ms.
    let starts: Vec<u128> = fixture
        .records_of("start", "crashy")
        .iter()
        .map(|record| record.nanos)
        .collect();
    let gap = |index: usize| Duration::from_nanos((starts[index + 1] - starts[index]) as u64);
    assert!(
        gap(0) >= Duration::from_millis(270),
        "first gap {:?}",
        gap(0)
    );
    assert!(
        gap(1) >= Duration::from_millis(350),
        "second gap {:?}",
        gap(1)
    );
}

#[test]
fn a_sigstopped_agent_is_replaced_through_its_liveness_probe() {
    let fixture = Fixture::new();
    let http = port();
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  stuck:
    command: ["FAKE", "--ready-after", "100ms"]
    port: {http}
    readiness: {{ tcp: {http}, timeout: 20s, interval: 20ms }}
    liveness: {{ http: "http://127.0.0.1:{http}/health", interval: 1s, timeout: 500ms, failures: 3 }}
    restart: {{ policy: always, backoff: {{ initial: 100ms, max: 1s, multiplier: 2 }} }}
"#
    ));
    let up = fixture.up(&manifest, &[]);
    up.wait_for_output("all ready", BOUND);
    let first = fixture.first("start", "stuck").pid;
    kill(Pid::from_raw(first as i32), Signal::SIGSTOP).expect("SIGSTOP the agent");
    let stopped = std::time::Instant::now();
    wait_until("a second start of `stuck`", Duration::from_secs(15), || {
        fixture.records_of("start", "stuck").len() >= 2
    });
    let replaced_after = stopped.elapsed();
    assert!(
        replaced_after < Duration::from_secs(6),
        "replaced after {replaced_after:?}"
    );
    wait_until(
        "the hung process to be gone",
        Duration::from_secs(5),
        || !alive(first),
    );
    assert!(
        up.output()
            .contains("liveness probe failed 3 times in a row"),
        "{}",
        up.output()
    );
}

#[test]
fn rest_for_one_restarts_the_dependents_after_their_dependency() {
    let fixture = Fixture::new();
    let db = port();
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
strategy: rest_for_one
agents:
  db:
    command: ["sh", "-c", "if [ -e {marker} ]; then exec FAKE --ready-after 100ms; else touch {marker}; exec FAKE --ready-after 100ms --crash-after 1500ms; fi"]
    port: {db}
    readiness: {{ tcp: {db}, timeout: 20s, interval: 20ms }}
    restart: {{ policy: always, backoff: {{ initial: 100ms, max: 1s, multiplier: 2 }} }}
  api:
    command: ["FAKE"]
    dependencies: [db]
    readiness: {{ start_period: 100ms }}
  free:
    command: ["FAKE"]
    readiness: {{ start_period: 100ms }}
"#,
        marker = fixture.path("crashed-once").display()
    ));
    let up = fixture.up(&manifest, &[]);
    wait_until("api to start twice", BOUND, || {
        fixture.records_of("start", "api").len() >= 2
    });
    let db_ready = fixture.records_of("ready", "db");
    assert_eq!(db_ready.len(), 2, "{:?}", fixture.records());
    let api_starts = fixture.records_of("start", "api");
    assert!(fixture.records_of("stop", "api")[0].nanos < api_starts[1].nanos);
    assert!(
        api_starts[1].nanos >= db_ready[1].nanos,
        "api restarted before db was ready again"
    );
    assert_eq!(
        fixture.records_of("start", "free").len(),
        1,
        "free is not restarted"
    );
    drop(up);
}
