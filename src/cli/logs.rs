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
//! Owns reading the files back; their format (naming, rotation, timestamps)
//! is `crate::process::log`'s.

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
    let names: Vec<String> = match &args.agent {
        Some(name) => {
            if let Some(exit) = check_name(name, &supervisor, &found, &logs) {
                return Ok(exit);
            }
            vec![name.clone()]
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
