//! Command-line interface: clap types, exit codes, and dispatch to one file
//! per subcommand. `anyhow` lives here and in `main.rs` only.
//!
//! Owns the command line (flags, defaults, help text) and the mapping of
//! outcomes to exit codes ([`Exit`]). Does not own behaviour: each
//! subcommand file calls the library (`check`, `plan`, `control`,
//! `supervisor`) and prints the result.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::manifest::{ConfigArg, LoadOptions, ManifestError};

pub mod check;
pub mod check_ports;
pub mod console;
pub mod convert;
pub mod dashboard;
pub mod down;
pub mod errors;
pub mod export;
pub mod keygen;
pub mod locate;
pub mod logs;
pub mod plan;
pub mod reload;
pub mod remote;
pub mod restart;
pub mod run_one;
pub mod scale;
pub mod start;
pub mod status;
pub mod stop;
pub mod top;
pub mod up;
pub mod wait_for;

const EXIT_CODES: &str = "\
Exit codes:
  0  all good (warnings alone still exit 0)
  1  problems found (check, check-ports; after --fix: conflicts left), a required
     agent failed (up, status), an agent did not get ready (start, restart, up --wait)
  2  the manifest could not be read (bad YAML, unknown field, unset variable) or usage error
  3  no supervisor is running for this run directory
run-one exits with its agent's own exit status (its code, or 128 + the signal
that killed it); 1 when the agent could not run, 0 after a stop.

Without --config, commands read SUPERVISOR_CONFIG, else supervisor.yaml,
startup.yaml or config/startup.yaml here; control commands find the supervisor
started in this directory or above it (or SUPERVISOR_RUN_DIR).";

#[derive(Debug, Parser)]
#[command(name = "supervisor", version, about = "Supervisor and process orchestrator for multi-agent systems", after_help = EXIT_CODES)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `supervisor=debug`.
    #[arg(long, global = true, env = "SUPERVISOR_LOG", default_value = "info")]
    pub log: String,
    /// Format of the supervisor's own log lines on stderr: `text`, or `json`
    /// (one object per line with the agent name and event fields).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every check on the manifests: duplicates, unknown dependencies, cycles, ports.
    Check(check::Args),
    /// Show every port the manifests use, and the conflicts; `--fix` rewrites conflicting ports.
    CheckPorts(check_ports::Args),
    /// Print the start order: topological levels, dependencies, critical path.
    Plan(plan::Args),
    /// Write legacy manifests (`FILE@HOST` each) as one native manifest, variables and groups kept.
    Convert(convert::Args),
    /// Start the agents of this host in dependency order and keep them running.
    ///
    /// Signals: SIGINT, SIGTERM and SIGQUIT stop every agent gracefully (a
    /// second one skips the grace); SIGHUP reloads the manifests; SIGUSR1,
    /// SIGUSR2 and SIGALRM are logged and ignored.
    Up(up::Args),
    /// Show the agents of a running supervisor: state, pid, uptime, restarts, CPU, memory.
    Status(status::Args),
    /// A terminal UI: the agent table, live, with the selected agent's log
    /// and keys to restart, stop, start and filter.
    Top(top::Args),
    /// Start stopped agents (and the dependencies they need); wait until ready.
    Start(start::Args),
    /// Stop agents (their dependents first); they stay stopped until `start`.
    Stop(stop::Args),
    /// Restart agents (`--with-dependents`: and everything depending on them).
    Restart(restart::Args),
    /// Run N instances of an agent with `replicas` (extra ones stop, highest index first).
    Scale(scale::Args),
    /// Print (and with -f follow) an agent's log, or every agent's merged by time.
    Logs(logs::Args),
    /// Stop every agent in reverse dependency order and end the supervisor.
    Down(down::Args),
    /// Load and check the manifests again; apply only what changed.
    Reload(reload::Args),
    /// Print the error journal (errors reported by agents); `-f` follows the error bus.
    Errors(errors::Args),
    /// Serve a live web dashboard of the running supervisor; prints its link (with access token) first.
    Dashboard(dashboard::Args),
    /// Make this host's peer-link key pair; prints the public key for the other hosts' `hosts:`.
    Keygen(keygen::Args),
    /// Export the manifests to another system: `export kubernetes` (docs/kubernetes.md).
    Export(export::Args),
    /// In a container: run one agent with the SDK contract, serve `/readyz`
    /// and `/livez`, restart nothing, exit with the agent's exit status
    /// (docs/kubernetes.md).
    RunOne(run_one::Args),
    /// Wait until targets answer (`tcp://`, `http://`, `zmq://` HOST:PORT); exit 1 after `--timeout`.
    WaitFor(wait_for::Args),
    /// Print a shell completion script: `supervisor completions bash > /etc/bash_completion.d/supervisor`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `supervisor man | man -l -`.
    Man,
    /// Internal: started by `up`; kills the agents' process groups if `up` dies.
    #[command(hide = true)]
    Keeper,
}

