//! `supervisor scale NAME N`: the running supervisor runs N instances of
//! the agent with `replicas` called NAME: extra instances stop (highest
//! index first), new ones start once the agent's dependencies are ready.
//! Refused (exit 1) for an agent without `replicas` and below its
//! `min_ready`. Returns once the supervisor accepted it (`status` shows
//! the instances).
//!
//! Owns the command line only.

use std::time::Duration;

use super::Exit;
use super::remote::{Answer, RunDirArgs, ask};
use crate::control::Request;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent as the manifest names it (`worker`, not `worker-0`).
    pub agent: String,
    /// How many instances to run (at least its `min_ready`).
    pub count: u32,
    #[command(flatten)]
    pub target: RunDirArgs,
}

/// Asks the running supervisor to scale the agent and prints the instances
/// added and removed. Exit 1 when refused, 3 when no supervisor runs.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    let request = Request::Scale {
        agent: args.agent.clone(),
        count: args.count,
    };
    match ask(&run_dir, &request, Duration::from_secs(60))? {
        Answer::Ok(response) => {
            let summary = response.reload.unwrap_or_default();
            println!(
                "scaled {} to {}: started {}; stopping {}",
                args.agent,
                args.count,
                super::reload::names_or_none(&summary.added),
                super::reload::names_or_none(&summary.removed)
            );
            Ok(Exit::Ok)
        }
        Answer::Exit(exit) => Ok(exit),
    }
}
