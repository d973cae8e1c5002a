//! `supervisor errors [--follow] [--agent A] [--severity S]`: print the
//! error journal `<run-dir>/errors.jsonl`, its rotated files first (every structured error agents,
//! legacy publishers and the supervisor reported) and, with `--follow`,
//! subscribe to the error bus and print new errors as they are published,
//! until interrupted or the supervisor ends.
//!
//! Owns reading and filtering; the journal and the bus are the supervisor's
//! (`transport::error_bus`), their endpoints are in `<run-dir>/fabric.json`.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;

use super::Exit;
use super::remote::{RunDirArgs, status};
use crate::supervisor::fabric::DESCRIPTION_FILE;
use crate::transport::{ErrorFollower, ErrorRecord, Severity};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: RunDirArgs,
    /// After the journal, print new errors as they are published.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only errors of this agent.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Only errors of this severity or worse: debug, info, warning, error,
    /// critical, fatal.
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    pub severity: Option<Severity>,
    /// Print each error as its JSON line instead of one readable line.
    #[arg(long)]
    pub json: bool,
}

/// `--severity`: one of the six names, any case.
fn parse_severity(text: &str) -> Result<Severity, String> {
    Severity::ALL
        .into_iter()
        .find(|severity| severity.as_str() == text.trim().to_ascii_lowercase())
        .ok_or_else(|| {
            format!("`{text}` is not one of debug, info, warning, error, critical, fatal")
        })
}

/// Prints the wanted records of one journal file.
fn print_journal(
    out: &mut impl Write,
    args: &Args,
    path: &std::path::Path,
    file: std::fs::File,
) -> anyhow::Result<()> {
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if let Ok(record) = serde_json::from_str::<ErrorRecord>(&line)
            && wanted(args, &record)
        {
            print(out, args, &record, &line)?;
        }
    }
    Ok(())
}

/// Prints the error journal (filtered by `--agent`, `--severity`), then
/// with `--follow` the error bus until interrupted. `Err` when the journal
/// cannot be read or the bus not reached.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    let journal = run_dir.path.join("errors.jsonl");
    // Follow first subscribes (so nothing published while the journal is
    // printed is missed; a record may then show twice), then prints.
    let follower = if args.follow {
        if let Err(exit) = status(&run_dir)? {
            return Ok(exit);
        }
        let description = run_dir.path.join(DESCRIPTION_FILE);
        let text = std::fs::read_to_string(&description)
            .with_context(|| format!("reading {}", description.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("reading {}", description.display()))?;
        let Some(endpoint) = value["errors"].as_str() else {
            anyhow::bail!(
                "the supervisor does not publish errors (see {})",
                description.display()
            );
        };
        let follower = ErrorFollower::connect(endpoint, &topics(&args))
            .with_context(|| format!("subscribing to the error bus at {endpoint}"))?;
        eprintln!("following errors on {endpoint} (Ctrl-C to stop)");
        Some(follower)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    // Rotated journals first, oldest first (`errors.jsonl.3` .. `.1`).
    let keep = crate::files::LogTarget::new(journal.clone()).keep;
    for index in (1..=keep).rev() {
        let older = crate::files::rotated_path(&journal, index);
        if let Ok(file) = std::fs::File::open(&older) {
            print_journal(&mut out, &args, &older, file)?;
        }
    }
    match std::fs::File::open(&journal) {
        Ok(file) => print_journal(&mut out, &args, &journal, file)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if follower.is_none()
                && let Err(exit) = status(&run_dir)?
            {
                return Ok(exit);
            }
        }
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", journal.display()));
        }
    }
    out.flush()?;
    let Some(follower) = follower else {
        return Ok(Exit::Ok);
    };
    let mut quiet = Duration::ZERO;
    loop {
        match follower.next(Duration::from_secs(1))? {
            Some(record) => {
                quiet = Duration::ZERO;
                if wanted(&args, &record) {
                    let line = serde_json::to_string(&record)?;
                    print(&mut out, &args, &record, &line)?;
                    out.flush()?;
                }
            }
            None => {
                quiet += Duration::from_secs(1);
                // Now and then, make sure there is still something to follow.
                if quiet >= Duration::from_secs(5) {
                    quiet = Duration::ZERO;
                    if crate::control::Client::connect(&run_dir).is_err() {
                        eprintln!("the supervisor has stopped");
                        return Ok(Exit::Ok);
                    }
                }
            }
        }
    }
}

/// Topic prefixes `<severity>.<agent>` for the filters (the agent is
/// checked exactly again in `wanted`: `error.api` also matches `api2`).
fn topics(args: &Args) -> Vec<String> {
    let agent = args.agent.as_deref().unwrap_or("");
    match args.severity {
        None if agent.is_empty() => vec![String::new()],
        minimum => Severity::ALL
            .into_iter()
            .filter(|severity| minimum.is_none_or(|minimum| *severity >= minimum))
            .map(|severity| format!("{}.{agent}", severity.as_str()))
            .collect(),
    }
}

/// Passes `--agent` (exact name) and `--severity` (that one or worse).
fn wanted(args: &Args, record: &ErrorRecord) -> bool {
    args.agent
        .as_ref()
        .is_none_or(|agent| *agent == record.agent)
        && args
            .severity
            .is_none_or(|minimum| record.severity >= minimum)
}

/// One record: its journal line as it is with `--json`, else one line for
/// people.
fn print(
    out: &mut impl Write,
    args: &Args,
    record: &ErrorRecord,
    line: &str,
) -> std::io::Result<()> {
    if args.json {
        return writeln!(out, "{line}");
    }
    let kind = match record.kind.is_empty() {
        true => String::new(),
        false => format!(" [{}]", record.kind),
    };
    writeln!(
        out,
        "{} {:<8} {}{kind}: {}",
        record.timestamp,
        record.severity.as_str(),
        record.agent,
        record.message
    )
}
