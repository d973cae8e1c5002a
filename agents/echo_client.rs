//! `agent-echo-client`: the example client agent. Finds the echo service
//! through discovery (`agent.resolve`, falling back to the injected
//! `<NAME>_ENDPOINT` when standalone), then calls it through the SDK's
//! `SocketPool` with lazy-pirate retries every `--interval`, reporting
//! progress and errors. Exits cleanly on SIGTERM or after `--count` calls.
//!
//! Owns nothing but its loop; sockets come from the pool.

use std::time::Duration;

use clap::Parser;
use supervisor::sdk::{Agent, HeartbeatPayload, Severity};

#[derive(Debug, Parser)]
#[command(
    name = "agent-echo-client",
    about = "Example client agent (pool + discovery)"
)]
struct Args {
    /// The agent to call.
    #[arg(long, default_value = "echo-service")]
    service: String,
    /// Milliseconds between calls.
    #[arg(long, default_value = "200")]
    interval: u64,
    /// Stop after this many successful calls (0: run until SIGTERM).
    #[arg(long, default_value = "0")]
    count: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let agent = Agent::from_env_or_standalone("echo-client");
    if let Err(error) = agent.ready() {
        eprintln!("echo-client: READY failed: {error}");
        return std::process::ExitCode::from(1);
    }
    let mut done: u64 = 0;
    let mut last_endpoint = None;
    while !agent.shutdown_requested() && (args.count == 0 || done < args.count) {
        // Resolve each time: the service may have restarted on another port.
        let endpoint = match agent.resolve(&args.service) {
            Ok(resolved) => resolved.endpoint,
            Err(error) => {
                agent
                    .report_error(Severity::Warning, &error.to_string())
                    .kind("resolve")
                    .send();
                None
            }
        };
        if endpoint.is_some() && endpoint != last_endpoint {
            eprintln!(
                "echo-client: {} at {}",
                args.service,
                endpoint.as_deref().unwrap_or_default()
            );
            last_endpoint = endpoint.clone();
        }
        if let Some(endpoint) = endpoint {
            let message = format!("ping {done}");
            match agent
                .pool()
                .request(&endpoint, message.as_bytes(), Duration::from_millis(500), 2)
            {
                Ok(reply) => {
                    done += 1;
                    println!("{}", String::from_utf8_lossy(&reply));
                    agent.progress(HeartbeatPayload {
                        queue_depth: Some(0),
                        ..HeartbeatPayload::default()
                    });
                }
                Err(error) => {
                    agent
                        .report_error(Severity::Error, &error.to_string())
                        .kind("request")
                        .context("endpoint", endpoint)
                        .send();
                }
            }
        }
        agent.wait_for_shutdown(Some(Duration::from_millis(args.interval)));
    }
    eprintln!("echo-client: {done} calls, pool {:?}", agent.pool().stats());
    std::process::ExitCode::SUCCESS
}
