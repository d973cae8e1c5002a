//! Benchmark (not a test): `supervisor check` end to end (release binary,
//! `--no-bind-check --no-file-check`) on the largest legacy corpus file and
//! on generated 50,000-agent manifests, flat and as one 50,000-deep chain.
//! A 50,000-agent ring (one cycle through all) shows the cycle search is
//! linear too. Prints, per file, the median wall time of 5 runs and the child's peak
//! resident memory, and the load average at the time.
//!
//! Run: `cargo bench --bench check`. Targets: under 50 ms for the largest
//! real file; under 1.5 s for each 50,000-agent file (the graph work is
//! linear, so the chain costs about what the flat file costs).
//! The corpus is found as the tests find it (`SUPERVISOR_CORPUS`, else
//! `../shared/corpus`); without it that line says so.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENTS: usize = 50_000;

/// One run of `supervisor check`: wall time, peak RSS in KiB, exit code.
// The child is reaped by `wait4` (for its own rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_once(file: &Path) -> (Duration, i64, i32) {
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .args(["check", "--no-bind-check", "--no-file-check", "-c"])
        .arg(file)
        .env("PORT_OFFSET", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run supervisor check");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet waited for; the pointers are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(waited, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (elapsed, usage.ru_maxrss, code)
}

fn measure(label: &str, file: &Path) {
    let mut runs: Vec<(Duration, i64, i32)> = (0..5).map(|_| run_once(file)).collect();
    runs.sort_by_key(|run| run.0);
    let (median, _, code) = runs[runs.len() / 2];
    let peak = runs.iter().map(|run| run.1).max().unwrap_or(0);
    println!(
        "check {label:<34} {:>8.1} ms  peak RSS {:>6.1} MB  (exit {code})",
        median.as_secs_f64() * 1000.0,
        peak as f64 / 1024.0
    );
}

fn flat() -> String {
    let mut text = String::from("version: 1\nagents:\n");
    for index in 0..AGENTS {
        text.push_str(&format!(
            "  a{index}: {{command: [\"true\"], port: {}}}\n",
            10_000 + index
        ));
    }
    text
}

fn chain() -> String {
    let mut text = String::from("version: 1\nagents:\n  a0: {command: [\"true\"]}\n");
    for index in 1..AGENTS {
        text.push_str(&format!(
            "  a{index}: {{command: [\"true\"], dependencies: [a{}]}}\n",
            index - 1
        ));
    }
    text
}

/// A 50,000-agent ring: one knot with one cycle through every agent.
fn ring() -> String {
    let mut text = String::from("version: 1\nagents:\n");
    for index in 0..AGENTS {
        text.push_str(&format!(
            "  a{index}: {{command: [\"true\"], dependencies: [a{}]}}\n",
            (index + 1) % AGENTS
        ));
    }
    text
}

// The one corpus lookup (`SUPERVISOR_CORPUS`, else `../shared/corpus`),
// shared with the tests.
#[path = "../tests/common/corpus.rs"]
#[allow(dead_code)]
mod corpus;

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average (1, 5, 15 min): {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    match corpus::corpus() {
        Some(dir) => {
            // The largest file that reads (the three unparseable ones are
            // rejected at their first broken line, which proves nothing).
            let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap_or_default();
            let largest = index
                .lines()
                .skip(1)
                .filter(|line| !line.ends_with("unparseable") && !line.contains("\tunparseable"))
                .filter_map(|line| line.split('\t').next())
                .map(|name| dir.join(name))
                .max_by_key(|path| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0));
            match largest {
                Some(path) => {
                    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    let label = format!(
                        "{} ({} KB)",
                        path.file_name().unwrap_or_default().to_string_lossy(),
                        size / 1024
                    );
                    measure(&label, &path);
                }
                None => println!("check largest corpus file: no readable file in INDEX.tsv"),
            }
        }
        None => println!(
            "check largest corpus file: SKIPPED ({})",
            corpus::corpus_missing()
        ),
    }
    let dir = tempfile::tempdir().expect("temp dir");
    for (label, text) in [
        ("50,000 agents, flat", flat()),
        ("50,000 agents, one chain", chain()),
        ("50,000 agents, one ring (a cycle)", ring()),
    ] {
        let path = dir
            .path()
            .join(format!("{}.yaml", label.replace([' ', ','], "_")));
        std::fs::write(&path, text).expect("write manifest");
        measure(label, &path);
    }
}
