//! Benchmark (not a test): load + check + plan a generated 1,000-agent
//! manifest and print the times. The baseline, measured in the same run, is
//! `saphyr-parser` producing the events of the same text (what reading it
//! with a full YAML parser costs at least), then the positioned tree that
//! `load` builds from those events (`yaml::parse`).
//!
//! Run: `cargo bench --bench plan` (release build). The `check` targets are
//! in `cargo bench --bench check` (largest real manifest, 50,000 agents).

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use supervisor::check::{CheckOptions, check_manifest};
use supervisor::manifest::{LoadOptions, load_str, yaml};
use supervisor::plan::Plan;

/// A layered DAG: agent i depends on up to three agents of lower index
/// (a deterministic pseudo-random choice), each with a port and a health port.
fn manifest(agents: usize) -> String {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text =
        String::from("version: 1\ndefaults:\n  env: { PYTHONUNBUFFERED: \"1\" }\nagents:\n");
    for index in 0..agents {
        let deps: Vec<String> = if index == 0 {
            Vec::new()
        } else {
            (0..(next() % 4))
                .map(|_| format!("agent{}", next() as usize % index))
                .collect()
        };
        text.push_str(&format!(
            "  agent{index}:\n    command: [\"python3\", \"agents/a{index}.py\", \"--port\", \"{port}\"]\n    port: ${{PORT_OFFSET}}+{port}\n    health_check_port: {health}\n    dependencies: [{deps}]\n    readiness: {{ tcp: {port}, timeout: 30s }}\n    restart: {{ policy: on-failure, max_restarts: 5, within: 60s }}\n",
            port = 10000 + index * 2,
            health = 10001 + index * 2,
            deps = deps.join(", ")
        ));
    }
    text
}

/// Runs every job once per round, `rounds` times, and returns each job's
/// median. Interleaving puts this machine's slow spells (its timings drift
/// by tens of percent from one second to the next) on every job alike, so
/// the ratios hold even when the absolute times move.
fn interleaved(rounds: usize, jobs: &mut [&mut dyn FnMut()]) -> Vec<Duration> {
    let mut times = vec![Vec::with_capacity(rounds); jobs.len()];
    for _ in 0..rounds {
        for (job, times) in jobs.iter_mut().zip(times.iter_mut()) {
            let start = Instant::now();
            job();
            times.push(start.elapsed());
        }
    }
    times
        .into_iter()
        .map(|mut times| {
            times.sort();
            times[rounds / 2]
        })
        .collect()
}

fn main() {
    let agents = 1000;
    let text = manifest(agents);
    let options = LoadOptions {
        environment: Some(HashMap::new()),
        ..LoadOptions::default()
    };
    // The generated agents name no real scripts: the file checks are off,
    // as in earlier runs of this bench.
    let no_bind = CheckOptions {
        bind_check: false,
        this_host: "localhost".into(),
        files: false,
        compile: false,
        running: Default::default(),
    };
    let with_bind = CheckOptions {
        bind_check: true,
        ..no_bind.clone()
    };
    let runs = 31;
    let load = || load_str(Path::new("bench.yaml"), &text, &options).expect("valid manifest");
    let loaded_once = load();

    let times = interleaved(
        runs,
        &mut [
            &mut || {
                let mut count = 0usize;
                for event in saphyr_parser::Parser::new_from_str(black_box(&text)) {
                    black_box(event.expect("valid YAML"));
                    count += 1;
                }
                black_box(count);
            },
            &mut || {
                black_box(yaml::parse(black_box(&text)).expect("valid YAML"));
            },
            &mut || {
                black_box(load());
            },
            &mut || {
                let loaded = load();
                let report = check_manifest(loaded.manifest, loaded.problems, &no_bind);
                assert!(!report.has_errors(), "{:?}", report.problems.first());
                black_box(report);
            },
            &mut || {
                black_box(loaded_once.manifest.clone());
            },
            &mut || {
                black_box(check_manifest(
                    loaded_once.manifest.clone(),
                    Vec::new(),
                    &no_bind,
                ));
            },
            &mut || {
                let loaded = load();
                black_box(check_manifest(loaded.manifest, loaded.problems, &with_bind));
            },
            &mut || {
                black_box(Plan::new(&loaded_once.manifest).expect("acyclic"));
            },
        ],
    );
    let [
        events,
        parse,
        load,
        check,
        clone_only,
        checks_only,
        check_bind,
        plan,
    ] = times[..]
    else {
        unreachable!("nine jobs")
    };
    let levels = Plan::new(&loaded_once.manifest)
        .expect("acyclic")
        .levels
        .len();

    // The command a person runs, as a whole process (start, read the file,
    // check, print, exit), with `--version` as the cost of starting at all.
    let file = std::env::temp_dir().join(format!("bench-plan-{}.yaml", std::process::id()));
    std::fs::write(&file, &text).expect("a writable temp dir");
    let config = file.to_str().expect("a UTF-8 temp path");
    let run = |args: &[&str]| {
        let status = Command::new(env!("CARGO_BIN_EXE_supervisor"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("the supervisor binary runs");
        assert!(
            status.code().is_some_and(|code| code <= 1),
            "{args:?}: {status}"
        );
    };
    let processes = interleaved(
        21,
        &mut [
            &mut || run(&["--version"]),
            &mut || {
                run(&[
                    "check",
                    "--no-bind-check",
                    "--no-file-check",
                    "--config",
                    config,
                ])
            },
            &mut || run(&["check", "--no-file-check", "--config", config]),
        ],
    );
    let [process_start, cli_check, cli_check_bind] = processes[..] else {
        unreachable!("three jobs")
    };
    let _ = std::fs::remove_file(&file);

    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let ratio = |duration: Duration| duration.as_secs_f64() / events.as_secs_f64();
    println!(
        "bench-plan: {agents} agents, {} KiB of YAML, {levels} levels, median of {runs} interleaved runs",
        text.len() / 1024
    );
    println!(
        "  saphyr-parser events (baseline) {:6.2} ms   1.00x",
        ms(events)
    );
    println!(
        "  yaml tree (yaml::parse)      {:8.2} ms  {:5.2}x",
        ms(parse),
        ratio(parse)
    );
    println!(
        "  load (parse+vars+validate)   {:8.2} ms  {:5.2}x",
        ms(load),
        ratio(load)
    );
    println!(
        "  check (load + all checks)    {:8.2} ms  {:5.2}x",
        ms(check),
        ratio(check)
    );
    let checks = checks_only.saturating_sub(clone_only);
    println!(
        "  checks alone (no load)       {:8.2} ms  {:5.2}x",
        ms(checks),
        ratio(checks)
    );
    println!(
        "  check + bind test of {} ports {:7.2} ms  {:5.2}x",
        agents * 2,
        ms(check_bind),
        ratio(check_bind)
    );
    println!(
        "  plan (graph, levels)         {:8.2} ms  {:5.2}x",
        ms(plan),
        ratio(plan)
    );
    println!("whole `supervisor` processes, median of 21:");
    println!(
        "  supervisor --version (start) {:8.2} ms  {:5.2}x",
        ms(process_start),
        ratio(process_start)
    );
    println!(
        "  check --no-bind-check        {:8.2} ms  {:5.2}x",
        ms(cli_check),
        ratio(cli_check)
    );
    println!(
        "  check (with the bind test)   {:8.2} ms  {:5.2}x",
        ms(cli_check_bind),
        ratio(cli_check_bind)
    );
}
