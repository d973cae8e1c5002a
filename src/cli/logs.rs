//! `supervisor logs [NAME] [-f] [-n N] [--since DURATION] [--grep TEXT]`:
//! print the end of one agent's log, or of every agent's log merged into one
//! time-ordered stream, and with `-f` follow it (across rotation) until
//! interrupted or until the reader of stdout goes away.
//!
//! What is printed:
//!
//! ```text
//! supervisor logs store      2026-12-07T12:00:01.123Z hello
//! supervisor logs            store  | 2026-12-07T12:00:01.123Z hello
//!                            api    | 2026-12-07T12:00:01.200Z listening
//! ```
//!
//! With NAME, the file's lines as they are; without, each line prefixed with
//! its agent's name padded to the longest name and ` | `. Lines are ordered
//! by their timestamp; one agent's lines always keep their file order. A line
//! without a timestamp (written by a version without them) counts as written
//! at the time of the timestamped line before it in its agent's files, or
//! before everything when there is none; it is never dropped, and `--since`
//! leaves it out only when that time is too old.
//!
//! `-n` counts the lines shown after `--since` and `--grep` (default 50, or
//! every line since `--since` when only that is given); the rotated files
//! (`x.log.1`, ..) are read, newest first, only as far as that needs.
//!
//! Works with or without a running supervisor (after `down`, a failed `up`
//! or a crash it reads the run directory's files). A running supervisor is
//! asked which agents exist, so an unknown NAME is reported with its list;
//! without one, the agents are those with log files. Only a run directory
//! without `logs/` and without a supervisor is "not running" (exit 3). A
//! closed stdout (`| head`) ends the command quietly with exit 0.
//!
//! With a peer link (docs/two-hosts.md), NAME may be another host's agent
//! (as `status` names it, or `HOST/NAME`): its lines are read on that host
//! and carried over the link. Without NAME, every host's agents are merged,
//! each line prefixed with `HOST/AGENT`; a host that cannot be reached is
//! reported on stderr and left out. Lines of different hosts are ordered by
//! their timestamps as each host's clock wrote them (`status` shows the
//! clock offset).
//!
//! Owns reading the files back (here and, through [`serve`], for a peer);
//! their format (naming, rotation, timestamps) is `crate::process::log`'s.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::Exit;
use super::remote::RunDirArgs;
use crate::control::{Client, ControlError, Request, RunDir, StatusView};
use crate::link::logs::{LogCursor, LogLine, LogPage, LogQuery};
use crate::process::log::{parse_file_name, parse_timestamp, rotated_path};

const AFTER_HELP: &str = "\
Output: with NAME, the log file's lines as written:
  2026-12-07T12:00:01.123Z hello
Without NAME, every agent's lines merged by time, prefixed with the agent name:
  store  | 2026-12-07T12:00:01.123Z hello
  api    | 2026-12-07T12:00:01.200Z listening
Timestamps are UTC, taken when the supervisor read the line. Works without a
running supervisor too (after `down` or a crash): the run directory's files
are read.";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The agent whose log to show; without it, every agent's, merged by time.
    #[arg(value_name = "NAME")]
    pub agent: Option<String>,
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Keep printing new lines as they are written (every agent's without NAME).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many lines from the end to print first [default: 50; with
    /// --since alone: every line since then].
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// Only lines written within this long before now: `90s`, `10m`, `1h`.
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    pub since: Option<Duration>,
    /// Only lines whose text contains PATTERN (plain text, case-sensitive).
    #[arg(long, value_name = "PATTERN")]
    pub grep: Option<String>,
}

/// `--since`: a duration in the manifest's syntax (`90s`, `10m`, `1h`).
fn parse_since(text: &str) -> Result<Duration, String> {
    crate::manifest::raw::parse_duration(text)
        .ok_or_else(|| format!("invalid duration `{text}` (expected e.g. 90s, 10m or 1h)"))
}

/// How often `-f` looks for new lines.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How much of a file one backward read takes.
const CHUNK_BYTES: u64 = 64 * 1024;

/// The reader of stdout went away (`| head`): stop, successfully.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
struct ReaderGone;

/// Prints the end of the agent logs and, with `-f`, follows them. Exit 2
/// when the named agent has no log, 3 when no supervisor runs and the run
/// directory has no logs either.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    match show(&args) {
        Err(error) if error.is::<ReaderGone>() => Ok(Exit::Ok),
        other => other,
    }
}

