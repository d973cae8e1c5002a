//! Broken and hostile manifests: each gets a clear error naming the file
//! (and line where there is one), the documented exit code, no panic, and
//! finishes within a time bound.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `supervisor check` on `bytes`; kills it past `limit`.
fn check_bytes(bytes: &[u8], limit: Duration) -> (i32, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.yaml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .args(["check", "--no-bind-check", "-c"])
        .arg(&path)
        .env("SUPERVISOR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained while it runs, so a long report cannot fill the pipe and stall it.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
        stderr
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("check did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader.join().unwrap();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        status.code().expect("exited, not killed by a signal"),
        stderr,
        start.elapsed(),
    )
}

fn check(text: &str) -> (i32, String) {
    let (code, stderr, _) = check_bytes(text.as_bytes(), Duration::from_secs(20));
    (code, stderr)
}

fn assert_read_error(text: &str, needle: &str, line: Option<usize>) {
    let (code, stderr) = check(text);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    assert!(stderr.contains("hostile.yaml"), "names the file: {stderr}");
    if let Some(line) = line {
        assert!(
            stderr.contains(&format!("hostile.yaml:{line}:")),
            "line {line}: {stderr}"
        );
    }
}

#[test]
fn truncated_yaml() {
    assert_read_error(
        "version: 1\nagents:\n  a:\n    command: [\"true\", \"unterminated\n",
        "invalid YAML",
        None,
    );
}

#[test]
fn billion_laughs() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        text.push_str(&format!(
            "a{level}: &a{level} [{}]\n",
            [previous.as_str(); 10].join(", ")
        ));
    }
    assert_read_error(&text, "alias bomb", None);
}

#[test]
fn ten_megabyte_file_is_refused_quickly() {
    let mut text = String::from("version: 1\nagents:\n");
    while text.len() < 10 * 1024 * 1024 {
        text.push_str("  # padding padding padding padding padding padding padding padding\n");
    }
    let (code, stderr, took) = check_bytes(text.as_bytes(), Duration::from_secs(20));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("the limit is"), "{stderr}");
    assert!(took < Duration::from_secs(5), "refusing took {took:?}");
}

#[test]
fn deep_nesting() {
    let depth = 10_000;
    let text = format!(
        "version: 1\nagents: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let (code, stderr) = check(&text);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("nesting") || stderr.contains("recursion"),
        "{stderr}"
    );
}

#[test]
fn not_utf8() {
    let (code, stderr, _) = check_bytes(
        b"version: 1\nagents:\n  a:\n    command: [\"\xff\xfe\"]\n",
        Duration::from_secs(20),
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("not UTF-8") && stderr.contains("hostile.yaml:4"),
        "{stderr}"
    );
}

#[test]
fn wrong_types_everywhere() {
    for (text, line) in [
        ("version: one\n", 1),
        ("version: 1\nagents: 5\n", 2),
        ("version: 1\nagents:\n  a: [1, 2]\n", 3),
        ("version: 1\nagents:\n  a:\n    command: {x: 1}\n", 4),
        (
            "version: 1\nagents:\n  a:\n    command: [x]\n    env: [A, B]\n",
            5,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [x]\n    restart: sometimes\n",
            5,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [x]\n    stop: {signal: SIGNOPE}\n",
            5,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [x]\n    readiness: {tcp: 1, http: \"http://x\"}\n",
            5,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [x]\n    heartbeat: {interval: soon}\n",
            5,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [x]\n    required: perhaps\n",
            5,
        ),
    ] {
        let (code, stderr) = check(text);
        assert_eq!(code, 2, "{text:?}: {stderr}");
        assert!(
            stderr.contains(&format!("hostile.yaml:{line}:")),
            "{text:?} should point at line {line}: {stderr}"
        );
    }
}

#[test]
fn huge_and_negative_numbers() {
    let (code, stderr) =
        check("version: 1\nagents:\n  a:\n    command: [x]\n    port: 99999999999999999999999\n");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("hostile.yaml:5:"), "{stderr}");
    // In range for i64 but not a port: a check finding (exit 1), as `invalid_port`.
    let (code, stderr) = check(
        "version: 1\nagents:\n  a:\n    command: [x]\n    port: -1\n  b:\n    command: [x]\n    port: 4294967296\n",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("hostile.yaml:5:") && stderr.contains("hostile.yaml:8:"),
        "{stderr}"
    );
}

#[test]
fn unicode_and_unsafe_names() {
    let (code, stderr) = check(
        "version: 1\nagents:\n  \"agent/../../etc\":\n    command: [x]\n  \"with space\":\n    command: [x]\n  \"ünïcode\":\n    command: [x]\n",
    );
    assert_eq!(code, 1, "{stderr}");
    for line in [3, 5, 7] {
        assert!(
            stderr.contains(&format!("hostile.yaml:{line}: agent name")),
            "line {line}: {stderr}"
        );
    }
}

