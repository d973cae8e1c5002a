//! `supervisor start NAME...`: start stopped agents (and the stopped
//! dependencies they need, which start first); waits until they are ready.
//!
//! Owns the command line only; the supervisor decides the order.

use std::time::Duration;

use super::Exit;
use super::remote::{RunDirArgs, Selection, Verdict, not_coming, request_and_wait};
use crate::control::Request;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Return once the request is accepted, without waiting for ready.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting for ready after this many seconds (exit 1).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS", value_parser = super::seconds)]
    pub timeout: f64,
}

/// Asks the supervisor to start the agents and waits until they are ready.
/// 1 when the supervisor refused the request or an agent did not get there
/// in time, 3 when no supervisor runs for the run directory.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    let names = match args.selection.resolve(&run_dir)? {
        Ok((_, names)) => names,
        Err(exit) => return Ok(exit),
    };
    let request = Request::Start {
        agents: names.clone(),
    };
    request_and_wait(
        &run_dir,
        &request,
        &names,
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
