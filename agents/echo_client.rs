//! `agent-echo-client`: the example client agent. Finds the echo service
//! through discovery (`agent.resolve`, falling back to the injected
//! `<NAME>_ENDPOINT` when standalone), then calls it through the SDK's
//! `SocketPool` with lazy-pirate retries every `--interval`, reporting
//! progress and errors. Its pool's circuit breaker (`--breaker-failures`,
//! `--breaker-recovery-ms`) stops the calls while the service is down; its
//! state reaches `supervisor status` through the heartbeats. Exits cleanly
//! on SIGTERM or after `--count` calls.
//!
//! Owns nothing but its loop; sockets come from the pool.

use std::time::Duration;

use clap::Parser;
use supervisor::sdk::{
    Agent, AgentSettings, BreakerConfig, HeartbeatPayload, PoolConfig, SdkError, Severity,
    SocketPool, TransportError,
};

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
    /// Resolve the service until it has an endpoint, then keep calling that
    /// endpoint without resolving again (the pool resolves it again when a
    /// call goes unanswered, which starts a service stopped as idle).
    #[arg(long)]
    resolve_once: bool,
    /// Stop after this many successful calls (0: run until SIGTERM).
    #[arg(long, default_value = "0")]
    count: u64,
    /// Milliseconds one attempt waits for the reply.
    #[arg(long, default_value = "500")]
    timeout_ms: u64,
    /// Attempts after the first one, per call.
    #[arg(long, default_value = "2")]
    retries: u32,
    /// Failed calls within 30 s that open the circuit breaker.
    #[arg(long, default_value = "5")]
    breaker_failures: u32,
    /// Milliseconds an open breaker waits before a trial call.
    #[arg(long, default_value = "10000")]
    breaker_recovery_ms: u64,
    /// Find every instance of the service (`resolve_all`), spread the calls
    /// over the ready ones in turn, and at the end print the instances as
    /// `instance NAME ENDPOINT STATE`.
    #[arg(long)]
    spread: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let pool = SocketPool::with_config(PoolConfig {
        breaker: Some(BreakerConfig {
            failure_threshold: args.breaker_failures,
            window: Duration::from_secs(30),
            recovery_timeout: Duration::from_millis(args.breaker_recovery_ms),
        }),
        ..PoolConfig::default()
    });
    let agent = match AgentSettings::from_env() {
        Ok(settings) => match Agent::connect_with_pool(settings, pool) {
            Ok(agent) => agent,
            Err(error) => {
                eprintln!("echo-client: cannot connect to the supervisor: {error}");
                return std::process::ExitCode::from(1);
            }
        },
        Err(SdkError::NotSupervised { .. }) => Agent::from_env_or_standalone("echo-client"),
        Err(error) => {
            eprintln!("echo-client: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    if let Err(error) = agent.ready() {
        eprintln!("echo-client: READY failed: {error}");
        return std::process::ExitCode::from(1);
    }
    let mut done: u64 = 0;
    let mut last_endpoint = None;
    while args.spread && !agent.shutdown_requested() && (args.count == 0 || done < args.count) {
        let ready: Vec<String> = match agent.resolve_all(&args.service) {
            Ok(instances) => instances
                .into_iter()
                .filter(|instance| instance.state == supervisor::sdk::AgentState::Ready)
                .filter_map(|instance| instance.endpoint)
                .collect(),
            Err(error) => {
                eprintln!("echo-client: resolve_all: {error}");
                Vec::new()
            }
        };
        let message = format!("ping {done}");
        match agent.pool().request_spread(
            &ready,
            message.as_bytes(),
            Duration::from_millis(args.timeout_ms),
            args.retries,
        ) {
            Ok((endpoint, reply)) => {
                done += 1;
                println!("{endpoint} {}", String::from_utf8_lossy(&reply));
            }
            Err(error) => eprintln!("echo-client: {error}"),
        }
        agent.wait_for_shutdown(Some(Duration::from_millis(args.interval)));
    }
    if args.spread {
        for instance in agent.resolve_all(&args.service).unwrap_or_default() {
            println!(
                "instance {} {} {:?}",
                instance.name,
                instance.endpoint.as_deref().unwrap_or("-"),
                instance.state
            );
        }
    }
    while !args.spread && !agent.shutdown_requested() && (args.count == 0 || done < args.count) {
        // Resolve each time (the service may have restarted on another
        // port), unless `--resolve-once`.
        let endpoint = if args.resolve_once && last_endpoint.is_some() {
            last_endpoint.clone()
        } else {
            match agent.resolve(&args.service) {
                Ok(resolved) => resolved.endpoint,
                Err(error) => {
                    agent
                        .report_error(Severity::Warning, &error.to_string())
                        .kind("resolve")
                        .send();
                    None
                }
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
            match agent.pool().request(
                &endpoint,
                message.as_bytes(),
                Duration::from_millis(args.timeout_ms),
                args.retries,
            ) {
                Ok(reply) => {
                    done += 1;
                    println!("{}", String::from_utf8_lossy(&reply));
                    agent.progress(HeartbeatPayload {
                        queue_depth: Some(0),
                        custom: [("calls".to_string(), done.into())].into_iter().collect(),
                        ..HeartbeatPayload::default()
                    });
                }
                // The breaker is open: no call was made; it is in the heartbeats.
                Err(TransportError::CircuitOpen { .. }) => {}
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