fn show(args: &Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    let logs = run_dir.logs();
    let supervisor = ask_status(&run_dir);
    if matches!(supervisor, Supervisor::NotRunning) && !logs.is_dir() {
        let not_running = ControlError::NotRunning {
            run_dir: run_dir.path.clone(),
        };
        eprintln!("{not_running} and no logs in {}", logs.display());
        return Ok(Exit::NotRunning);
    }
    let found = scan(&logs)?;
    if let Some(hosts) = Hosts::of(&supervisor) {
        match &args.agent {
            None => {
                let local = found.keys().cloned().collect();
                let peers = hosts.peers.iter().map(|peer| (peer.clone(), None));
                return show_joint(args, &run_dir, local, Some(&hosts.this), peers.collect());
            }
            Some(name) => {
                if let Supervisor::Running(view) = &supervisor
                    && let Some((host, agent)) = hosts.remote_agent(name, view)
                {
                    return show_joint(args, &run_dir, Vec::new(), None, vec![(host, Some(agent))]);
                }
            }
        }
    }
    let names: Vec<String> = match &args.agent {
        Some(name) => {
            let name = match &supervisor {
                Supervisor::Running(view) => Hosts::of(&supervisor)
                    .and_then(|hosts| hosts.local_name(name, view))
                    .unwrap_or(name),
                _ => name,
            };
            if let Some(exit) = check_name(name, &supervisor, &found, &logs) {
                return Ok(exit);
            }
            vec![name.to_string()]
        }
        None => found.keys().cloned().collect(),
    };
    let filter = Filter::new(args);
    let limit = args
        .lines
        .unwrap_or(if args.since.is_some() { usize::MAX } else { 50 });

    let mut tails = Vec::new();
    let mut streams = Vec::new();
    for name in &names {
        let older = found.get(name).map(Vec::as_slice).unwrap_or_default();
        let (lines, tail) = open_agent(&run_dir, name, older, &filter, limit)?;
        streams.push(lines);
        tails.push(tail);
    }
    let mut printer = Printer {
        out: std::io::BufWriter::new(std::io::stdout().lock()),
        width: args.agent.is_none().then(|| width(&names)),
    };
    let merged = merge(streams);
    for (index, line) in &merged[merged.len().saturating_sub(limit)..] {
        printer.print(&names[*index], &line.bytes)?;
    }
    printer.flush()?;
    if !args.follow {
        return Ok(Exit::Ok);
    }
    let mut names = names;
    loop {
        if reader_gone(POLL_INTERVAL) {
            return Ok(Exit::Ok);
        }
        if args.agent.is_none() {
            // Agents that started writing since: their whole file is new.
            for name in scan(&logs)?.into_keys() {
                if !names.contains(&name) {
                    tails.push(Tail::new(run_dir.agent_log(&name), None, 0, None));
                    names.push(name);
                }
            }
            printer.width = Some(width(&names));
        }
        let mut batches = Vec::with_capacity(tails.len());
        for tail in &mut tails {
            let mut lines = tail
                .poll()
                .with_context(|| format!("reading {}", tail.path.display()))?;
            lines.retain(|line| filter.keeps(line));
            batches.push(lines);
        }
        for (index, line) in merge(batches) {
            printer.print(&names[index], &line.bytes)?;
        }
        printer.flush()?;
    }
}

/// With a peer link: this host's name and its peers'.
struct Hosts {
    this: String,
    peers: Vec<String>,
}

impl Hosts {
    /// The hosts a running supervisor with a peer link names; `None`
    /// without one (then `logs` is this host's alone).
    fn of(supervisor: &Supervisor) -> Option<Hosts> {
        let Supervisor::Running(view) = supervisor else {
            return None;
        };
        let link = view.link.as_ref()?;
        let peers: Vec<String> = link.peers.iter().map(|peer| peer.host.clone()).collect();
        (!peers.is_empty()).then(|| Hosts {
            this: link.host.clone(),
            peers,
        })
    }

    /// `(host, its own name for the agent)` when `name` is a peer's agent:
    /// a row of the joint status on a peer host, or `PEER/NAME`.
    fn remote_agent(&self, name: &str, view: &StatusView) -> Option<(String, String)> {
        if let Some(row) = view.agent(name) {
            if !row.remote {
                return None;
            }
            if self.peers.contains(&row.host) {
                let own = name.strip_prefix(&format!("{}/", row.host)).unwrap_or(name);
                return Some((row.host.clone(), own.to_string()));
            }
        }
        let (host, own) = name.split_once('/')?;
        self.peers
            .iter()
            .any(|peer| peer == host)
            .then(|| (host.to_string(), own.to_string()))
    }

    /// `THIS/NAME` of a local agent, as the merged output prints it: `NAME`.
    fn local_name<'a>(&self, name: &'a str, view: &StatusView) -> Option<&'a str> {
        let own = name.strip_prefix(&format!("{}/", self.this))?;
        view.agent(own)
            .is_some_and(|row| !row.remote)
            .then_some(own)
    }
}

/// One peer's part of [`show_joint`]: what to ask it, where its files
/// were left.
struct PeerSource {
    host: String,
    query: LogQuery,
    /// `None` until a page came back.
    cursors: Option<BTreeMap<String, LogCursor>>,
    /// Whether the last read failed (reported once until one succeeds).
    failing: bool,
}

impl PeerSource {
    /// Reads the next page from the peer (the end of its logs first, then
    /// what was written since).
    fn poll(&mut self, run_dir: &RunDir) -> Result<LogPage, String> {
        let query = LogQuery {
            after: self.cursors.clone(),
            ..self.query.clone()
        };
        let page = peer_logs(run_dir, &self.host, query)?;
        self.cursors = Some(page.cursors.clone());
        Ok(page)
    }

    /// [`PeerSource::poll`] while following: a failure is printed once
    /// (and the recovery), the lines are left out meanwhile.
    fn follow(&mut self, run_dir: &RunDir) -> Option<LogPage> {
        match self.poll(run_dir) {
            Ok(page) => {
                if self.failing {
                    eprintln!("logs of host `{}`: answering again", self.host);
                }
                self.failing = false;
                Some(page)
            }
            Err(message) => {
                if !self.failing {
                    eprintln!("warning: {message}; its lines are left out until it answers");
                }
                self.failing = true;
                None
            }
        }
    }
}

