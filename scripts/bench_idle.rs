//! Benchmark (not a test): the supervisor's own CPU and RSS over 30 s with
//! 1, 100 and 500 idle agents, in two modes measured in the same run:
//!
//! - `sdk`: SDK agents (`agent-faulty`) heartbeating once a second.
//!   Target (issue 18): under 1 % of one core for 500 agents.
//! - `http`: plain agents (`fake-agent`) with an HTTP liveness probe every
//!   1 s (`liveness: { http: ..., interval: 1s }`). Target: under 3 %.
//!
//! RSS target: under 25 MB for 500 agents in either mode. `anon MiB` is
//! the part of it that is the process's own (`RssAnon`: heap, stacks,
//! libzmq's buffers); the rest is pages of the binary and libraries (those
//! idle runs: `up` unmaps the ones only start-up ran once every agent is
//! ready, `platform::release_start_up_pages`). Each line prints
//! the ratio to the 1-agent baseline of its mode and to the target, and the
//! load average at the end of its window. Also the cost of one resource
//! sample (the /proc walk of every agent's process tree) per 100 agents.
//!
//! Run: `cargo bench --bench idle` (release). Environment:
//! `IDLE_SECONDS` (window, default 30), `IDLE_MODES` (`sdk,http`),
//! `IDLE_AGENTS` (`1,100,500`), `IDLE_SUPERVISOR` (another `supervisor`
//! binary to measure instead of this build's, e.g. a copy of the one built
//! from main, to compare before and after in one session).
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
const SDK_AGENT: &str = env!("CARGO_BIN_EXE_agent-faulty");
const HTTP_AGENT: &str = env!("CARGO_BIN_EXE_fake-agent");

/// How the idle agents are watched.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// SDK agents heartbeating every second.
    Sdk,
    /// Plain agents probed over HTTP every second.
    Http,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sdk => "sdk",
            Mode::Http => "http",
        }
    }

    /// Target CPU % of one core for 500 agents (issue 18).
    fn cpu_target(self) -> f64 {
        match self {
            Mode::Sdk => 1.0,
            Mode::Http => 3.0,
        }
    }
}

/// RSS target in MiB for 500 agents (issue 18).
const RSS_TARGET_MIB: f64 = 25.0;

/// `count` loopback ports nothing listens on now.
fn free_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(count);
    let mut candidate = 20_000 + (std::process::id() % 20_000) as u16;
    while ports.len() < count {
        candidate = candidate.wrapping_add(1).max(10_000);
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            ports.push(candidate);
        }
    }
    ports
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

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

/// A `/proc/<pid>/status` figure in KiB: `VmRSS` (all resident memory) or
/// `RssAnon` (the heap and other private memory, without the pages of the
/// binary and libraries, which are shared with the page cache).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts `up` on `agents` idle SDK agents and waits until all are ready.
fn start(dir: &Path, mode: Mode, agents: usize) -> (Child, Duration) {
    let mut text = String::from("version: 1\nagents:\n");
    let ports = if mode == Mode::Http {
        free_ports(agents)
    } else {
        Vec::new()
    };
    for index in 0..agents {
        match mode {
            // agent-faulty behaves (heartbeats, no work) for `--after` seconds.
            Mode::Sdk => text.push_str(&format!(
                "  idle{index}:\n    command: [\"{SDK_AGENT}\", \"--after\", \"100000\"]\n    readiness: {{ sdk: true, timeout: 120s }}\n    heartbeat: {{ interval: 1s, misses: 5 }}\n"
            )),
            // fake-agent listens on its port at once and answers any request with 200.
            Mode::Http => {
                let port = *ports.get(index).expect("one port per agent");
                text.push_str(&format!(
                    "  idle{index}:\n    command: [\"{HTTP_AGENT}\", \"--port\", \"{port}\"]\n    readiness: {{ tcp: {port}, timeout: 120s }}\n    liveness: {{ http: \"http://127.0.0.1:{port}/health\", interval: 1s, timeout: 500ms, failures: 3 }}\n"
                ));
            }
        }
    }
    let manifest = dir.join(format!("idle-{}-{agents}.yaml", mode.name()));
    std::fs::write(&manifest, text).expect("write manifest");
    let started = Instant::now();
    let supervisor = std::env::var("IDLE_SUPERVISOR").unwrap_or_else(|_| SUPERVISOR.to_string());
    let mut child = Command::new(supervisor)
        .args([
            "--log",
            "warn",
            "up",
            "--no-console",
            "--no-watch",
            "--run-dir",
        ])
        .arg(dir.join(format!("run-{}-{agents}", mode.name())))
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
        if parent == Some(supervisor)
            && (command.contains("agent-faulty") || command.contains("fake-agent"))
        {
            pids.push(pid);
        }
    }
    pids
}

