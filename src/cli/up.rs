//! `supervisor up`: check the manifests, then run the agents of this host.

use super::{Exit, ManifestArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub manifests: ManifestArgs,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let _ = args;
    anyhow::bail!("`supervisor up` is not built yet")
}
