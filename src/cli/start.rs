//! `supervisor start NAME...`: start stopped agents (and the stopped
//! dependencies they need, which start first); waits until they are ready.
//!
//! Owns the command line only; the supervisor decides the order.

use std::time::Duration;

use super::Exit;
use super::remote::{RunDirArgs, Verdict, not_coming, request_and_wait};
use crate::control::Request;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agents to start.
    #[arg(required = true, value_name = "NAME")]
    pub agents: Vec<String>,
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Return once the request is accepted, without waiting for ready.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting for ready after this many seconds (exit 1).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub timeout: f64,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    let request = Request::Start {
        agents: args.agents.clone(),
    };
    request_and_wait(
        &run_dir,
        &request,
        &args.agents,
        args.no_wait,
        Duration::from_secs_f64(args.timeout),
        "ready",
        "ready",
        |agent| match not_coming(agent) {
            Some(reason) => Verdict::Failed(reason),
            None if agent.state == "ready" => Verdict::Done,
            None => Verdict::Waiting,
        },
    )
}