/// The comma-separated items of `variable`, else of `default`.
fn list(variable: &str, default: &str) -> Vec<String> {
    std::env::var(variable)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect()
}

fn main() {
    let seconds: u64 = std::env::var("IDLE_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(30);
    let modes: Vec<Mode> = list("IDLE_MODES", "sdk,http")
        .iter()
        .map(|mode| match mode.as_str() {
            "sdk" => Mode::Sdk,
            "http" => Mode::Http,
            other => panic!("IDLE_MODES: unknown mode `{other}` (sdk, http)"),
        })
        .collect();
    let counts: Vec<usize> = list("IDLE_AGENTS", "1,100,500")
        .iter()
        .map(|count| {
            count
                .parse()
                .unwrap_or_else(|_| panic!("IDLE_AGENTS: `{count}` is not a number"))
        })
        .collect();
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "bench-idle: supervisor CPU and RSS over {seconds} s with idle agents (sdk: heartbeat 1 s; http: HTTP liveness 1 s); load {}; supervisor {}",
        load(),
        std::env::var("IDLE_SUPERVISOR").unwrap_or_else(|_| SUPERVISOR.to_string())
    );
    println!(
        "  {:>4}  {:>6}  {:>8}  {:>7}  {:>7}  {:>9}  {:>8}  {:>9}  {:>8}  {:>10}  load",
        "mode",
        "agents",
        "start",
        "CPU %",
        "vs 1",
        "vs target",
        "RSS MiB",
        "vs 25 MB",
        "anon MiB",
        "sample/100"
    );
    for mode in modes {
        let mut baseline_cpu = None;
        for &agents in &counts {
            measure(
                dir.path(),
                mode,
                agents,
                seconds,
                ticks_per_second,
                &mut baseline_cpu,
            );
        }
    }
}

/// One line: `agents` idle agents watched as `mode`, measured over `seconds`.
fn measure(
    dir: &Path,
    mode: Mode,
    agents: usize,
    seconds: u64,
    ticks_per_second: f64,
    baseline_cpu: &mut Option<f64>,
) {
    let (child, took) = start(dir, mode, agents);
    let pid = child.id();
    // Let start-up work settle before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(pid);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let used = (cpu_ticks(pid) - before) as f64 / ticks_per_second;
    let cpu_percent = 100.0 * used / window.elapsed().as_secs_f64();
    let rss = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let anon = status_kib(pid, "RssAnon:") as f64 / 1024.0;
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
        "  {:>4}  {agents:>6}  {:>7.2}s  {cpu_percent:>6.2}%  {:>6.1}x  {:>8.2}x  {rss:>8.1}  {:>8.2}x  {anon:>8.1}  {:>7.2} ms  {}{}",
        mode.name(),
        took.as_secs_f64(),
        cpu_percent / baseline,
        cpu_percent / mode.cpu_target(),
        rss / RSS_TARGET_MIB,
        per_100.as_secs_f64() * 1000.0,
        load(),
        if agents == 500 {
            format!(
                "   target < {} % CPU: {}, < 25 MB: {}",
                mode.cpu_target(),
                if cpu_percent < mode.cpu_target() {
                    "PASS"
                } else {
                    "FAIL"
                },
                if rss < RSS_TARGET_MIB { "PASS" } else { "FAIL" }
            )
        } else {
            String::new()
        }
    );
    stop(child);
}
