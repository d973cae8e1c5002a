//! `supervisor convert`: legacy manifests (every format of docs/legacy.md,
//! `FILE@HOST` for each machine) -> one native manifest, on stdout or into
//! `--output`. The writing is `manifest::convert`; this file only parses the
//! arguments and reports.

use anyhow::Context;

use super::check::report_unreadable;
use super::{Exit, ManifestArgs};
use crate::manifest;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub manifests: ManifestArgs,
    /// Write the native manifest to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

/// Writes the given manifests as one native manifest to stdout or
/// `--output`. `Err` (exit 2) only when a manifest cannot be read.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let configs = args.manifests.config_args()?;
    let text = match manifest::convert(&configs) {
        Ok(text) => text,
        Err(error) => return report_unreadable(error, false),
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {}; check it with `supervisor check -c {}`",
                path.display(),
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(Exit::Ok)
}
