//! Security properties that need no network: agents are started with
//! `execve` of their argv, so no manifest value is ever interpreted by a
//! shell unless the manifest says `shell: true`; names that could escape
//! the run directory or a shell are refused before anything starts.

mod common;

use std::time::Duration;

use common::Fixture;

/// Generous bound for every wait.
const BOUND: Duration = Duration::from_secs(30);

#[test]
fn arguments_with_shell_syntax_reach_the_agent_literally() {
    let fixture = Fixture::new();
    let marker = fixture.path("pwned");
    let hostile = [
        format!("a; touch {}", marker.display()),
        format!("$(touch {})", marker.display()),
        format!("`touch {}`", marker.display()),
        "| cat /etc/passwd".to_string(),
        "${HOME}".to_string(),
    ];
    let quoted: Vec<String> = hostile.iter().map(|arg| format!("{arg:?}")).collect();
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  echo:
    command: ["printf", "ARG[%s]\n", {}]
    readiness: {{ start_period: 50ms }}
    restart: never
"#,
        quoted.join(", ").replace("${HOME}", "$${HOME}")
    ));
    let run_dir = fixture.path("run");
    let mut up = fixture.up(
        &manifest,
        &["--exit-when-ready", "--run-dir", run_dir.to_str().unwrap()],
    );
    up.wait(BOUND);
    let log = std::fs::read_to_string(run_dir.join("logs/echo.log")).unwrap_or_default();
    for arg in &hostile {
        assert!(
            log.contains(&format!("ARG[{arg}]")),
            "`{arg}` did not arrive literally: {log}\n{}",
            up.output()
        );
    }
    assert!(!marker.exists(), "a shell ran part of an argument");
}

#[test]
fn a_command_string_is_split_not_run_by_a_shell() {
    let fixture = Fixture::new();
    let marker = fixture.path("pwned");
    let manifest = fixture.manifest(&format!(
        r#"
version: 1
agents:
  echo:
    command: "printf 'ARG[%s]\n' 'x; touch {0}' && touch {0}"
    readiness: {{ start_period: 50ms }}
    restart: never
"#,
        marker.display()
    ));
    let run_dir = fixture.path("run");
    let mut up = fixture.up(
        &manifest,
        &["--exit-when-ready", "--run-dir", run_dir.to_str().unwrap()],
    );
    up.wait(BOUND);
    let log = std::fs::read_to_string(run_dir.join("logs/echo.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("ARG[x; touch {}]", marker.display())),
        "{log}\n{}",
        up.output()
    );
    assert!(!marker.exists(), "`&&` was run by a shell");
}

#[test]
fn names_with_shell_or_path_characters_are_refused_before_start() {
    let fixture = Fixture::new();
    for name in ["a;b", "$(x)", "../escape", "with space", "a/b"] {
        let manifest = fixture.manifest(&format!(
            "version: 1\nagents:\n  {name:?}:\n    command: [\"true\"]\n"
        ));
        let mut up = fixture.up(&manifest, &[]);
        let status = up.wait(BOUND);
        assert_eq!(
            status.code(),
            Some(1),
            "`{name}` must be refused by the checks: {}",
            up.output()
        );
        assert!(up.output().contains("invalid_agent"), "{}", up.output());
    }
}