/// Asks this host's supervisor for a page of `host`'s logs (read there,
/// carried over the peer link).
fn peer_logs(run_dir: &RunDir, host: &str, query: LogQuery) -> Result<LogPage, String> {
    let request = Request::PeerLogs {
        host: host.to_string(),
        query,
    };
    let timeout = crate::link::LOGS_TIMEOUT + Duration::from_secs(5);
    match Client::connect(run_dir).and_then(|mut client| client.request(&request, timeout)) {
        Ok(response) if response.ok => response
            .logs
            .ok_or_else(|| format!("host `{host}`: the supervisor answered without lines")),
        Ok(response) => Err(response
            .error
            .unwrap_or_else(|| format!("logs of host `{host}`: refused"))),
        Err(error) => Err(format!("logs of host `{host}`: {error}")),
    }
}

/// The index of `name` in `names` (added when new), with `batches` as long
/// as `names`.
fn slot(names: &mut Vec<String>, batches: &mut Vec<Vec<Line>>, name: String) -> usize {
    let index = match names.iter().position(|known| *known == name) {
        Some(index) => index,
        None => {
            names.push(name);
            names.len() - 1
        }
    };
    if batches.len() < names.len() {
        batches.resize_with(names.len(), Vec::new);
    }
    index
}

/// A peer's line as a [`Line`] of this module.
fn remote_line(line: LogLine) -> Line {
    Line {
        time: line.time_ms.map(from_ms),
        bytes: line.text.into_bytes(),
    }
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn to_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `logs` across hosts: this host's agents `local` (printed as
/// `THIS/NAME` when `this` is given) and each peer's (one agent, or all),
/// merged by time; with `-f`, followed (the peers polled through the
/// supervisor every [`POLL_INTERVAL`]). One remote agent (`local` empty,
/// one peer with an agent) prints its lines as they are, without prefix.
fn show_joint(
    args: &Args,
    run_dir: &RunDir,
    local: Vec<String>,
    this: Option<&str>,
    peers: Vec<(String, Option<String>)>,
) -> anyhow::Result<Exit> {
    let logs = run_dir.logs();
    let found = scan(&logs)?;
    let filter = Filter::new(args);
    let limit = args
        .lines
        .unwrap_or(if args.since.is_some() { usize::MAX } else { 50 });
    let display = |agent: &str| match this {
        Some(this) => format!("{this}/{agent}"),
        None => agent.to_string(),
    };
    let mut names: Vec<String> = Vec::new();
    let mut batches: Vec<Vec<Line>> = Vec::new();
    let mut tails: Vec<(usize, Tail)> = Vec::new();
    for agent in &local {
        let older = found.get(agent).map(Vec::as_slice).unwrap_or_default();
        let (lines, tail) = open_agent(run_dir, agent, older, &filter, limit)?;
        let index = slot(&mut names, &mut batches, display(agent));
        batches[index] = lines;
        tails.push((index, tail));
    }
    let single = peers.len() == 1 && local.is_empty() && peers[0].1.is_some();
    let mut sources: Vec<PeerSource> = peers
        .into_iter()
        .map(|(host, agent)| PeerSource {
            host,
            query: LogQuery {
                agent,
                lines: limit,
                since_ms: args
                    .since
                    .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX)),
                grep: args.grep.clone(),
                after: None,
            },
            cursors: None,
            failing: false,
        })
        .collect();
    for source in &mut sources {
        let page = match source.poll(run_dir) {
            Ok(page) => page,
            Err(message) if single => {
                eprintln!("error: {message}");
                return Ok(Exit::Problems);
            }
            Err(message) => {
                eprintln!("warning: {message}; its lines are left out");
                source.failing = true;
                continue;
            }
        };
        for line in page.lines {
            let index = slot(
                &mut names,
                &mut batches,
                format!("{}/{}", source.host, line.agent),
            );
            batches[index].push(remote_line(line));
        }
    }
    let mut printer = Printer {
        out: std::io::BufWriter::new(std::io::stdout().lock()),
        width: (!single).then(|| width(&names)),
    };
    let merged = merge(std::mem::take(&mut batches));
    for (index, line) in &merged[merged.len().saturating_sub(limit)..] {
        printer.print(&names[*index], &line.bytes)?;
    }
    printer.flush()?;
    if !args.follow {
        return Ok(Exit::Ok);
    }
    loop {
        if reader_gone(POLL_INTERVAL) {
            return Ok(Exit::Ok);
        }
        batches.clear();
        batches.resize_with(names.len(), Vec::new);
        if this.is_some() {
            // Local agents that started writing since: their whole file is new.
            for agent in scan(&logs)?.into_keys() {
                if !names.contains(&display(&agent)) {
                    let index = slot(&mut names, &mut batches, display(&agent));
                    tails.push((index, Tail::new(run_dir.agent_log(&agent), None, 0, None)));
                }
            }
        }
        for (index, tail) in &mut tails {
            let mut lines = tail
                .poll()
                .with_context(|| format!("reading {}", tail.path.display()))?;
            lines.retain(|line| filter.keeps(line));
            batches[*index] = lines;
        }
        for source in &mut sources {
            let first = source.cursors.is_none();
            let Some(page) = source.follow(run_dir) else {
                continue;
            };
            let mut lines: Vec<(usize, Line)> = Vec::new();
            for line in page.lines {
                let index = slot(
                    &mut names,
                    &mut batches,
                    format!("{}/{}", source.host, line.agent),
                );
                lines.push((index, remote_line(line)));
            }
            // A host that answers for the first time only now: its last
            // `limit` lines, as on start.
            let skip = if first {
                lines.len().saturating_sub(limit)
            } else {
                0
            };
            for (index, line) in lines.into_iter().skip(skip) {
                batches[index].push(line);
            }
        }
        if printer.width.is_some() {
            printer.width = Some(width(&names));
        }
        for (index, line) in merge(std::mem::take(&mut batches)) {
            printer.print(&names[index], &line.bytes)?;
        }
        printer.flush()?;
    }
}

