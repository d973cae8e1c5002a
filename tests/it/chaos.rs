//! Chaos suite: 50 agents on a layered dependency graph; for a fixed time
//! (`CHAOS_SECONDS`, 60 by default; `scripts/chaos.sh --long` runs 600) a
//! seeded fault injector picks a random ready agent each round and SIGKILLs
//! it, SIGSTOPs it (a hang, found by its liveness probe), crashes it with
//! SIGABRT (a crash by signal), or makes it crash at start N times in a row. Some agents fork a
//! grandchild, some ignore SIGTERM, some flood stdout all along, and three
//! SDK agents each send a burst of 2,000 errors on the error bus. One more
//! agent daemonizes (its daemon leaves its session) and is SIGKILLed one
//! round in eight; nobody reads the console (a paused terminal).
//!
//! At the end it asserts, and prints as figures: every agent is back to
//! ready; each agent's restart count equals the faults injected into it;
//! every error sent is in `errors.jsonl` or counted there in a
//! `rate_limited` summary (the bus's per-agent limit); no
//! zombie children of the supervisor; after `down`, no process of the run is
//! left (every recorded pid, grandchild and daemon); at most one daemon ran
//! at a time; the stalled console dropped lines (counted) while `status`
//! kept answering; the supervisor's RSS stayed bounded.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Fixture, agent_of, alive, cli, port, status_json, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const LEVELS: usize = 5;
const PER_LEVEL: usize = 10;
/// SDK agents that each report `BURST` errors at once, some seconds in.
const BURSTERS: usize = 3;
const BURST: usize = 2000;
const FAULTY: &str = env!("CARGO_BIN_EXE_agent-faulty");
const BOUND: Duration = Duration::from_secs(120);

/// xorshift64: reproducible fault sequences from `CHAOS_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill,
    Hang,
    Abort,
    CrashAtStart(u32),
}

/// The agent that daemonizes (see [`manifest`]).
const DAEMONIZER: &str = "daemonizer";

