//! Helpers shared by the commands that talk to a running supervisor
//! (`status`, `start`, `stop`, `restart`, `down`, `reload`, `logs`): finding
//! the run directory, one request with a timeout, the "not running" exit
//! (3), and bounded waits on the status.
//!
//! Owns no protocol (that is `crate::control`), only the CLI's reactions.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::control::rundir::default_run_dir;
use crate::control::{AgentView, Client, ControlError, Request, Response, RunDir, StatusView};
use crate::manifest::ConfigArg;

use super::Exit;

/// How a control command finds its supervisor; same default as `up`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunDirArgs {
    /// The supervisor's run directory (default: `.supervisor/` beside the
    /// first `--config`, else `./.supervisor`).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The manifest `up` was started with; only used to find the default
    /// run directory.
    #[arg(long = "config", short = 'c', value_name = "FILE[@HOST]")]
    pub configs: Vec<String>,
}

impl RunDirArgs {
    pub fn run_dir(&self) -> RunDir {
        RunDir::new(match &self.run_dir {
            Some(dir) => dir.clone(),
            None => {
                let first = self.configs.first().map(|text| ConfigArg::parse(text).path);
                default_run_dir(first.as_deref())
            }
        })
    }
}

/// A request's outcome for a command: the successful response, or the
/// exit code after the problem was printed.
pub enum Answer {
    Ok(Box<Response>),
    Exit(Exit),
}

/// Sends one request. "Not running" prints a clear message and gives
/// exit 3; a refused request prints the supervisor's error(s) and gives 1.
pub fn ask(run_dir: &RunDir, request: &Request, timeout: Duration) -> anyhow::Result<Answer> {
    match Client::connect(run_dir).and_then(|mut client| client.request(request, timeout)) {
        Ok(response) if response.ok => Ok(Answer::Ok(Box::new(response))),
        Ok(response) => {
            eprintln!(
                "error: {}",
                response
                    .error
                    .as_deref()
                    .unwrap_or("the request was refused")
            );
            for error in &response.errors {
                eprintln!("  {error}");
            }
            Ok(Answer::Exit(Exit::Problems))
        }
        Err(error @ ControlError::NotRunning { .. }) => {
            eprintln!("{error}");
            Ok(Answer::Exit(Exit::NotRunning))
        }
        Err(error) => Err(error.into()),
    }
}

/// The current status, or the exit code.
pub fn status(run_dir: &RunDir) -> anyhow::Result<Result<StatusView, Exit>> {
    Ok(
        match ask(run_dir, &Request::Status, Duration::from_secs(5))? {
            Answer::Ok(response) => match response.status {
                Some(status) => Ok(status),
                None => anyhow::bail!("the supervisor answered without a status"),
            },
            Answer::Exit(exit) => Err(exit),
        },
    )
}

/// What a wait on agents concluded for one of them.
pub enum Verdict {
    Done,
    Waiting,
    /// It will not get there; the reason is printed.
    Failed(String),
}

/// Polls the status every 100 ms until `verdict` says `Done` for every one of
/// `names`, one `Failed`, or `timeout` passes. Prints what it waited for.
pub fn wait_for(
    run_dir: &RunDir,
    names: &[String],
    timeout: Duration,
    what: &str,
    verdict: impl Fn(&AgentView) -> Verdict,
) -> anyhow::Result<Exit> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = match status(run_dir)? {
            Ok(view) => view,
            Err(exit) => return Ok(exit),
        };
        let mut done = true;
        for name in names {
            let Some(agent) = view.agent(name) else {
                eprintln!("error: agent `{name}` is gone");
                return Ok(Exit::Problems);
            };
            match verdict(agent) {
                Verdict::Done => {}
                Verdict::Waiting => done = false,
                Verdict::Failed(reason) => {
                    eprintln!("error: {name}: {reason}");
                    return Ok(Exit::Problems);
                }
            }
        }
        if done {
            return Ok(Exit::Ok);
        }
        if Instant::now() >= deadline {
            eprintln!(
                "error: timed out after {} waiting for {} to be {what}",
                crate::supervisor::format_duration(timeout),
                names.join(", ")
            );
            return Ok(Exit::Problems);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The shared shape of `start`, `stop` and `restart`: send `request`; unless
/// `no_wait`, wait until `verdict` holds for every one of `names`; then print
/// `<done>: <names>`.
#[allow(clippy::too_many_arguments)]
pub fn request_and_wait(
    run_dir: &RunDir,
    request: &Request,
    names: &[String],
    no_wait: bool,
    timeout: Duration,
    what: &str,
    done: &str,
    verdict: impl Fn(&AgentView) -> Verdict,
) -> anyhow::Result<Exit> {
    if let Answer::Exit(exit) = ask(run_dir, request, Duration::from_secs(10))? {
        return Ok(exit);
    }
    if no_wait {
        return Ok(Exit::Ok);
    }
    let exit = wait_for(run_dir, names, timeout, what, verdict)?;
    if exit == Exit::Ok {
        println!("{done}: {}", names.join(", "));
    }
    Ok(exit)
}

/// `failed (reason)` for an agent that cannot become ready.
pub fn not_coming(agent: &AgentView) -> Option<String> {
    matches!(agent.state.as_str(), "failed" | "blocked").then(|| {
        format!(
            "{}{}",
            agent.state,
            agent
                .reason
                .as_ref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        )
    })
}