impl Command {
    /// Whether a closed stdout should end this command by SIGPIPE. Not for
    /// `up` (a console reader going away must not stop the agents), the
    /// keeper, or `logs` (which stops on a closed pipe itself).
    pub fn dies_on_closed_pipe(&self) -> bool {
        !matches!(
            self,
            Command::Up(_) | Command::Keeper | Command::Logs(_) | Command::RunOne(_)
        )
    }
}

/// Where the manifests come from; shared by every subcommand that reads them.
#[derive(Debug, Clone, clap::Args)]
pub struct ManifestArgs {
    /// Manifest file; repeat for several. `FILE@HOST` says which machine the
    /// file's agents run on (default: the manifest's `host:`, else `localhost`).
    /// Default: `SUPERVISOR_CONFIG` (comma-separated), else `supervisor.yaml`,
    /// `startup.yaml` or `config/startup.yaml` in the current directory.
    #[arg(long = "config", short = 'c', value_name = "FILE[@HOST]")]
    pub configs: Vec<String>,
    /// A dotenv file whose variables are used in `${VAR}` expansion (before the environment).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
}

impl ManifestArgs {
    /// The variables' sources: `--env-file` over the process environment.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            env_file: self.env_file.clone(),
            ..LoadOptions::default()
        }
    }

    /// The manifests named, or found by `locate::manifests`.
    pub fn config_args(&self) -> Result<Vec<ConfigArg>, locate::NoManifest> {
        locate::manifests(&self.configs)
    }
}

/// A `SECONDS` option: a finite, non-negative number below a year (a usage
/// error otherwise, before anything starts).
pub fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && (0.0..=31_536_000.0).contains(&value) => Ok(value),
        _ => Err(format!(
            "`{text}` is not a number of seconds (0 to 31536000)"
        )),
    }
}

/// The process exit codes; listed in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// All good (0); warnings alone still exit 0.
    Ok,
    /// Problems found (`check`, `check-ports`), a required agent failed
    /// (`up`, `status`), or an agent did not get ready (`start`, `restart`,
    /// `up --wait`): 1.
    Problems,
    /// The manifest could not be read, or a usage error: 2.
    Usage,
    /// No supervisor is running for this run directory: 3.
    NotRunning,
    /// `run-one`: the agent's own exit status passed through (its code, or
    /// 128 + the signal that killed it; docs/kubernetes.md).
    Agent(u8),
}

impl Exit {
    /// The code for an error that reached `main`: manifest errors are usage
    /// errors (2), everything else is a failure (1).
    pub fn from_error(error: &anyhow::Error) -> Exit {
        if error
            .chain()
            .any(|cause| cause.is::<ManifestError>() || cause.is::<locate::NoManifest>())
        {
            Exit::Usage
        } else {
            Exit::Problems
        }
    }
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Problems => 1,
            Exit::Usage => 2,
            Exit::NotRunning => 3,
            Exit::Agent(code) => code,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// Logs go to stderr so that stdout stays for command output (tables, JSON).
pub fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // `up` must never wait on its terminal (a paused one stops stderr too):
    // its lines go through a bounded queue (`process::console`).
    let writer = match cli.command {
        Command::Up(_) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(QueuedLine::default),
        _ => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    match cli.log_format {
        LogFormat::Text => {
            let color = console::use_color(std::io::stderr().is_terminal());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(color)
                .event_format(console::Human { color })
                .with_writer(writer)
                .init()
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(writer)
            .init(),
    }
}

/// One log event, gathered and queued for stderr whole when dropped.
#[derive(Default)]
struct QueuedLine(Vec<u8>);

impl std::io::Write for QueuedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let lines = self.0.iter().filter(|byte| **byte == b'\n').count() as u64;
            crate::process::console::sink_of(crate::process::console::Stream::Stderr)
                .push(std::mem::take(&mut self.0), lines.max(1));
        }
    }
}

/// Runs one subcommand. `Err` is printed once by `main` (with its
/// context chain) and mapped by [`Exit::from_error`]; every other outcome
/// is an [`Exit`].
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::CheckPorts(args) => check_ports::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Up(args) => up::run(args),
        Command::Status(args) => status::run(args),
        Command::Top(args) => top::run(args),
        Command::Start(args) => start::run(args),
        Command::Stop(args) => stop::run(args),
        Command::Restart(args) => restart::run(args),
        Command::Scale(args) => scale::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Down(args) => down::run(args),
        Command::Reload(args) => reload::run(args),
        Command::Errors(args) => errors::run(args),
        Command::Dashboard(args) => dashboard::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Export(args) => export::run(args),
        Command::RunOne(args) => run_one::run(args),
        Command::WaitFor(args) => wait_for::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "supervisor", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("writing the manual page")?;
            Ok(Exit::Ok)
        }
        Command::Keeper => {
            crate::process::keeper::run_keeper();
            Ok(Exit::Ok)
        }
    }
}
