//! `supervisor stop NAME...`: stop agents; every agent that depends on them
//! stops first (reverse dependency order), and all of them stay stopped
//! until `supervisor start`. Waits until they have exited.
//!
//! Owns the command line only.

use std::time::Duration;

use super::Exit;
use super::remote::{RunDirArgs, Selection, Verdict, request_and_wait};
use crate::control::Request;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Return once the request is accepted.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds (exit 1).
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS", value_parser = super::seconds)]
    pub timeout: f64,
}

/// Asks the supervisor to stop the agents (dependents first) and waits
/// until they have exited.
/// 1 when the supervisor refused the request or an agent did not get there
/// in time, 3 when no supervisor runs for the run directory.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    let names = match args.selection.resolve(&run_dir)? {
        Ok((_, names)) => names,
        Err(exit) => return Ok(exit),
    };
    let request = Request::Stop {
        agents: names.clone(),
    };
    request_and_wait(
        &run_dir,
        &request,
        &names,
        args.no_wait,
        Duration::from_secs_f64(args.timeout),
        "stopped",
        "stopped",
        |agent| match agent.state.as_str() {
            "stopped" | "failed" => Verdict::Done,
            _ => Verdict::Waiting,
        },
    )
}