/// Reads this host's agent logs for a peer's `logs` (the peer link's
/// [`crate::link::logs::LogReader`]): the newest `lines` lines, or with
/// `after` what was written since, merged by time across agents.
pub fn serve(run_dir: &RunDir, query: &LogQuery) -> Result<LogPage, String> {
    let logs = run_dir.logs();
    let found = scan(&logs).map_err(|error| format!("{error:#}"))?;
    let filter = Filter {
        since: query.since_ms.map(|ms| {
            SystemTime::now()
                .checked_sub(Duration::from_millis(ms))
                .unwrap_or(UNIX_EPOCH)
        }),
        grep: query
            .grep
            .as_ref()
            .map(|pattern| pattern.as_bytes().to_vec()),
    };
    let names: Vec<String> = match (&query.agent, &query.after) {
        (Some(name), None) if !found.contains_key(name) => {
            let known: Vec<&str> = found.keys().map(String::as_str).collect();
            return Err(format!(
                "no logs of agent `{name}` there (agents with logs: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        (Some(name), _) => vec![name.clone()],
        (None, _) => found.keys().cloned().collect(),
    };
    let mut streams = Vec::with_capacity(names.len());
    let mut cursors = BTreeMap::new();
    for name in &names {
        let read = match &query.after {
            Some(after) => {
                let cursor = after.get(name).copied().unwrap_or_default();
                let mut tail = Tail::new(
                    run_dir.agent_log(name),
                    cursor.inode,
                    cursor.offset,
                    cursor.last_time_ms.map(from_ms),
                );
                tail.poll()
                    .map(|mut lines| {
                        lines.retain(|line| filter.keeps(line));
                        (lines, tail)
                    })
                    .map_err(anyhow::Error::from)
            }
            None => {
                let older = found.get(name).map(Vec::as_slice).unwrap_or_default();
                open_agent(run_dir, name, older, &filter, query.lines)
            }
        };
        let (lines, tail) =
            read.map_err(|error| format!("reading the log of `{name}`: {error:#}"))?;
        streams.push(lines);
        cursors.insert(name.clone(), tail.cursor());
    }
    let merged = merge(streams);
    let start = match query.after {
        Some(_) => 0,
        None => merged.len().saturating_sub(query.lines),
    };
    let lines = merged
        .into_iter()
        .skip(start)
        .map(|(index, line)| LogLine {
            agent: names[index].clone(),
            time_ms: line.time.map(to_ms),
            text: String::from_utf8_lossy(&line.bytes).into_owned(),
        })
        .collect();
    Ok(LogPage { lines, cursors })
}

/// What the control socket said about the run directory.
enum Supervisor {
    Running(StatusView),
    NotRunning,
    /// It did not answer properly; the files are all we know.
    Unknown,
}

/// What the supervisor of `run_dir` says, if one runs: used to name the
/// agents it knows and to tell "no such agent" from "no output yet".
fn ask_status(run_dir: &RunDir) -> Supervisor {
    let answer = Client::connect(run_dir)
        .and_then(|mut client| client.request(&Request::Status, Duration::from_secs(5)));
    match answer {
        Ok(response) if response.ok => match response.status {
            Some(status) => Supervisor::Running(status),
            None => Supervisor::Unknown,
        },
        Ok(response) => {
            tracing::warn!(
                error = response.error.as_deref().unwrap_or("refused"),
                "the supervisor refused the status request; reading the log files"
            );
            Supervisor::Unknown
        }
        Err(ControlError::NotRunning { .. }) => Supervisor::NotRunning,
        Err(error) => {
            tracing::warn!(%error, "cannot ask the supervisor; reading the log files");
            Supervisor::Unknown
        }
    }
}

/// `Some(exit)` after printing why `name` is not an agent: the running
/// supervisor's list, else the agents that have log files.
fn check_name(
    name: &str,
    supervisor: &Supervisor,
    found: &BTreeMap<String, Vec<u32>>,
    logs: &Path,
) -> Option<Exit> {
    match supervisor {
        Supervisor::Running(view) => {
            if view.agent(name).is_some() {
                return None;
            }
            let names: Vec<&str> = view
                .agents
                .iter()
                .map(|agent| agent.name.as_str())
                .collect();
            eprintln!("error: no agent `{name}` (agents: {})", names.join(", "));
        }
        Supervisor::NotRunning | Supervisor::Unknown => {
            if found.contains_key(name) {
                return None;
            }
            let names: Vec<&str> = found.keys().map(String::as_str).collect();
            let list = if names.is_empty() {
                "no agent has logs there".to_string()
            } else {
                format!("agents with logs: {}", names.join(", "))
            };
            eprintln!(
                "error: no logs of agent `{name}` in {} ({list})",
                logs.display()
            );
        }
    }
    Some(Exit::Usage)
}

/// The agents with files in `logs/`, each with the indices of its rotated
/// files (`x.log.1` is 1), oldest first. A missing directory has none.
fn scan(logs: &Path) -> anyhow::Result<BTreeMap<String, Vec<u32>>> {
    let mut found: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let entries = match std::fs::read_dir(logs) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(error) => {
            return Err(error).with_context(|| format!("listing {}", logs.display()));
        }
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", logs.display()))?;
        let file_name = entry.file_name();
        let Some((agent, index)) = file_name.to_str().and_then(parse_file_name) else {
            continue;
        };
        let indices = found.entry(agent.to_string()).or_default();
        if index > 0 {
            indices.push(index);
        }
    }
    for indices in found.values_mut() {
        indices.sort_unstable_by(|a, b| b.cmp(a));
    }
    Ok(found)
}

/// The widest name, in characters, for the `name | ` prefix.
fn width(names: &[String]) -> usize {
    names
        .iter()
        .map(|name| name.chars().count())
        .max()
        .unwrap_or(0)
}

/// The last lines of an agent's log (across rotation), at most `count`, for
/// other commands that show them next to an error. Empty when it has none.
pub fn last_lines(run_dir: &RunDir, agent: &str, count: usize) -> Vec<String> {
    let older = scan(&run_dir.logs())
        .ok()
        .and_then(|mut found| found.remove(agent))
        .unwrap_or_default();
    let filter = Filter {
        since: None,
        grep: None,
    };
    open_agent(run_dir, agent, &older, &filter, count)
        .map(|(lines, _)| {
            lines
                .iter()
                .map(|line| String::from_utf8_lossy(&line.bytes).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the end of one agent's files: the last `limit` lines that pass
/// `filter`, oldest first, and a [`Tail`] that continues after them.
/// `older` are its rotated files' indices, oldest first.
fn open_agent(
    run_dir: &RunDir,
    name: &str,
    older: &[u32],
    filter: &Filter,
    limit: usize,
) -> anyhow::Result<(Vec<Line>, Tail)> {
    let path = run_dir.agent_log(name);
    let (current, inode, length) = match File::open(&path) {
        Ok(file) => {
            let meta = file
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?;
            (Some((file, meta.len())), Some(meta.ino()), meta.len())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => (None, None, 0),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let older = older
        .iter()
        .map(|index| rotated_path(&path, *index))
        .collect();
    let mut backwards = Backwards {
        older,
        current: current.map(|(file, length)| Reading::new(path.clone(), file, length)),
    };
    let (lines, newest) = if limit == 0 {
        (Vec::new(), None)
    } else {
        recent_lines(&mut backwards, filter, limit)?
    };
    Ok((lines, Tail::new(path, inode, length, newest)))
}

/// One line of an agent's log and the time it is ordered by.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    /// Its timestamp, or that of the nearest timestamped line before it in
    /// the agent's files; `None` (before everything) when there is none.
    time: Option<SystemTime>,
    /// The line as written, timestamp included, without its `\n`.
    bytes: Vec<u8>,
}

impl Line {
    /// The text after the timestamp (all of it when there is none).
    fn text(&self) -> &[u8] {
        parse_timestamp(&self.bytes).map_or(&self.bytes, |(_, text)| text)
    }
}

/// `--since` and `--grep`.
struct Filter {
    /// Lines older than this are left out.
    since: Option<SystemTime>,
    /// Only lines containing these bytes (plain substring, case-sensitive).
    grep: Option<Vec<u8>>,
}

impl Filter {
    /// The filter the flags ask for (`--since` counted back from now).
    fn new(args: &Args) -> Filter {
        Filter {
            since: args
                .since
                .map(|since| SystemTime::now().checked_sub(since).unwrap_or(UNIX_EPOCH)),
            grep: args
                .grep
                .as_ref()
                .map(|pattern| pattern.as_bytes().to_vec()),
        }
    }

    /// Passes `--since`; a line of unknown time fails it when it is set.
    fn recent(&self, time: Option<SystemTime>) -> bool {
        match self.since {
            Some(cutoff) => time.is_some_and(|time| time >= cutoff),
            None => true,
        }
    }

    /// Passes `--grep`.
    fn matches(&self, text: &[u8]) -> bool {
        match &self.grep {
            Some(pattern) => contains(text, pattern),
            None => true,
        }
    }

    /// Passes both (the pattern is matched against the text after the
    /// timestamp).
    fn keeps(&self, line: &Line) -> bool {
        self.recent(line.time) && self.matches(line.text())
    }
}

/// Whether `pattern` occurs in `text` (an empty pattern always does).
fn contains(text: &[u8], pattern: &[u8]) -> bool {
    pattern.is_empty() || text.windows(pattern.len()).any(|window| window == pattern)
}

/// The last `limit` lines of `backwards` that pass `filter`, oldest first,
/// and the newest timestamp seen. Reads back only until it has `limit`
/// lines whose times are known, or reaches a line older than `--since`
/// (lines are appended in time order, so everything before it is older).
fn recent_lines(
    backwards: &mut Backwards,
    filter: &Filter,
    limit: usize,
) -> anyhow::Result<(Vec<Line>, Option<SystemTime>)> {
    // Newest first while reading.
    let mut accepted: Vec<Line> = Vec::new();
    // Matching lines without a timestamp whose time is the next (older)
    // timestamped line's, not read yet; newest first.
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut newest = None;
    let mut reached_old = false;
    while let Some(bytes) = backwards.next_line()? {
        let Some((time, text)) = parse_timestamp(&bytes) else {
            if filter.matches(&bytes) {
                pending.push(bytes);
            }
            continue;
        };
        newest = newest.or(Some(time));
        if !filter.recent(Some(time)) {
            reached_old = true;
            break;
        }
        accepted.extend(pending.drain(..).map(|bytes| Line {
            time: Some(time),
            bytes,
        }));
        if accepted.len() >= limit {
            break;
        }
        if filter.matches(text) {
            accepted.push(Line {
                time: Some(time),
                bytes,
            });
        }
        if accepted.len() >= limit {
            break;
        }
    }
    if !reached_old && filter.recent(None) {
        // The lines before every timestamp (the loop only leaves `pending`
        // filled when the files ran out).
        accepted.extend(pending.into_iter().map(|bytes| Line { time: None, bytes }));
    }
    accepted.truncate(limit);
    accepted.reverse();
    Ok((accepted, newest))
}

/// Interleaves the agents' lines by time; each agent's lines keep their
/// order, ties go to the agent listed first. Gives (agent index, line).
fn merge(streams: Vec<Vec<Line>>) -> Vec<(usize, Line)> {
    let total = streams.iter().map(Vec::len).sum();
    let mut streams: Vec<VecDeque<Line>> = streams.into_iter().map(VecDeque::from).collect();
    let mut heads: BinaryHeap<Reverse<(Option<SystemTime>, usize)>> = streams
        .iter()
        .enumerate()
        .filter_map(|(index, lines)| Some(Reverse((lines.front()?.time, index))))
        .collect();
    let mut merged = Vec::with_capacity(total);
    while let Some(Reverse((_, index))) = heads.pop() {
        let stream = &mut streams[index];
        if let Some(line) = stream.pop_front() {
            merged.push((index, line));
        }
        if let Some(next) = stream.front() {
            heads.push(Reverse((next.time, index)));
        }
    }
    merged
}

/// One agent's lines newest first, across `x.log`, `x.log.1`, ...
struct Backwards {
    /// Rotated files still to read; the next (newest) is last.
    older: Vec<PathBuf>,
    current: Option<Reading>,
}

impl Backwards {
    /// The next older line, moving on to the next rotated file when one
    /// is exhausted; a file rotated away meanwhile is skipped.
    fn next_line(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        loop {
            if let Some(reading) = &mut self.current {
                if let Some(line) = reading
                    .previous_line()
                    .with_context(|| format!("reading {}", reading.path.display()))?
                {
                    return Ok(Some(line));
                }
                self.current = None;
            }
            let Some(path) = self.older.pop() else {
                return Ok(None);
            };
            let opened = File::open(&path).and_then(|file| {
                let length = file.metadata()?.len();
                Ok((file, length))
            });
            match opened {
                Ok((file, length)) => self.current = Some(Reading::new(path, file, length)),
                // Rotated away meanwhile.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("reading {}", path.display()));
                }
            }
        }
    }
}

/// One file read backwards from `length`, a chunk at a time.
struct Reading {
    path: PathBuf,
    file: File,
    /// File offset of `buffer[0]`; everything after `buffer` was handed out.
    start: u64,
    buffer: Vec<u8>,
    /// Whether the file's final `\n` has been dropped (it ends the last
    /// line, it does not begin an empty one).
    trimmed: bool,
    done: bool,
}

impl Reading {
    /// Reads `file` backwards from `length` (its size when opened: lines
    /// appended later are for `-f`).
    fn new(path: PathBuf, file: File, length: u64) -> Reading {
        Reading {
            path,
            file,
            start: length,
            buffer: Vec::new(),
            trimmed: false,
            done: length == 0,
        }
    }

    /// The line before the last one handed out, without its newline;
    /// `None` at the start of the file.
    fn previous_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        loop {
            if !self.trimmed && !self.buffer.is_empty() {
                self.trimmed = true;
                if self.buffer.last() == Some(&b'\n') {
                    self.buffer.pop();
                }
            }
            if self.trimmed
                && let Some(end) = self.buffer.iter().rposition(|byte| *byte == b'\n')
            {
                let line = self.buffer[end + 1..].to_vec();
                self.buffer.truncate(end);
                return Ok(Some(line));
            }
            if self.start == 0 {
                self.done = true;
                return Ok(Some(std::mem::take(&mut self.buffer)));
            }
            let from = self.start.saturating_sub(CHUNK_BYTES);
            let mut chunk = vec![0; (self.start - from) as usize];
            self.file.read_exact_at(&mut chunk, from)?;
            chunk.extend_from_slice(&self.buffer);
            self.buffer = chunk;
            self.start = from;
        }
    }
}

/// Follows one agent's current file (`x.log`) from where the last read ended.
struct Tail {
    path: PathBuf,
    /// The file read so far; `None` before there was one.
    inode: Option<u64>,
    /// Bytes of it already handed out (complete lines only).
    offset: u64,
    /// The newest timestamp seen, for lines without one.
    last_time: Option<SystemTime>,
}

impl Tail {
    /// Follows `path` from `offset` of the file with `inode`. A different
    /// inode later means the file was rotated: the rest of the old one (now
    /// `.1`) is read, then the new one from its start.
    fn new(path: PathBuf, inode: Option<u64>, offset: u64, last_time: Option<SystemTime>) -> Tail {
        Tail {
            path,
            inode,
            offset,
            last_time,
        }
    }

    /// Where it stands, for a peer to continue from.
    fn cursor(&self) -> LogCursor {
        LogCursor {
            inode: self.inode,
            offset: self.offset,
            last_time_ms: self.last_time.map(to_ms),
        }
    }

    /// The lines written since the last call. After a rotation the rest of
    /// the old file (now `x.log.1`) comes first, then the new file's.
    fn poll(&mut self) -> std::io::Result<Vec<Line>> {
        let mut raw = Vec::new();
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(error),
        };
        let meta = file.metadata()?;
        if Some(meta.ino()) != self.inode {
            if let Some(old) = self.inode
                && let Ok(rotated) = File::open(rotated_path(&self.path, 1))
                && rotated.metadata()?.ino() == old
            {
                read_after(&rotated, self.offset, true, &mut raw)?;
            }
            self.inode = Some(meta.ino());
            self.offset = 0;
        } else if meta.len() < self.offset {
            // Truncated: start again.
            self.offset = 0;
        }
        self.offset += read_after(&file, self.offset, false, &mut raw)?;
        Ok(raw
            .into_iter()
            .map(|bytes| {
                if let Some((time, _)) = parse_timestamp(&bytes) {
                    self.last_time = Some(time);
                }
                Line {
                    time: self.last_time,
                    bytes,
                }
            })
            .collect())
    }
}

/// Appends the lines of `file` after `offset` to `lines` and returns how many
/// bytes they took. Stops after the last complete line unless `to_end`
/// (a file no longer written to).
fn read_after(
    file: &File,
    offset: u64,
    to_end: bool,
    lines: &mut Vec<Vec<u8>>,
) -> std::io::Result<u64> {
    let length = file.metadata()?.len();
    if length <= offset {
        return Ok(0);
    }
    let mut bytes = vec![0; (length - offset) as usize];
    file.read_exact_at(&mut bytes, offset)?;
    let complete = match bytes.iter().rposition(|byte| *byte == b'\n') {
        Some(end) => end + 1,
        None if to_end => bytes.len(),
        None => 0,
    };
    let body = &bytes[..complete];
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    if complete > 0 {
        lines.extend(body.split(|byte| *byte == b'\n').map(<[u8]>::to_vec));
    }
    Ok(complete as u64)
}

/// Writes lines to stdout; a closed stdout becomes [`ReaderGone`].
struct Printer<W: Write> {
    out: W,
    /// Pad names to this (merged output); `None`: one agent, no prefix.
    width: Option<usize>,
}

impl<W: Write> Printer<W> {
    /// Writes one line, prefixed with the padded agent name when merging.
    fn print(&mut self, name: &str, line: &[u8]) -> anyhow::Result<()> {
        let written = match self.width {
            Some(width) => write!(self.out, "{name:<width$} | "),
            None => Ok(()),
        };
        written
            .and_then(|()| self.out.write_all(line))
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(stdout_error)
    }

    /// Flushes stdout (after each batch when following).
    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush().map_err(stdout_error)
    }
}

/// A broken pipe (the reader went away, e.g. `| head`) is [`ReaderGone`],
/// which ends the command quietly with exit 0; any other error is one.
fn stdout_error(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        ReaderGone.into()
    } else {
        anyhow::Error::new(error).context("writing to stdout")
    }
}

/// Waits up to `interval`; true as soon as stdout is a pipe or socket whose
/// reader has gone (`-f | head -1` would otherwise only notice on the next
/// line, which may never come). A terminal or file just waits.
fn reader_gone(interval: Duration) -> bool {
    let mut stdout = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        // No events asked: only POLLERR (no reader), POLLHUP, POLLNVAL come back.
        events: 0,
        revents: 0,
    };
    let timeout = i32::try_from(interval.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid, exclusively borrowed pollfd and its count.
    let ready = unsafe { libc::poll(&mut stdout, 1, timeout) };
    ready > 0 && stdout.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::log::format_timestamp;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn stamped(seconds: u64, text: &str) -> String {
        format!(
            "{} {text}",
            String::from_utf8(format_timestamp(at(seconds)).to_vec()).unwrap()
        )
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|line| String::from_utf8_lossy(line.text()).into_owned())
            .collect()
    }

    fn no_filter() -> Filter {
        Filter {
            since: None,
            grep: None,
        }
    }

    /// Writes `files` (current first, then `.1`, `.2` ..) for agent `a`.
    fn agent_files(files: &[String]) -> (tempfile::TempDir, RunDir) {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::new(dir.path());
        std::fs::create_dir_all(run_dir.logs()).unwrap();
        for (index, text) in files.iter().enumerate() {
            let path = rotated_path(&run_dir.agent_log("a"), index as u32);
            std::fs::write(path, text).unwrap();
        }
        (dir, run_dir)
    }

    fn read(run_dir: &RunDir, filter: &Filter, limit: usize) -> Vec<Line> {
        let older = scan(&run_dir.logs())
            .unwrap()
            .remove("a")
            .unwrap_or_default();
        open_agent(run_dir, "a", &older, filter, limit).unwrap().0
    }

    #[test]
    fn lines_are_read_backwards_across_rotated_files() {
        let big = "x".repeat(CHUNK_BYTES as usize * 2 + 7);
        let (_dir, run_dir) = agent_files(&[
            format!("{}\n{}", stamped(5, "five"), stamped(6, "six")),
            format!("{}\n{}\n\n", stamped(3, "three"), stamped(4, &big)),
            format!("old one\n{}\n", stamped(2, "two")),
        ]);
        let all = read(&run_dir, &no_filter(), usize::MAX);
        assert_eq!(
            texts(&all),
            ["old one", "two", "three", big.as_str(), "", "five", "six"]
        );
        let times: Vec<_> = all.iter().map(|line| line.time).collect();
        assert_eq!(
            times,
            [
                None,
                Some(at(2)),
                Some(at(3)),
                Some(at(4)),
                Some(at(4)),
                Some(at(5)),
                Some(at(6))
            ]
        );
        assert_eq!(texts(&read(&run_dir, &no_filter(), 2)), ["five", "six"]);
        assert!(read(&run_dir, &no_filter(), 0).is_empty());
    }

    #[test]
    fn since_and_grep_filter_before_counting() {
        let (_dir, run_dir) = agent_files(&[format!(
            "legacy ok\n{}\n{}\n{}\n{}\nstray ok\n",
            stamped(10, "ok a"),
            stamped(20, "no"),
            stamped(30, "ok b"),
            stamped(40, "ok c")
        )]);
        let grep = Filter {
            since: None,
            grep: Some(b"ok".to_vec()),
        };
        assert_eq!(
            texts(&read(&run_dir, &grep, usize::MAX)),
            ["legacy ok", "ok a", "ok b", "ok c", "stray ok"]
        );
        assert_eq!(texts(&read(&run_dir, &grep, 2)), ["ok c", "stray ok"]);
        let since = Filter {
            since: Some(at(30)),
            grep: None,
        };
        // The stray line counts as written at 40; the legacy one is older
        // than everything.
        assert_eq!(
            texts(&read(&run_dir, &since, usize::MAX)),
            ["ok b", "ok c", "stray ok"]
        );
    }

    #[test]
    fn merging_orders_by_time_and_keeps_each_agent_in_order() {
        let line = |seconds: Option<u64>, text: &str| Line {
            time: seconds.map(at),
            bytes: text.as_bytes().to_vec(),
        };
        let merged = merge(vec![
            vec![line(None, "a0"), line(Some(1), "a1"), line(Some(4), "a4")],
            vec![
                line(Some(2), "b2"),
                line(Some(4), "b4"),
                line(Some(3), "b3"),
            ],
            vec![],
            vec![line(None, "d0"), line(Some(1), "d1")],
        ]);
        let order: Vec<(usize, &str)> = merged
            .iter()
            .map(|(index, line)| (*index, std::str::from_utf8(&line.bytes).unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                (0, "a0"),
                (3, "d0"),
                (0, "a1"),
                (3, "d1"),
                (1, "b2"),
                (0, "a4"),
                (1, "b4"),
                (1, "b3")
            ]
        );
    }

    #[test]
    fn a_tail_follows_across_rotation_without_losing_lines() {
        let (_dir, run_dir) = agent_files(&["".to_string()]);
        let path = run_dir.agent_log("a");
        let (lines, mut tail) = open_agent(&run_dir, "a", &[], &no_filter(), 50).unwrap();
        assert!(lines.is_empty());
        std::fs::write(&path, format!("{}\npart", stamped(1, "one"))).unwrap();
        assert_eq!(texts(&tail.poll().unwrap()), ["one"]);
        // The unfinished line waits for its end; then the file is rotated
        // and a new one begins.
        std::fs::write(&path, format!("{}\npartial\nlast\n", stamped(1, "one"))).unwrap();
        std::fs::rename(&path, rotated_path(&path, 1)).unwrap();
        std::fs::write(&path, format!("{}\n", stamped(2, "new"))).unwrap();
        let lines = tail.poll().unwrap();
        assert_eq!(texts(&lines), ["partial", "last", "new"]);
        assert_eq!(lines[0].time, Some(at(1)));
        assert!(tail.poll().unwrap().is_empty());
    }

    #[test]
    fn file_names_are_grouped_by_agent() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.log",
            "a.log.2",
            "a.log",
            "a.log.1",
            "notes.txt",
            "c.log.1",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found = scan(dir.path()).unwrap();
        let expected: BTreeMap<String, Vec<u32>> = [
            ("a".to_string(), vec![2, 1]),
            ("b".to_string(), vec![]),
            ("c".to_string(), vec![1]),
        ]
        .into();
        assert_eq!(found, expected);
        assert!(scan(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn last_lines_give_the_end_of_an_agent_log() {
        let (_dir, run_dir) = agent_files(&[
            format!("{}\n", stamped(3, "c")),
            format!("{}\n{}\n", stamped(1, "a"), stamped(2, "b")),
        ]);
        let lines = last_lines(&run_dir, "a", 2);
        assert_eq!(lines, [stamped(2, "b"), stamped(3, "c")]);
        assert!(last_lines(&run_dir, "nobody", 2).is_empty());
    }
}
