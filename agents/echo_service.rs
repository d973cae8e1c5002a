//! `agent-echo-service`: the example REP service agent. Binds a REP socket on
//! `--bind` (default `tcp://127.0.0.1:$AGENT_PORT`; `tcp://127.0.0.1:*`
//! picks a free port), reports READY through the SDK with the endpoint it
//! really bound (what `resolve` then answers to clients), answers every request with `echo:<request>`, reports progress
//! per request, and exits cleanly on SIGTERM.
//!
//! Owns only its REP socket; talks to the supervisor through `supervisor::sdk`.

use std::time::Duration;

use clap::Parser;
use supervisor::sdk::{Agent, HeartbeatPayload, Severity};

#[derive(Debug, Parser)]
#[command(name = "agent-echo-service", about = "Example REP service agent")]
struct Args {
    /// Endpoint to bind; default tcp://127.0.0.1:$AGENT_PORT.
    #[arg(long)]
    bind: Option<String>,
    /// What every reply starts with (an instance of an agent with
    /// `replicas` may put its `${REPLICA}` in it).
    #[arg(long, default_value = "echo:")]
    reply_prefix: String,
    #[arg(long, env = "AGENT_PORT", default_value = "7200")]
    port: u16,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let agent = Agent::from_env_or_standalone("echo-service");
    let bind = args
        .bind
        .unwrap_or_else(|| format!("tcp://127.0.0.1:{}", args.port));
    let context = zmq::Context::new();
    let socket = match context.socket(zmq::REP).and_then(|socket| {
        socket.set_linger(0)?;
        socket.bind(&bind)?;
        Ok(socket)
    }) {
        Ok(socket) => socket,
        Err(error) => {
            agent
                .report_error(Severity::Fatal, &format!("cannot bind {bind}: {error}"))
                .kind("bind")
                .send();
            return std::process::ExitCode::from(2);
        }
    };
    let bound = match socket.get_last_endpoint() {
        Ok(Ok(endpoint)) => endpoint,
        _ => bind.clone(),
    };
    if let Err(error) = agent.ready_at(&bound) {
        eprintln!("echo-service: READY failed: {error}");
        return std::process::ExitCode::from(1);
    }
    eprintln!("echo-service: serving on {bound}");
    let mut served: u64 = 0;
    while !agent.shutdown_requested() {
        // Poll with a short timeout so SIGTERM is noticed promptly.
        match socket.poll(zmq::POLLIN, 100) {
            Ok(0) | Err(zmq::Error::EINTR) => continue,
            Ok(_) => {}
            Err(error) => {
                agent
                    .report_error(Severity::Error, &error.to_string())
                    .kind("poll")
                    .send();
                continue;
            }
        }
        let Ok(request) = socket.recv_bytes(0) else {
            continue;
        };
        let mut reply = args.reply_prefix.as_bytes().to_vec();
        reply.extend_from_slice(&request);
        if socket.send(reply, 0).is_ok() {
            served += 1;
            agent.progress(HeartbeatPayload {
                in_flight: Some(0),
                custom: [("served".to_string(), served.into())]
                    .into_iter()
                    .collect(),
                ..HeartbeatPayload::default()
            });
        }
    }
    eprintln!("echo-service: stopping after {served} requests");
    std::thread::sleep(Duration::from_millis(10));
    std::process::ExitCode::SUCCESS
}
