//! Security properties that need no network: agents are started with
//! `execve` of their argv, so no manifest value is ever interpreted by a
//! shell unless the manifest says `shell: true`; names that could escape
//! the run directory or a shell are refused before anything starts.

use crate::common;

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

/// Issue 16, item 5: a run directory another user owns, or one anyone can
/// write to, is refused before anything is written in it.
#[test]
fn issue_16_a_run_directory_another_user_controls_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  a:
    command: ["sleep", "30"]
    readiness: { start_period: 50ms }
"#,
    );
    let writable = fixture.path("writable");
    std::fs::create_dir(&writable).unwrap();
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut up = fixture.up(
        &manifest,
        &["--exit-when-ready", "--run-dir", writable.to_str().unwrap()],
    );
    let status = up.wait(BOUND);
    assert!(!status.success(), "{}", up.output());
    assert!(
        up.output().contains("writable by group or others"),
        "{}",
        up.output()
    );
    assert_eq!(std::fs::read_dir(&writable).unwrap().count(), 0);

    let Some((uid, gid)) =
        common::other_user("issue_16_a_run_directory_another_user_controls_is_refused")
    else {
        return;
    };
    let theirs = fixture.path("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(uid), Some(gid)).unwrap();
    let mut up = fixture.up(
        &manifest,
        &["--exit-when-ready", "--run-dir", theirs.to_str().unwrap()],
    );
    let status = up.wait(BOUND);
    assert!(!status.success(), "{}", up.output());
    assert!(
        up.output()
            .contains(&format!("is owned by {}", common::OTHER_USER)),
        "{}",
        up.output()
    );
    assert_eq!(
        std::fs::read_dir(&theirs).unwrap().count(),
        0,
        "something was written in the other user's directory"
    );
    assert!(fixture.records().is_empty(), "an agent was started");
}

/// Issue 16, item 5: symbolic links planted where the supervisor writes
/// (`supervisor.pid`, `logs/<agent>.log`) are refused, never followed.
#[test]
fn issue_16_planted_symlinks_are_not_followed() {
    let fixture = Fixture::new();
    let manifest = fixture.manifest(
        r#"
version: 1
agents:
  a:
    command: ["sh", "-c", "echo hello from a; sleep 30"]
    readiness: { start_period: 50ms }
"#,
    );
    for (planted, victim) in [("supervisor.pid", "victim"), ("logs/a.log", "victim2")] {
        let run_dir = fixture.path(&format!("run-{victim}"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(run_dir.join("logs"))
            .unwrap();
        let victim = fixture.path(victim);
        std::fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, run_dir.join(planted)).unwrap();
        let mut up = fixture.up(
            &manifest,
            &["--exit-when-ready", "--run-dir", run_dir.to_str().unwrap()],
        );
        let status = up.wait(BOUND);
        assert!(!status.success(), "{planted}: {}", up.output());
        assert!(
            up.output().contains("is a symbolic link"),
            "{planted}: {}",
            up.output()
        );
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious\n",
            "the supervisor wrote through the planted {planted}"
        );
    }
    assert!(fixture.records().is_empty(), "an agent was started");
}

/// Issue 16, item 5: a listener another user put at `control.sock` never
/// receives a request: the client checks the peer's credentials first.
#[test]
fn issue_16_a_foreign_listener_on_the_control_socket_gets_nothing() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::DirBuilderExt;
    let Some((uid, gid)) =
        common::other_user("issue_16_a_foreign_listener_on_the_control_socket_gets_nothing")
    else {
        return;
    };
    let fixture = Fixture::new();
    let run_dir = fixture.path("run");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&run_dir)
        .unwrap();
    let socket = run_dir.join("control.sock");
    // Bound by root (so the file looks right), listening as the other user:
    // the kernel records the listener's credentials at listen().
    let script = format!(
        r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind({socket:?})
os.setgid({gid}); os.setuid({uid})
s.listen(5)
print("listening", flush=True)
s.settimeout(60)
conn, _ = s.accept()
conn.settimeout(10)
data = b""
try:
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
except Exception:
    pass
print("received", len(data), "bytes", data, flush=True)
"#,
        socket = socket.to_str().unwrap()
    );
    let mut listener = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start python3");
    let _guard = common::KillOnDrop(vec![listener.id()]);
    let mut lines = BufReader::new(listener.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "listening");
    let down = common::cli(&["down", "--run-dir", run_dir.to_str().unwrap()], BOUND);
    assert_ne!(down.code, Some(0), "{down:?}");
    assert!(
        down.stderr.contains("not by you or root") && down.stderr.contains(common::OTHER_USER),
        "{down:?}"
    );
    let answer = lines.next().unwrap().unwrap();
    assert_eq!(
        answer, "received 0 bytes b''",
        "the foreign listener got a request"
    );
    let _ = listener.wait();
}
