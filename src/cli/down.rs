//! `supervisor down`: the same ordered stop as SIGTERM (dependents first,
//! grace then SIGKILL), then waits for the supervisor process to exit.
//!
//! Owns the command line only.

use std::time::{Duration, Instant};

use super::Exit;
use super::remote::{Answer, RunDirArgs, ask};
use crate::control::Request;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Skip the grace: SIGKILL every agent at once.
    #[arg(long)]
    pub force: bool,
    /// Also bring down the supervisors of the other hosts (peer link).
    #[arg(long)]
    pub all_hosts: bool,
    /// Give up waiting for the supervisor to exit after this many seconds (exit 1).
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS", value_parser = super::seconds)]
    pub timeout: f64,
}

/// Asks the supervisor to stop (`--force`: no grace) and waits up to
/// `--timeout` seconds for its process to end. Exit 1 if it is still
/// running then, 3 when none runs.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    let pid = match ask(&run_dir, &Request::Ping, Duration::from_secs(5))? {
        Answer::Ok(response) => response.pid,
        Answer::Exit(exit) => return Ok(exit),
    };
    let request = Request::Down {
        force: args.force,
        all_hosts: args.all_hosts,
    };
    if let Answer::Exit(exit) = ask(&run_dir, &request, Duration::from_secs(10))? {
        return Ok(exit);
    }
    let Some(pid) = pid else {
        return Ok(Exit::Ok);
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
    let target = nix::unistd::Pid::from_raw(pid as i32);
    while nix::sys::signal::kill(target, None).is_ok() && !is_zombie(pid) {
        if Instant::now() >= deadline {
            eprintln!(
                "error: supervisor (pid {pid}) still running after {}s",
                args.timeout
            );
            return Ok(Exit::Problems);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("supervisor (pid {pid}) stopped");
    Ok(Exit::Ok)
}

/// A zombie has exited; only its parent has not reaped it yet.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}
