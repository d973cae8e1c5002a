//! `supervisor restart NAME... [--with-dependents]`: replace the agents'
//! processes (dependents keep running unless `--with-dependents`, which
//! restarts them too, in dependency order). Waits until each is ready again
//! with a new process.
//!
//! Owns the command line only.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Exit;
use super::remote::{RunDirArgs, Selection, Verdict, not_coming, request_and_wait};
use crate::control::Request;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,
    /// Also restart every agent that depends on them (transitively).
    #[arg(long)]
    pub with_dependents: bool,
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Return once the request is accepted.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting for ready after this many seconds (exit 1).
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS", value_parser = super::seconds)]
    pub timeout: f64,
}

/// Asks the supervisor to restart the agents and waits until each is
/// ready with a new process.
/// 1 when the supervisor refused the request or an agent did not get there
/// in time, 3 when no supervisor runs for the run directory.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    let (before, names) = match args.selection.resolve(&run_dir)? {
        Ok(resolved) => resolved,
        Err(exit) => return Ok(exit),
    };
    let old_pids: BTreeMap<String, Option<u32>> = before
        .agents
        .iter()
        .map(|agent| (agent.name.clone(), agent.pid))
        .collect();
    let request = Request::Restart {
        agents: names.clone(),
        with_dependents: args.with_dependents,
    };
    request_and_wait(
        &run_dir,
        &request,
        &names,
        args.no_wait,
        Duration::from_secs_f64(args.timeout),
        "ready again",
        "restarted",
        |agent| match not_coming(agent) {
            Some(reason) => Verdict::Failed(reason),
            None if agent.state == "ready"
                && (agent.remote || agent.pid != old_pids.get(&agent.name).copied().flatten()) =>
            {
                Verdict::Done
            }
            None => Verdict::Waiting,
        },
    )
}
