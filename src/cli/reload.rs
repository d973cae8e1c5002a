//! `supervisor reload`: the running supervisor loads and checks its
//! manifests again; if they pass it applies the difference (adds, removes,
//! restarts only changed agents), else it keeps the old configuration and
//! this command prints every problem (exit 1).
//!
//! Owns the command line only.

use std::time::Duration;

use super::Exit;
use super::remote::{Answer, RunDirArgs, ask};
use crate::control::Request;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: RunDirArgs,
}

/// Asks the running supervisor to reload and prints what changed, or every
/// problem of the new manifests (exit 1; the old configuration stays).
/// Exit 3 when none runs.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    match ask(&run_dir, &Request::Reload, Duration::from_secs(60))? {
        Answer::Ok(response) => {
            let summary = response.reload.unwrap_or_default();
            println!(
                "reloaded: added {}; removed {}; changed {}; {} unchanged",
                names_or_none(&summary.added),
                names_or_none(&summary.removed),
                names_or_none(&summary.changed),
                summary.unchanged
            );
            Ok(Exit::Ok)
        }
        Answer::Exit(exit) => Ok(exit),
    }
}

/// `a, b` or `none`: the agents a reload or a scale added or removed.
pub(super) fn names_or_none(names: &[String]) -> String {
    match names.is_empty() {
        true => "none".to_string(),
        false => names.join(", "),
    }
}
