//! Hot reload with a real supervisor: a change to one agent restarts only
//! it (the others keep their pids), added and removed agents start and
//! stop, a broken manifest changes nothing and reports every error, and an
//! edit of the file on disk reloads by itself (issue 5).

use crate::common;

use std::time::Duration;

use common::{Fixture, agent_of, all_ready, cli, status_json, wait_for_status};

const BOUND: Duration = Duration::from_secs(30);

fn manifest_text(api_flag: &str, extra: &str) -> String {
    format!(
        r#"
version: 1
agents:
  db:
    command: ["FAKE"]
    readiness: {{ start_period: 200ms }}
  api:
    command: ["FAKE"{api_flag}]
    dependencies: [db]
    readiness: {{ start_period: 200ms }}
  ui:
    command: ["FAKE"]
    dependencies: [api]
    readiness: {{ start_period: 200ms }}
{extra}"#
    )
}

fn pids(status: &serde_json::Value) -> Vec<(String, Option<u64>)> {
    status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|agent| {
            (
                agent["name"].as_str().unwrap().to_string(),
                agent["pid"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn a_reload_restarts_only_the_changed_agent_and_adds_and_removes_the_rest() {
    let fixture = Fixture::new();
    let old = r#"  old:
    command: ["FAKE"]
    readiness: { start_period: 200ms }
"#;
    let manifest = fixture.manifest(&manifest_text("", old));
    let _up = fixture.up(&manifest, &["--no-watch"]);
    let path = manifest.to_str().unwrap();
    let before = wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "ui", "old"])
    });
    let new = r#"  new:
    command: ["FAKE"]
    dependencies: [db]
    readiness: { start_period: 200ms }
"#;
    fixture.manifest(&manifest_text(r#", "--stop-delay", "10ms""#, new));
    let output = cli(&["reload", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output
            .stdout
            .contains("added new; removed old; changed api; 2 unchanged"),
        "{output:?}"
    );
    let after = wait_for_status(
        &manifest,
        "the new configuration running",
        BOUND,
        |status| {
            all_ready(status, &["db", "api", "ui", "new"])
                && agent_of(status, "api")["pid"] != agent_of(&before, "api")["pid"]
        },
    );
    let names: Vec<String> = pids(&after).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["db", "api", "ui", "new"]);
    for name in ["db", "ui"] {
        assert_eq!(
            agent_of(&after, name)["pid"],
            agent_of(&before, name)["pid"],
            "{name} kept its process"
        );
    }
    assert_eq!(fixture.records_of("start", "db").len(), 1);
    assert_eq!(fixture.records_of("start", "ui").len(), 1);
    assert_eq!(fixture.records_of("start", "api").len(), 2);
    assert_eq!(fixture.records_of("stop", "old").len(), 1);
    assert_eq!(after["reloads"], 1);
    assert_eq!(agent_of(&after, "api")["restarts_by_cause"]["reload"], 1);
}

#[test]
fn a_broken_reload_keeps_the_old_configuration_and_reports_every_error() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(&manifest_text("", ""));
    let _up = fixture.up(&manifest, &["--no-watch"]);
    let path = manifest.to_str().unwrap();
    let before = wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "ui"])
    });
    // Two problems: an unknown dependency and an unknown field.
    let broken = manifest_text(
        "",
        "  bad:\n    command: [\"FAKE\"]\n    dependencies: [ghost]\n    colour: blue\n",
    );
    fixture.manifest(&broken);
    let output = cli(&["reload", "--config", path], BOUND);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output.stderr.contains("old one keeps running"),
        "{output:?}"
    );
    assert!(output.stderr.contains("colour"), "{output:?}");
    let status = status_json(&manifest).expect("status");
    assert_eq!(pids(&status), pids(&before), "nothing changed");
    let errors = status["config_errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "{status}");
    let table = cli(&["status", "--config", path], BOUND).stdout;
    assert!(table.contains("last reload refused"), "{table}");
    // A fixed manifest clears the errors.
    fixture.manifest(&manifest_text("", ""));
    let output = cli(&["reload", "--config", path], BOUND);
    assert_eq!(output.code, Some(0), "{output:?}");
    let status = status_json(&manifest).expect("status");
    assert!(status["config_errors"].as_array().unwrap().is_empty());
    assert_eq!(
        pids(&status),
        pids(&before),
        "an unchanged reload restarts nothing"
    );
}

#[test]
fn editing_the_manifest_reloads_by_itself() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(&manifest_text("", ""));
    let _up = fixture.up(&manifest, &[]);
    let before = wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "ui"])
    });
    fixture.manifest(&manifest_text(r#", "--stop-delay", "10ms""#, ""));
    let after = wait_for_status(&manifest, "the watcher's reload", BOUND, |status| {
        status["reloads"] == 1
            && all_ready(status, &["db", "api", "ui"])
            && agent_of(status, "api")["pid"] != agent_of(&before, "api")["pid"]
    });
    assert_eq!(
        agent_of(&after, "db")["pid"],
        agent_of(&before, "db")["pid"]
    );
    assert_eq!(
        agent_of(&after, "ui")["pid"],
        agent_of(&before, "ui")["pid"]
    );
}

/// Issue 16, item 9: a manifest written in two steps (an editor or `cp`
/// cut between two agents, a second apart) is applied only once whole: the
/// agent missing from the first half is never stopped.
#[test]
fn issue_16_a_manifest_written_in_two_steps_is_applied_only_whole() {
    use std::io::Write;
    let fixture = Fixture::new();
    let manifest = fixture.manifest(&manifest_text("", ""));
    let _up = fixture.up(&manifest, &[]);
    let before = wait_for_status(&manifest, "all ready", BOUND, |status| {
        all_ready(status, &["db", "api", "ui"])
    });
    let whole =
        manifest_text(r#", "--stop-delay", "10ms""#, "").replace("FAKE", common::FAKE_AGENT);
    let cut = whole.find("  ui:").expect("ui in the manifest");
    std::fs::write(&manifest, &whole[..cut]).expect("first half");
    std::thread::sleep(Duration::from_secs(1));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&manifest)
        .and_then(|mut file| file.write_all(&whole.as_bytes()[cut..]))
        .expect("second half");
    let after = wait_for_status(&manifest, "the whole file's reload", BOUND, |status| {
        status["reloads"].as_u64() >= Some(1)
            && all_ready(status, &["db", "api", "ui"])
            && agent_of(status, "api")["pid"] != agent_of(&before, "api")["pid"]
    });
    // Long enough for a late reload of the first half to show.
    std::thread::sleep(Duration::from_secs(3));
    let last = status_json(&manifest).expect("status");
    for status in [&after, &last] {
        assert_eq!(
            agent_of(status, "ui")["pid"],
            agent_of(&before, "ui")["pid"],
            "ui was stopped by the half-written manifest: {status}"
        );
    }
    assert_eq!(
        fixture.records_of("start", "ui").len(),
        1,
        "ui started again"
    );
    assert_eq!(
        fixture.records_of("start", "api").len(),
        2,
        "api restarted once"
    );
}