#[test]
fn variables_that_name_each_other_do_not_loop() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loop.env"), "A=${B}\nB=${A}\n").unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        "version: 1\nagents:\n  a:\n    command: [\"echo\", \"${A}\"]\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .args([
            "check",
            "--no-bind-check",
            "-c",
            "m.yaml",
            "--env-file",
            "loop.env",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(matches!(output.status.code(), Some(0 | 2)), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn duplicate_keys_everywhere_are_all_reported() {
    let (code, stderr) = check(
        "version: 1\nversion: 1\nagents:\n  a:\n    command: [x]\n    command: [y]\n  a:\n    command: [z]\n",
    );
    assert_eq!(code, 1, "{stderr}");
    for line in [2, 6, 7] {
        assert!(
            stderr.contains(&format!("hostile.yaml:{line}:")),
            "line {line}: {stderr}"
        );
    }
}

/// Issue 15: what a careless or hostile author writes and `check` used to
/// pass with 0 errors is now a located error (exit 1), each in bounded time.
#[test]
fn issue_15_careless_manifests_are_located_errors() {
    let cases: &[(&str, &str, usize)] = &[
        (
            "version: 1\nagents:\n  a:\n    command: []\n",
            "has an empty command",
            4,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [\"\"]\n",
            "the program name is empty",
            4,
        ),
        (
            "version: 1\nagents:\n  Db: {command: [\"true\"]}\n  DB: {command: [\"true\"]}\n",
            "differ only in case or punctuation",
            4,
        ),
        (
            "version: 1\nagents:\n  a-b: {command: [\"true\"]}\n  a_b: {command: [\"true\"]}\n",
            "both become `A_B_ENDPOINT`",
            4,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    env: {X: \"a\\0b\"}\n",
            "holds a NUL byte",
            5,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    env:\n      \"A=B\": x\n",
            "contains `=`",
            6,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    env:\n      \"\": x\n",
            "is empty",
            6,
        ),
        (
            "version: 99\nagents:\n  a: {command: [\"true\"]}\n",
            "`version: 99`",
            1,
        ),
        (
            "version: 1\nagents:\n  a: {command: [\"true\"]}\n---\nagents:\n  b: {command: [\"true\"]}\n",
            "second YAML document",
            4,
        ),
        (
            "version: 1\nagents:\n  a:\n    command: [\"true\"]\n    port: 7000\n    health_check_port: 7000\n",
            "for both port and health_check_port",
            6,
        ),
        (
            "version: 1\nagents:\n  \"../etc\": {command: [\"true\"]}\n",
            "may hold only letters",
            3,
        ),
    ];
    for (text, needle, line) in cases {
        let (code, stderr) = check(text);
        assert_eq!(code, 1, "{text}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{text}: expected `{needle}` in {stderr}"
        );
        assert!(
            stderr.contains(&format!("hostile.yaml:{line}:")),
            "{text}: line {line}: {stderr}"
        );
    }
    // A dependency on a disabled agent is a warning with its line (exit 0).
    let (code, stderr) = check(
        "version: 1\nagents:\n  a: {command: [\"true\"], enabled: false}\n  b: {command: [\"true\"], dependencies: [a]}\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("hostile.yaml:4:") && stderr.contains("which is disabled"),
        "{stderr}"
    );
}

/// 50,000 agents as one chain, and as one ring (a single cycle through all
/// of them): read and checked in bounded time (linear graph work).
#[test]
fn fifty_thousand_deep_chain_and_ring_are_checked_in_bounded_time() {
    let mut chain = String::from("version: 1\nagents:\n  a0: {command: [\"true\"]}\n");
    let mut ring = String::from("version: 1\nagents:\n");
    for index in 0..50_000 {
        if index > 0 {
            chain.push_str(&format!(
                "  a{index}: {{command: [\"true\"], dependencies: [a{}]}}\n",
                index - 1
            ));
        }
        ring.push_str(&format!(
            "  a{index}: {{command: [\"true\"], dependencies: [a{}]}}\n",
            (index + 1) % 50_000
        ));
    }
    // Generous bounds for a debug build on a loaded machine.
    let (code, stderr, _) = check_bytes(chain.as_bytes(), Duration::from_secs(60));
    assert_eq!(code, 0, "{}", &stderr[..stderr.len().min(2000)]);
    let (code, stderr, _) = check_bytes(ring.as_bytes(), Duration::from_secs(60));
    assert_eq!(code, 1);
    assert_eq!(stderr.matches("error[cycle]").count(), 1);
    assert!(
        stderr.contains("remove the dependency `a0` -> `a1` (line 3)"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
}
