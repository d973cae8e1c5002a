//! `supervisor dashboard [--listen ADDR] [--allow-remote]`: serve the web
//! dashboard of the running supervisor (found as every control command finds
//! it) until interrupted. The first line of stdout is the operator link,
//! with its access token; the second the read-only viewer link.
//!
//! Owns the command's flags and lifetime only; the dashboard is
//! `crate::dashboard`'s.

use std::io::Write;

use anyhow::Context;

use super::Exit;
use super::remote::{RunDirArgs, status};
use crate::dashboard::{Links, Options};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Address to serve on; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Allow an address other than loopback (anyone who can reach it and
    /// has a link can look, and with the operator link act).
    #[arg(long)]
    pub allow_remote: bool,
}

/// Prints the operator link (first line of stdout) and the viewer link.
pub fn print_links(links: &Links) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", links.operator);
    let _ = writeln!(out, "viewer (read-only): {}", links.viewer);
    let _ = out.flush();
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    if let Err(exit) = status(&run_dir)? {
        return Ok(exit);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let token = tokio_util::sync::CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let options = Options {
            listen: args.listen,
            allow_remote: args.allow_remote,
        };
        let links = crate::dashboard::start(run_dir, options, token.clone(), &tracker).await?;
        print_links(&links);
        eprintln!("serving the dashboard of this supervisor; Ctrl-C ends it");
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        token.cancel();
        tracker.close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), tracker.wait()).await;
        Ok(Exit::Ok)
    })
}
