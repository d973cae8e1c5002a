//! `agent-faulty`: a deliberately faulty agent for demos and tests. Reports
//! READY, behaves for `--after` seconds, then misbehaves per `--mode`:
//!
//! - `hang`: stays alive but stops heartbeating (its SDK connection is
//!   closed) and ignores SIGTERM, like a deadlocked process;
//! - `stop`: sends itself SIGSTOP (detected only through missed heartbeats);
//! - `crash`: exits with `--exit-code`;
//! - `burst`: reports `--burst` errors (of `--severity`) as fast as it can
//!   (or keeps reporting for `--burst-for` seconds), then carries on.
//!
//! Owns nothing; everything goes through `supervisor::sdk`.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use supervisor::sdk::{Agent, Severity};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Hang,
    Stop,
    Crash,
    Burst,
}

#[derive(Debug, Parser)]
#[command(name = "agent-faulty", about = "A deliberately faulty agent")]
struct Args {
    #[arg(long, value_enum, default_value = "hang")]
    mode: Mode,
    /// Seconds of good behaviour first (fractions allowed).
    #[arg(long, default_value = "2")]
    after: f64,
    #[arg(long, default_value = "3")]
    exit_code: u8,
    #[arg(long, default_value = "1000")]
    burst: u64,
    /// Keep bursting for this many seconds instead of `--burst` errors.
    #[arg(long)]
    burst_for: Option<f64>,
    /// Severity of the burst's errors: debug, info, warning, error, critical, fatal.
    #[arg(long, default_value = "error")]
    severity: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let agent = Agent::from_env_or_standalone("faulty");
    if let Err(error) = agent.ready() {
        eprintln!("faulty: READY failed: {error}");
        return std::process::ExitCode::from(1);
    }
    if agent.wait_for_shutdown(Some(Duration::from_secs_f64(args.after.max(0.0)))) {
        return std::process::ExitCode::SUCCESS;
    }
    match args.mode {
        Mode::Hang => {
            eprintln!("faulty: hanging (no more heartbeats)");
            drop(agent);
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Mode::Stop => {
            eprintln!("faulty: SIGSTOP to myself");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            std::process::ExitCode::SUCCESS
        }
        Mode::Crash => {
            eprintln!("faulty: crashing with {}", args.exit_code);
            agent
                .report_error(Severity::Fatal, "crashing on purpose")
                .kind("crash")
                .send();
            drop(agent); // flush the report
            std::process::ExitCode::from(args.exit_code)
        }
        Mode::Burst => {
            let severity = Severity::parse_lenient(&args.severity).unwrap_or(Severity::Error);
            let until = args
                .burst_for
                .map(|seconds| std::time::Instant::now() + Duration::from_secs_f64(seconds));
            let mut sent = 0u64;
            for index in 0.. {
                let more = match until {
                    Some(until) => std::time::Instant::now() < until,
                    None => index < args.burst,
                };
                if !more {
                    break;
                }
                sent += 1;
                agent
                    .report_error(severity, "error burst")
                    .kind("burst")
                    .context("index", index)
                    .send();
            }
            eprintln!("faulty: burst of {sent} errors sent");
            agent.wait_for_shutdown(None);
            std::process::ExitCode::SUCCESS
        }
    }
}
