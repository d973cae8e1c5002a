//! `agent-worker`: the example worker agent. Reports READY, then processes a
//! simulated job queue, attaching queue depth, in-flight work and the time
//! of last progress to its heartbeats. On SIGTERM it finishes the job in
//! hand and exits 0 (within the supervisor's grace period).
//!
//! Owns nothing but its simulated queue.

use std::time::Duration;

use clap::Parser;
use supervisor::sdk::{Agent, HeartbeatPayload};

#[derive(Debug, Parser)]
#[command(
    name = "agent-worker",
    about = "Example worker agent reporting progress"
)]
struct Args {
    /// Milliseconds per job.
    #[arg(long, default_value = "50")]
    job_ms: u64,
    /// Jobs queued at start (refilled when empty).
    #[arg(long, default_value = "20")]
    queue: u64,
    /// Milliseconds of "loading" (heartbeating, not ready) before READY.
    #[arg(long, default_value = "0")]
    ready_delay_ms: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let agent = Agent::from_env_or_standalone("worker");
    if agent.wait_for_shutdown(Some(Duration::from_millis(args.ready_delay_ms))) {
        return std::process::ExitCode::SUCCESS;
    }
    if let Err(error) = agent.ready() {
        eprintln!("worker: READY failed: {error}");
        return std::process::ExitCode::from(1);
    }
    let mut queue = args.queue;
    let mut finished: u64 = 0;
    while !agent.shutdown_requested() {
        if queue == 0 {
            queue = args.queue;
        }
        agent.progress(HeartbeatPayload {
            queue_depth: Some(queue),
            in_flight: Some(1),
            ..HeartbeatPayload::default()
        });
        // The "work": interruptible, but the job in hand is always finished.
        std::thread::sleep(Duration::from_millis(args.job_ms));
        queue -= 1;
        finished += 1;
    }
    agent.progress(HeartbeatPayload {
        queue_depth: Some(queue),
        in_flight: Some(0),
        ..HeartbeatPayload::default()
    });
    eprintln!("worker: stopping after {finished} jobs, {queue} left");
    std::process::ExitCode::SUCCESS
}
