//! Benchmark (not a test): what one agent spawn costs, by clone3 into the
//! agent's cgroup against fork + join `cgroup.procs` + exec (issue 18),
//! measured in the same run, through the real `ProcessSpawner`.
//!
//! - `burst`: 100 agents handed to the spawner at once (a level becoming
//!   startable), time until every one reported `Spawned` (it exec'd), per agent.
//! - `one by one`: 50 agents, each spawned after the previous one exec'd:
//!   the latency of one spawn.
//! - `spaced 200 ms`: 20 agents, each spawned 200 ms after the previous
//!   one exec'd, as along a dependency chain of agents ready after 200 ms.
//!   A move into a cgroup right after an idle spell waits for an RCU grace
//!   period in the kernel; back-to-back moves do not, so only this case
//!   shows what a chain pays per hop. The figure is the time to exec only
//!   (the pauses are not counted).
//!
//! Each figure is the median of `SPAWN_ROUNDS` (default 5) rounds, the two
//! methods alternating; the ratio is fork over clone3 (above 1: clone3 is
//! faster). The load average is printed before and after. With marker
//! containment (no cgroup here, or `SUPERVISOR_CONTAINMENT=marker`) both
//! methods fork, which the header says.
//!
//! Run: `cargo bench --bench spawn` (release).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use supervisor::process::{ProcessEvent, ProcessSpawner, SpawnMethod, SpawnSpec, Spawner};

/// The load average now.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// How the agents of a round are handed to the spawner.
#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// All at once.
    Burst,
    /// Each after the previous one exec'd.
    OneByOne,
    /// Each this long after the previous one exec'd.
    Spaced(Duration),
}

/// Spawns `count` agents running `sleep 30` at `pace` and returns the time
/// per agent until all exec'd, pauses not counted. Dropping the spawner
/// kills them.
fn round(method: SpawnMethod, count: usize, pace: Pace) -> Duration {
    let mut spawner = ProcessSpawner::start_with(None, method).expect("spawner");
    let spawned = Arc::new(Mutex::new(0usize));
    let mut started = Instant::now();
    let wait_for = |target: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while *spawned.lock().expect("lock") < target {
            assert!(Instant::now() < deadline, "spawns did not finish");
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    for index in 0..count {
        let counter = spawned.clone();
        spawner.spawn(
            SpawnSpec {
                name: format!("a{index}"),
                argv: vec!["sleep".into(), "30".into()],
                ..Default::default()
            },
            Box::new(move |event| match event {
                ProcessEvent::Spawned { .. } => *counter.lock().expect("lock") += 1,
                ProcessEvent::SpawnFailed { error } => panic!("{error}"),
                _ => {}
            }),
        );
        if pace != Pace::Burst {
            wait_for(index + 1);
        }
        if let Pace::Spaced(pause) = pace {
            std::thread::sleep(pause);
            started += pause;
        }
    }
    wait_for(count);
    let took = started.elapsed() / count as u32;
    drop(spawner);
    took
}

/// The median of `values`.
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("SPAWN_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let containment = supervisor::process::tree::Containment::detect();
    println!(
        "spawn cost per agent (ProcessSpawner, 4 threads), median of {rounds} rounds; containment {}; load {}",
        containment.describe(),
        load()
    );
    // Only looked at: remove the base cgroup it made.
    containment.kill_all();
    println!(
        "{:<28} {:>10} {:>10} {:>11}",
        "case", "clone3", "fork", "fork/clone3"
    );
    for (label, count, pace) in [
        ("burst of 100", 100, Pace::Burst),
        ("one by one (50)", 50, Pace::OneByOne),
        (
            "spaced 200 ms (20)",
            20,
            Pace::Spaced(Duration::from_millis(200)),
        ),
    ] {
        let mut clone3 = Vec::new();
        let mut fork = Vec::new();
        for _ in 0..rounds {
            clone3.push(round(SpawnMethod::Clone3, count, pace));
            fork.push(round(SpawnMethod::Fork, count, pace));
        }
        let (clone3, fork) = (median(clone3), median(fork));
        println!(
            "{label:<28} {:>8.2}ms {:>8.2}ms {:>10.2}x",
            clone3.as_secs_f64() * 1e3,
            fork.as_secs_f64() * 1e3,
            fork.as_secs_f64() / clone3.as_secs_f64()
        );
    }
    println!("load {}", load());
}