/// The pids its daemons wrote, and how many of them are running.
fn daemons(fixture: &Fixture) -> (Vec<u32>, usize) {
    let pids: Vec<u32> = std::fs::read_to_string(fixture.path("daemons"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    let running = pids.iter().filter(|pid| alive(**pid)).count();
    (pids, running)
}

fn name(level: usize, index: usize) -> String {
    format!("a{level}x{index}")
}

/// The manifest: agent `i` of each level depends on agents `i` and `i+1` of
/// the level above. Index 0 forks a grandchild, 1 ignores SIGTERM, 2 floods
/// stdout, 3 can be told to crash at start.
fn manifest(fixture: &Fixture) -> String {
    let mut text = String::from("version: 1\nagents:\n");
    for level in 0..LEVELS {
        for index in 0..PER_LEVEL {
            let http = port();
            let mut flags = vec![
                "\"FAKE\"".to_string(),
                "\"--ready-after\"".into(),
                "\"100ms\"".into(),
                "\"--port\"".into(),
                format!("\"{http}\""),
            ];
            match index {
                0 => flags.push("\"--fork-grandchild\"".into()),
                1 => flags.push("\"--ignore-sigterm\"".into()),
                2 => flags.extend(["\"--flood-lines-per-sec\"".to_string(), "\"2000\"".into()]),
                3 => flags.extend([
                    "\"--crash-at-start-file\"".to_string(),
                    format!(
                        "\"{}\"",
                        fixture
                            .path(&format!("{}.crash", name(level, index)))
                            .display()
                    ),
                ]),
                _ => {}
            }
            let deps: Vec<String> = if level == 0 {
                Vec::new()
            } else {
                vec![
                    name(level - 1, index),
                    name(level - 1, (index + 1) % PER_LEVEL),
                ]
            };
            text.push_str(&format!(
                "  {name}:\n    command: [{flags}]\n    port: {http}\n    dependencies: [{deps}]\n    readiness: {{ tcp: {http}, timeout: 60s, interval: 20ms }}\n    liveness: {{ http: \"http://127.0.0.1:{http}/health\", interval: 500ms, timeout: 1s, failures: 3 }}\n    restart: {{ policy: always, backoff: {{ initial: 50ms, max: 500ms, multiplier: 2 }}, max_restarts: 10000, within: 60s }}\n    stop: {{ signal: SIGTERM, grace: 1s }}\n",
                name = name(level, index),
                flags = flags.join(", "),
                deps = deps.join(", "),
            ));
        }
    }
    // A daemonizing agent: its daemon leaves the agent's session and
    // process group; it must die with every run of the agent.
    let script = fixture.path("daemonize.sh");
    std::fs::write(
        &script,
        format!(
            "setsid -f sh -c 'echo $$ >> {}; exec sleep 3600'\nexec sleep 3600\n",
            fixture.path("daemons").display()
        ),
    )
    .expect("write the daemonizing script");
    text.push_str(&format!(
        "  {DAEMONIZER}:\n    command: [\"sh\", \"{}\"]\n    readiness: {{ start_period: 100ms }}\n    restart: {{ policy: always, backoff: {{ initial: 50ms, max: 500ms, multiplier: 2 }}, max_restarts: 10000, within: 60s }}\n    stop: {{ signal: SIGTERM, grace: 1s }}\n",
        script.display()
    ));
    for index in 0..BURSTERS {
        text.push_str(&format!(
            "  burst{index}:\n    command: [\"{FAULTY}\", \"--mode\", \"burst\", \"--after\", \"{after}\", \"--burst\", \"{BURST}\"]\n    readiness: sdk\n",
            after = 2 + 3 * index,
        ));
    }
    text
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Zombie processes whose parent is `parent`.
fn zombies_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z")
            && fields.get(1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(parent)
        {
            found.push(pid);
        }
    }
    found
}

fn restarts(status: &serde_json::Value) -> BTreeMap<String, u64> {
    status["agents"]
        .as_array()
        .map(|agents| {
            agents
                .iter()
                .map(|agent| {
                    (
                        agent["name"].as_str().unwrap_or_default().to_string(),
                        agent["restarts"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn all_ready(status: &serde_json::Value) -> bool {
    status["agents"].as_array().is_some_and(|agents| {
        agents.len() == LEVELS * PER_LEVEL + BURSTERS + 1
            && agents.iter().all(|agent| agent["state"] == "ready")
    })
}

#[test]
fn chaos_faults_are_recovered_and_counted() {
    let seconds: u64 = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let fixture = Fixture::new();
    let manifest = fixture.manifest(&manifest(&fixture));
    // The default run directory: `.supervisor/` beside the manifest.
    let run_dir = fixture.path(".supervisor");
    // Agent output goes to a console nobody reads (a paused terminal).
    let mut up = fixture.up_with_stalled_console(&manifest, &[]);
    let supervisor = up.pid();
    let status_of = |manifest: &Path| status_json(manifest);
    let started = Instant::now();
    let ready_deadline = Instant::now() + BOUND;
    loop {
        let status = status_of(&manifest);
        if status.as_ref().is_some_and(all_ready) {
            break;
        }
        if Instant::now() > ready_deadline {
            let not_ready: Vec<String> = status
                .as_ref()
                .and_then(|status| status["agents"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter(|agent| agent["state"] != "ready")
                .map(|agent| format!("{} {} {}", agent["name"], agent["state"], agent["reason"]))
                .collect();
            panic!(
                "not all 50 agents ready within {BOUND:?} (status answered: {}): {not_ready:#?}\nsupervisor output:\n{}",
                status.is_some(),
                up.output()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let start_took = started.elapsed();
    let rss_start = rss_kib(supervisor);

    let mut rng = Rng(seed);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut injected: BTreeMap<Fault, u32> = BTreeMap::new();
    let mut recoveries: Vec<Duration> = Vec::new();
    let mut pending: BTreeMap<String, (u64, Instant)> = BTreeMap::new();
    let mut max_zombies_seen = 0usize;
    let mut max_daemons_seen = 0usize;
    let chaos_start = Instant::now();
    while chaos_start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(700));
        let Some(status) = status_of(&manifest) else {
            continue;
        };
        let counts = restarts(&status);
        // Settle recoveries: back to ready with the expected count.
        pending.retain(|agent, (want, since)| {
            let entry = agent_of(&status, agent);
            if entry["state"] == "ready" && counts.get(agent).copied().unwrap_or(0) >= *want {
                recoveries.push(since.elapsed());
                false
            } else {
                true
            }
        });
        max_zombies_seen = max_zombies_seen.max(zombies_of(supervisor).len());
        max_daemons_seen = max_daemons_seen.max(daemons(&fixture).1);
        let level = rng.below(LEVELS);
        let index = rng.below(PER_LEVEL);
        // One round in eight kills the daemonizing agent instead.
        let daemonizer = rng.below(8) == 0;
        let target = match daemonizer {
            true => DAEMONIZER.to_string(),
            false => name(level, index),
        };
        let entry = agent_of(&status, &target);
        if pending.contains_key(&target) || entry["state"] != "ready" {
            continue;
        }
        let Some(pid) = entry["pid"].as_u64().map(|pid| pid as u32) else {
            continue;
        };
        let fault = match rng.below(4) {
            // No liveness probe: a hang would never be noticed.
            _ if daemonizer => Fault::Kill,
            0 => Fault::Kill,
            1 => Fault::Hang,
            2 => Fault::Abort,
            _ if index == 3 => Fault::CrashAtStart(1 + rng.below(3) as u32),
            _ => Fault::Kill,
        };
        let extra = match fault {
            Fault::Kill => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                1
            }
            Fault::Hang => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
                1
            }
            Fault::Abort => {
                // A crash by signal, like a segfault. (A SIGSEGV sent with
                // kill() does not kill a Rust program: its stack-overflow
                // handler resets the action and returns.)
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGABRT);
                1
            }
            Fault::CrashAtStart(times) => {
                std::fs::write(
                    fixture.path(&format!("{target}.crash")),
                    format!("{times}\n"),
                )
                .expect("write crash count");
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                1 + u64::from(times)
            }
        };
        *injected.entry(fault).or_insert(0) += 1;
        let want = counts.get(&target).copied().unwrap_or(0) + extra;
        *expected.entry(target.clone()).or_insert(0) += extra;
        pending.insert(target, (want, Instant::now()));
    }

    // Everything comes back, with exactly the restarts we caused.
    let settle_deadline = Instant::now() + BOUND;
    let final_status = loop {
        let status = status_of(&manifest);
        if let Some(status) = &status {
            let counts = restarts(status);
            let matches = expected
                .iter()
                .all(|(agent, want)| counts.get(agent) == Some(want))
                && counts.values().sum::<u64>() == expected.values().sum::<u64>();
            if all_ready(status) && matches {
                break status.clone();
            }
        }
        if Instant::now() > settle_deadline {
            let counts = status.as_ref().map(restarts).unwrap_or_default();
            let differences: Vec<String> = counts
                .iter()
                .filter(|(agent, count)| expected.get(*agent).copied().unwrap_or(0) != **count)
                .map(|(agent, count)| {
                    let causes = status
                        .as_ref()
                        .map(|status| agent_of(status, agent)["restarts_by_cause"].to_string())
                        .unwrap_or_default();
                    format!(
                        "{agent}: expected {} observed {count} {causes}",
                        expected.get(agent).copied().unwrap_or(0)
                    )
                })
                .collect();
            panic!(
                "agents did not settle with the injected restart counts within {BOUND:?}: {differences:#?}; faults {injected:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Every error the bursters sent is in the journal, or counted in one of
    // its rate-limit summaries (written 10 s into a suppression).
    let journal = run_dir.join("errors.jsonl");
    let count_errors = || -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
        {
            if let Ok(record) = serde_json::from_str::<serde_json::Value>(line) {
                let errors = if record["kind"] == "rate_limited" {
                    record["context"]["suppressed"].as_u64().unwrap_or(0) as usize
                } else {
                    1
                };
                *counts
                    .entry(record["agent"].as_str().unwrap_or_default().to_string())
                    .or_insert(0) += errors;
            }
        }
        counts
    };
    let burst_deadline = Instant::now() + BOUND;
    let errors_recorded = loop {
        let counts = count_errors();
        if (0..BURSTERS)
            .all(|index| counts.get(&format!("burst{index}")).copied().unwrap_or(0) >= BURST)
            || Instant::now() > burst_deadline
        {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let errors_sent = BURSTERS * BURST;
    let errors_of_bursters: usize = (0..BURSTERS)
        .map(|index| {
            errors_recorded
                .get(&format!("burst{index}"))
                .copied()
                .unwrap_or(0)
        })
        .sum();
    let zombies_at_end = zombies_of(supervisor);
    let rss_end = rss_kib(supervisor);

    // `down` leaves nothing behind.
    let down = cli(
        &["down", "--config", manifest.to_str().expect("utf-8")],
        BOUND,
    );
    assert_eq!(down.code, Some(0), "down: {}{}", down.stdout, down.stderr);
    let exit = up.wait(BOUND);
    assert!(exit.success(), "supervisor exit {exit:?}");
    let burst_pids: Vec<u32> = (0..BURSTERS)
        .filter_map(|index| {
            agent_of(&final_status, &format!("burst{index}"))["pid"]
                .as_u64()
                .map(|pid| pid as u32)
        })
        .collect();
    let pids: Vec<u32> = fixture
        .records()
        .iter()
        .filter(|record| record.kind == "start")
        .map(|record| record.pid)
        .collect();
    let mut grandchildren = Vec::new();
    for level in 0..LEVELS {
        let log = std::fs::read_to_string(run_dir.join(format!("logs/{}.log", name(level, 0))))
            .unwrap_or_default();
        grandchildren.extend(log.lines().filter_map(|line| {
            line.split_once(": grandchild ")
                .and_then(|(_, pid)| pid.trim().parse::<u32>().ok())
        }));
    }
    wait_until(
        "every process of the run to be gone",
        Duration::from_secs(10),
        || {
            pids.iter()
                .chain(&grandchildren)
                .chain(&burst_pids)
                .all(|pid| !alive(*pid))
                && daemons(&fixture).1 == 0
        },
    );
    let (daemon_pids, _) = daemons(&fixture);
    let console_dropped = final_status["console_dropped_lines"].as_u64().unwrap_or(0);

    let total_faults: u32 = injected.values().sum();
    recoveries.sort();
    let median = recoveries
        .get(recoveries.len() / 2)
        .copied()
        .unwrap_or_default();
    let max = recoveries.last().copied().unwrap_or_default();
    eprintln!("chaos: {seconds}s, seed {seed:#x}, 50 agents, all ready in {start_took:.2?}");
    eprintln!("chaos: faults injected {total_faults}: {injected:?}");
    eprintln!(
        "chaos: restarts expected {} = observed {}",
        expected.values().sum::<u64>(),
        restarts(&final_status).values().sum::<u64>()
    );
    eprintln!(
        "chaos: recovery to ready: median {median:.2?}, max {max:.2?} over {} recoveries",
        recoveries.len()
    );
    eprintln!(
        "chaos: zombies: most seen at once {max_zombies_seen} (transient), at the end {}",
        zombies_at_end.len()
    );
    eprintln!(
        "chaos: processes of the run after down: 0 of {} agent pids and {} grandchildren",
        pids.len() + burst_pids.len(),
        grandchildren.len()
    );
    eprintln!(
        "chaos: daemons: {} started, at most {max_daemons_seen} running at once, 0 left after down",
        daemon_pids.len()
    );
    eprintln!(
        "chaos: stalled console: {console_dropped} lines dropped from it (logs complete), status answered throughout"
    );
    eprintln!("chaos: supervisor RSS {rss_start} KiB at start, {rss_end} KiB at the end");
    eprintln!(
        "chaos: errors sent {errors_sent}, recorded or counted as suppressed in errors.jsonl {errors_of_bursters}"
    );
    assert_eq!(
        errors_of_bursters, errors_sent,
        "errors lost: {errors_recorded:?}"
    );
    assert!(
        total_faults >= (seconds / 4) as u32,
        "too few faults injected ({total_faults}) to mean anything"
    );
    assert!(
        max_daemons_seen <= 1,
        "a killed daemonizer's daemon outlived it: {max_daemons_seen} running at once"
    );
    assert!(
        !daemon_pids.is_empty(),
        "the daemonizing agent started no daemon"
    );
    assert!(
        console_dropped > 0,
        "the stalled console dropped nothing: was it stalled?"
    );
    assert!(
        zombies_at_end.is_empty(),
        "zombies left: {zombies_at_end:?}"
    );
    assert!(
        rss_end < rss_start * 3 + 30 * 1024,
        "supervisor RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}
