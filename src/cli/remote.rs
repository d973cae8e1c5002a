//! Helpers shared by the commands that talk to a running supervisor
//! (`status`, `start`, `stop`, `restart`, `down`, `reload`, `logs`): finding
//! the run directory, one request with a timeout, the "not running" exit
//! (3), and bounded waits on the status.
//!
//! Owns no protocol (that is `crate::control`), only the CLI's reactions.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::control::{AgentView, Client, ControlError, Request, Response, RunDir, StatusView};

use super::Exit;

/// How a control command finds its supervisor; same default as `up`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunDirArgs {
    /// The supervisor's run directory (default: `SUPERVISOR_RUN_DIR`, else
    /// `.supervisor/` beside the first `--config`, else the supervisor `up`
    /// started in this directory or one above it).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The manifest `up` was started with; only used to find the default
    /// run directory (default: `SUPERVISOR_CONFIG`).
    #[arg(long = "config", short = 'c', value_name = "FILE[@HOST]")]
    pub configs: Vec<String>,
}

impl RunDirArgs {
    /// `--run-dir`, else the run directory of `--config` (see
    /// `locate::run_dir`).
    pub fn run_dir(&self) -> RunDir {
        super::locate::run_dir(self.run_dir.as_deref(), &self.configs)
    }
}

/// A request's outcome for a command: the successful response, or the
/// exit code after the problem was printed.
pub enum Answer {
    /// `ok: true`.
    Ok(Box<Response>),
    /// Refused (1) or no supervisor (3); already printed.
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
    /// It got there.
    Done,
    /// Not yet; keep polling.
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
                    print_log_tail(run_dir, name);
                    return Ok(Exit::Problems);
                }
            }
        }
        if done {
            return Ok(Exit::Ok);
        }
        if Instant::now() >= deadline {
            let late: Vec<&AgentView> = names
                .iter()
                .filter_map(|name| view.agent(name))
                .filter(|agent| matches!(verdict(agent), Verdict::Waiting))
                .collect();
            eprintln!(
                "error: timed out after {} waiting for {} to be {what}",
                crate::supervisor::format_duration(timeout),
                late.iter()
                    .map(|agent| format!("{} ({})", agent.name, agent.state))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for agent in late {
                print_log_tail(run_dir, &agent.name);
            }
            return Ok(Exit::Problems);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Which agents a `start`, `stop` or `restart` names.
#[derive(Debug, Clone, clap::Args)]
pub struct Selection {
    /// Agents by name; `all` for every agent of this host.
    #[arg(value_name = "NAME", required_unless_present = "group")]
    pub agents: Vec<String>,
    /// Every agent of this group (the manifest's `group:`, or the legacy
    /// `agent_groups` / list the agent was written in).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

impl Selection {
    /// The current status and the names meant, or the exit code (printed).
    pub fn resolve(
        &self,
        run_dir: &RunDir,
    ) -> anyhow::Result<Result<(StatusView, Vec<String>), Exit>> {
        Ok(match status(run_dir)? {
            Ok(view) => self.names(&view).map(|names| (view, names)),
            Err(exit) => Err(exit),
        })
    }

    /// The agent names meant, from a status; `Err` (printed) when a group
    /// has no agents.
    pub fn names(&self, view: &StatusView) -> Result<Vec<String>, Exit> {
        let local = || view.agents.iter().filter(|agent| !agent.remote);
        let mut names: Vec<String> = Vec::new();
        for name in &self.agents {
            if name == "all" && view.agent("all").is_none() {
                names.extend(local().map(|agent| agent.name.clone()));
            } else {
                names.push(name.clone());
            }
        }
        if let Some(group) = &self.group {
            let members: Vec<String> = local()
                .filter(|agent| agent.group.as_deref() == Some(group.as_str()))
                .map(|agent| agent.name.clone())
                .collect();
            if members.is_empty() {
                let mut groups: Vec<&str> =
                    local().filter_map(|agent| agent.group.as_deref()).collect();
                groups.sort_unstable();
                groups.dedup();
                eprintln!(
                    "error: no agent in group `{group}` (groups: {})",
                    if groups.is_empty() {
                        "none".to_string()
                    } else {
                        groups.join(", ")
                    }
                );
                return Err(Exit::Usage);
            }
            names.extend(members);
        }
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|name| seen.insert(name.clone()));
        Ok(names)
    }
}

/// The shared shape of `start`, `stop` and `restart`: send `request`; unless
/// `no_wait`, wait until `verdict` holds for every agent the request
/// affects (the supervisor's answer names them); then print
/// `<done>: <named>` and, on a second line, the agents taken along.
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
    let response = match ask(run_dir, request, Duration::from_secs(10))? {
        Answer::Ok(response) => response,
        Answer::Exit(exit) => return Ok(exit),
    };
    let affected = if response.agents.is_empty() {
        names.to_vec()
    } else {
        response.agents.clone()
    };
    // A name of an agent with `replicas` stands for its instances: they
    // are what was named, not taken along.
    let instances: Vec<String> = match affected.iter().all(|name| names.contains(name)) {
        true => Vec::new(),
        false => match status(run_dir)? {
            Ok(view) => view
                .agents
                .iter()
                .filter(|agent| {
                    agent
                        .replica_of
                        .as_ref()
                        .is_some_and(|of| names.contains(of))
                })
                .map(|agent| agent.name.clone())
                .collect(),
            Err(exit) => return Ok(exit),
        },
    };
    let along: Vec<&str> = affected
        .iter()
        .filter(|name| !names.contains(name) && !instances.contains(name))
        .map(String::as_str)
        .collect();
    let report = || {
        println!("{done}: {}", names.join(", "));
        if !along.is_empty() {
            println!("  and with them: {}", along.join(", "));
        }
    };
    if no_wait {
        println!("accepted for: {}", affected.join(", "));
        return Ok(Exit::Ok);
    }
    let exit = wait_for(run_dir, &affected, timeout, what, verdict)?;
    if exit == Exit::Ok {
        report();
    }
    Ok(exit)
}

/// The last `lines` lines of an agent's log (rotated files included).
pub fn log_tail(run_dir: &RunDir, agent: &str, lines: usize) -> Vec<String> {
    super::logs::last_lines(run_dir, agent, lines)
}

/// Prints the last lines of an agent's log to stderr, indented.
fn print_log_tail(run_dir: &RunDir, agent: &str) {
    let tail = log_tail(run_dir, agent, 10);
    if !tail.is_empty() {
        eprintln!(
            "  last lines of {agent}'s log ({}):",
            run_dir.agent_log(agent).display()
        );
        for line in tail {
            eprintln!("    {line}");
        }
    }
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
