//! Benchmark (not a test): the supervisor's own CPU and RSS over 30 s with
//! 100 and 500 idle SDK agents heartbeating once a second, against a
//! 1-agent baseline measured in the same run; and the cost of one resource
//! sample (the /proc walk of every agent's process tree) per 100 agents.
//!
//! Run: `cargo bench --bench idle` (release). Target: under 1 % of one core
//! and under 30 MB RSS for 500 agents. `IDLE_SECONDS` shortens the window.
//!
//! `sample/100` is the mean over 20 samples, as the supervisor takes them:
//! most read memory only, every 5th also CPU, every 10th also walks `/proc`
//! for new descendants (a pass whose cost does not grow with the agents, so
//! with one agent it dominates the per-100 figure).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use supervisor::process::sample::TreeSampler;

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_supervisor");
const AGENT: &str = env!("CARGO_BIN_EXE_agent-faulty");

/// Clock ticks (user + system) a process has used, from /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state is field 0, utime 11, stime 12.
    let utime: u64 = fields
        .get(11)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let stime: u64 = fields
        .get(12)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    utime + stime
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

/// Starts `up` on `agents` idle SDK agents and waits until all are ready.
fn start(dir: &Path, agents: usize) -> (Child, Duration) {
    let mut text = String::from("version: 1\nagents:\n");
    for index in 0..agents {
        // agent-faulty behaves (heartbeats, no work) for `--after` seconds.
        text.push_str(&format!(
            "  idle{index}:\n    command: [\"{AGENT}\", \"--after\", \"100000\"]\n    readiness: {{ sdk: true, timeout: 120s }}\n    heartbeat: {{ interval: 1s, misses: 5 }}\n"
        ));
    }
    let manifest = dir.join(format!("idle-{agents}.yaml"));
    std::fs::write(&manifest, text).expect("write manifest");
    let started = Instant::now();
    let mut child = Command::new(SUPERVISOR)
        .args([
            "--log",
            "warn",
            "up",
            "--no-console",
            "--no-watch",
            "--run-dir",
        ])
        .arg(dir.join(format!("run-{agents}")))
        .arg("--config")
        .arg(&manifest)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start supervisor");
    // The progress lines and the "all ready" summary go to stderr.
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("all ready") => break,
            Some(_) => {}
            None => panic!("supervisor ended before all {agents} agents were ready"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{agents} agents not ready in 180 s"
        );
    }
    // Keep draining so the supervisor never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, started.elapsed())
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

/// Pids of the supervisor's agents (its direct children, keeper excluded).
fn agent_pids(supervisor: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        let command = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if parent == Some(supervisor) && command.contains("agent-faulty") {
            pids.push(pid);
        }
    }
    pids
}

fn main() {
    let seconds: u64 = std::env::var("IDLE_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(30);
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "bench-idle: supervisor CPU and RSS over {seconds} s with idle SDK agents (heartbeat 1 s)"
    );
    println!(
        "  {:>6}  {:>10}  {:>10}  {:>10}  {:>12}  {:>14}",
        "agents", "start", "CPU %", "vs 1", "RSS MiB", "sample/100"
    );
    let mut baseline_cpu = None;
    for agents in [1usize, 100, 500] {
        let (child, took) = start(dir.path(), agents);
        let pid = child.id();
        // Let start-up work settle before measuring.
        std::thread::sleep(Duration::from_secs(2));
        let before = cpu_ticks(pid);
        let window = Instant::now();
        std::thread::sleep(Duration::from_secs(seconds));
        let used = (cpu_ticks(pid) - before) as f64 / ticks_per_second;
        let cpu_percent = 100.0 * used / window.elapsed().as_secs_f64();
        let rss = rss_kib(pid) as f64 / 1024.0;
        // One resource sample of every agent tree, timed here with the same code the supervisor runs.
        let roots = agent_pids(pid);
        let mut sampler = TreeSampler::new();
        let _ = sampler.sample(&roots);
        let runs = 20;
        let timer = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(sampler.sample(&roots));
        }
        let per_100 = timer.elapsed() / runs / (roots.len().max(1) as u32) * 100;
        let baseline = *baseline_cpu.get_or_insert(cpu_percent.max(0.001));
        println!(
            "  {agents:>6}  {:>9.2}s  {cpu_percent:>9.2}%  {:>9.1}x  {rss:>12.1}  {:>11.2} ms{}",
            took.as_secs_f64(),
            cpu_percent / baseline,
            per_100.as_secs_f64() * 1000.0,
            if agents == 500 {
                format!(
                    "   target < 1 % CPU: {}, < 30 MB: {}",
                    if cpu_percent < 1.0 { "PASS" } else { "FAIL" },
                    if rss < 30.0 { "PASS" } else { "FAIL" }
                )
            } else {
                String::new()
            }
        );
        stop(child);
    }
}
