//! `supervisor keygen`: makes this host's peer-link key pair.
//!
//! Owns the command line and the output; the file format is
//! `crate::link::keys`.

use std::path::PathBuf;

use super::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the key pair (mode 0600; never over an existing file).
    #[arg(
        long,
        short = 'o',
        value_name = "FILE",
        default_value = ".supervisor/link.key"
    )]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let keys = crate::link::keys::generate(&args.out)?;
    eprintln!(
        "wrote {} (keep it on this host only); give the other hosts this public key:",
        args.out.display()
    );
    println!("{}", keys.public);
    Ok(Exit::Ok)
}
