//! Agent output: each line of a child's stdout/stderr goes to
//! `<run-dir>/logs/<agent>.log` (rotated by size, bounded total) and, in the
//! foreground, to the console with a `name |` prefix like docker compose.
//!
//! A line in the file starts with the time it was read from the pipe, UTC,
//! RFC 3339 with milliseconds, then one space:
//!
//! ```text
//! 2026-12-07T12:00:01.123Z hello
//! ```
//!
//! The console copy (`name | hello`) has no time. Rotation (shared with the
//! error journal) is [`crate::files`]'s: `agent.log` becomes `agent.log.1`,
//! `.1` becomes `.2` and so on ([`rotated_path`], [`parse_file_name`]).
//!
//! The console copy goes through the bounded queue of [`super::console`],
//! so a stalled console never slows the pump, the agent or its log file.
//!
//! Owns the log files while a run is alive (one pump task per run owns its
//! file) and their format: naming and the timestamp ([`format_timestamp`],
//! [`parse_timestamp`]). Does not own where the run
//! directory is (`cli::up` decides) nor reading the files back
//! (`cli::logs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::os::fd::OwnedFd;

use tokio::net::unix::pipe;

use super::SpawnSpec;
pub use crate::files::{LogTarget, RotatingFile, rotated_path};

/// How lines are echoed to the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// Names are padded to this width so the `|` columns line up.
    pub width: usize,
    /// Colour the prefix (only when stdout is a terminal).
    pub color: bool,
}

/// Opens an agent's log; a file that cannot be opened (a planted symbolic
/// link, say) is warned about and the agent's output goes to the console only.
fn open_log(target: LogTarget) -> RotatingFile {
    if let Some(parent) = target.path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    RotatingFile::open(target.clone()).unwrap_or_else(|error| {
        tracing::warn!(path = %target.path.display(), %error, "cannot open agent log");
        RotatingFile::unopened(target)
    })
}

/// Appends `<stamp> <line>\n` in one write.
fn write_line(file: &mut RotatingFile, stamp: &Stamp, line: &[u8]) {
    let _ = file.append([stamp, b" ", line, b"\n"]);
}

/// The agent and rotation index of a file in `logs/`: `api.log` is
/// `("api", 0)`, `api.log.2` is `("api", 2)`; anything else is `None`.
pub fn parse_file_name(file_name: &str) -> Option<(&str, u32)> {
    if let Some(agent) = file_name.strip_suffix(".log") {
        return (!agent.is_empty()).then_some((agent, 0));
    }
    let (stem, index) = file_name.rsplit_once('.')?;
    let agent = stem.strip_suffix(".log")?;
    if agent.is_empty() || index.is_empty() || !index.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some((agent, index.parse().ok()?))
}

/// Length of a timestamp: `2026-12-07T12:00:01.123Z`.
pub const STAMP_LEN: usize = 24;

/// A formatted timestamp, kept on the stack.
pub type Stamp = [u8; STAMP_LEN];

/// The latest time a four-digit year can show (9999-12-31T23:59:59.999Z).
const LAST_MILLIS: u64 = 253_402_300_799_999;

/// `time` as `2026-12-07T12:00:01.123Z` (UTC, milliseconds, truncated).
/// Times before 1970 show as the epoch, after 9999 as its last millisecond.
pub fn format_timestamp(time: SystemTime) -> Stamp {
    let millis = time
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis().min(u128::from(LAST_MILLIS)) as u64)
        .unwrap_or(0);
    let (seconds, millis) = (millis / 1000, millis % 1000);
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut stamp = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for index in (at..at + width).rev() {
            stamp[index] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year as u64);
    put(5, 2, u64::from(month));
    put(8, 2, u64::from(day));
    put(11, 2, second_of_day / 3600);
    put(14, 2, second_of_day / 60 % 60);
    put(17, 2, second_of_day % 60);
    put(20, 3, millis);
    stamp
}

/// Splits a log file line into its time and its text; `None` when it does
/// not start with a valid timestamp and a space (a line written by a
/// version without timestamps).
pub fn parse_timestamp(line: &[u8]) -> Option<(SystemTime, &[u8])> {
    if line.len() <= STAMP_LEN || line[STAMP_LEN] != b' ' {
        return None;
    }
    let stamp = &line[..STAMP_LEN];
    for (index, byte) in stamp.iter().enumerate() {
        let expected = match index {
            4 | 7 => b'-',
            10 => b'T',
            13 | 16 => b':',
            19 => b'.',
            23 => b'Z',
            _ => continue,
        };
        if *byte != expected {
            return None;
        }
    }
    let number = |at: usize, width: usize| -> Option<u64> {
        stamp[at..at + width].iter().try_fold(0u64, |sum, byte| {
            byte.is_ascii_digit()
                .then(|| sum * 10 + u64::from(byte - b'0'))
        })
    };
    let year = number(0, 4)?;
    let month = number(5, 2)?;
    let day = number(8, 2)?;
    let (hour, minute, second, millis) = (
        number(11, 2)?,
        number(14, 2)?,
        number(17, 2)?,
        number(20, 3)?,
    );
    if year < 1970
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year as i64, month as u32, day as u32) as u64;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    let time = UNIX_EPOCH + Duration::from_millis(seconds * 1000 + millis);
    Some((time, &line[STAMP_LEN + 1..]))
}

/// Days of `month` (1-12) in `year`, Gregorian leap years.
fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month, day) of a day counted from 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// ANSI colours for prefixes, chosen by a hash of the name.
const COLORS: [u8; 6] = [36, 33, 32, 35, 34, 31];

/// `name | ` padded to the console's width, coloured by a hash of the name
/// (so an agent keeps its colour across runs) when colour is on.
fn prefix(name: &str, console: &Console) -> String {
    let padded = format!("{name:<width$} | ", width = console.width);
    if console.color {
        let hash = name.bytes().fold(0usize, |sum, byte| {
            sum.wrapping_mul(31).wrapping_add(byte as usize)
        });
        format!("\x1b[{}m{padded}\x1b[0m", COLORS[hash % COLORS.len()])
    } else {
        padded
    }
}

/// The last non-empty line of each stream of one run, so an exit can say
/// what the agent last said (`exited with code 1: No module named 'x'`).
#[derive(Debug, Default)]
pub struct Tail {
    /// The last non-empty line of stdout (trimmed, at most [`Tail::MAX`] bytes).
    stdout: String,
    /// The last non-empty line of stderr (same rules).
    stderr: String,
}

impl Tail {
    /// At most this many bytes of a line are kept.
    const MAX: usize = 300;

    /// Remembers `line` (trimmed, at most [`Tail::MAX`] bytes) as the last
    /// of its stream; blank lines are not last words.
    fn push(&mut self, stderr: bool, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let kept = if stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        kept.clear();
        let mut end = text.len().min(Self::MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        kept.push_str(&text[..end]);
    }

    /// The last stderr line, else the last stdout line.
    pub fn last(&self) -> Option<String> {
        [&self.stderr, &self.stdout]
            .into_iter()
            .find(|line| !line.is_empty())
            .cloned()
    }
}

/// Reads both streams until they close, writing every line to the log file
/// and the console queue, and keeping the last line of each in `tail`.
/// Returns when both reached end of file.
pub(super) fn pump(
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    spec: &SpawnSpec,
    tail: std::sync::Arc<std::sync::Mutex<Tail>>,
) -> impl std::future::Future<Output = ()> + use<> {
    let log = spec.log.clone();
    let console = spec
        .console
        .as_ref()
        .map(|console| prefix(&spec.name, console));
    async move {
        // Opened here, when the task first runs, not when it is made: the
        // spawner starts every child already asked for before it polls
        // their pumps, so creating log files (about a millisecond each on
        // ext4 after many deletions) never delays the next spawn.
        let mut file = log.map(open_log);
        let mut out = stdout.and_then(LineReader::new);
        let mut err = stderr.and_then(LineReader::new);
        // The console copy of one read, handed to the console queue whole:
        // never a write to the console here (see `super::console`).
        let mut batch: Vec<u8> = Vec::new();
        let mut batch_lines = 0u64;
        loop {
            let (reader, is_stderr) = tokio::select! {
                Ok(()) = readable(&out), if out.is_some() => (&mut out, false),
                Ok(()) = readable(&err), if err.is_some() => (&mut err, true),
                else => break,
            };
            // Every line of one read gets the time of that read.
            let stamp = format_timestamp(SystemTime::now());
            let mut last: Option<Vec<u8>> = None;
            if let Some(lines) = reader
                && !lines.read(&mut |line| {
                    if let Some(file) = &mut file {
                        write_line(file, &stamp, line);
                    }
                    if let Some(prefix) = &console {
                        batch.extend_from_slice(prefix.as_bytes());
                        batch.extend_from_slice(line);
                        batch.push(b'\n');
                        batch_lines += 1;
                    }
                    if !line.is_empty() {
                        let kept = last.get_or_insert_with(Vec::new);
                        kept.clear();
                        kept.extend_from_slice(line);
                    }
                })
            {
                *reader = None;
            }
            if let Some(line) = last
                && let Ok(mut tail) = tail.lock()
            {
                tail.push(is_stderr, &line);
            }
            if !batch.is_empty() {
                super::console::sink().push(std::mem::take(&mut batch), batch_lines);
                batch_lines = 0;
            }
        }
    }
}

/// A line longer than this is cut: what has come is written as one line.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// How much one read takes from a pipe.
const READ_BYTES: usize = 64 * 1024;

thread_local! {
    /// Reads land here; one buffer per thread rather than one per stream, so
    /// an idle agent's output costs no memory.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_BYTES]);
}

/// Splits one output pipe into lines. Holds only the unfinished end of a
/// line between reads.
struct LineReader {
    /// The read end of the child's stdout or stderr, non-blocking.
    pipe: pipe::Receiver,
    /// Bytes read after the last newline, waiting for the rest of their line.
    partial: Vec<u8>,
}

impl LineReader {
    /// `None` when the stream cannot be watched (it is then not read, as if closed).
    fn new(fd: OwnedFd) -> Option<LineReader> {
        let pipe = pipe::Receiver::from_owned_fd(fd);
        match pipe {
            Ok(pipe) => Some(LineReader {
                pipe,
                partial: Vec::new(),
            }),
            Err(error) => {
                tracing::warn!(%error, "cannot read agent output");
                None
            }
        }
    }

    /// Reads what is there and hands every complete line to `write`; false
    /// at end of file (or on a read error), after the last unfinished line.
    fn read(&mut self, write: &mut impl FnMut(&[u8])) -> bool {
        SCRATCH.with_borrow_mut(|buffer| match self.pipe.try_read(buffer) {
            Ok(0) => {
                self.finish(write);
                false
            }
            Ok(count) => {
                self.split(&buffer[..count], write);
                true
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => true,
            Err(_) => {
                self.finish(write);
                false
            }
        })
    }

    /// Hands every line completed by `bytes` to `write` (without its
    /// newline) and keeps the unfinished rest for the next read.
    fn split(&mut self, mut bytes: &[u8], write: &mut impl FnMut(&[u8])) {
        while let Some(end) = bytes.iter().position(|byte| *byte == b'\n') {
            if self.partial.is_empty() {
                write(&bytes[..end]);
            } else {
                self.partial.extend_from_slice(&bytes[..end]);
                write(&self.partial);
                self.release();
            }
            bytes = &bytes[end + 1..];
        }
        self.partial.extend_from_slice(bytes);
        if self.partial.len() >= MAX_LINE_BYTES {
            write(&self.partial);
            self.release();
        }
    }

    /// At end of file: the unfinished last line counts as a line.
    fn finish(&mut self, write: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            write(&self.partial);
        }
        self.release();
    }

    /// Empties the unfinished line, giving a large buffer back.
    fn release(&mut self) {
        if self.partial.capacity() > 4096 {
            self.partial = Vec::new();
        } else {
            self.partial.clear();
        }
    }
}

/// Waits until `reader`'s pipe has something (data or end of file).
async fn readable(reader: &Option<LineReader>) -> std::io::Result<()> {
    match reader {
        Some(reader) => reader.pipe.readable().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[tokio::test]
    async fn lines_are_split_across_reads_and_the_last_one_is_kept() {
        let (mut sender, receiver) = pipe::pipe().unwrap();
        let mut reader = LineReader {
            pipe: receiver,
            partial: Vec::new(),
        };
        let mut lines: Vec<String> = Vec::new();
        let mut collect = |line: &[u8]| lines.push(String::from_utf8_lossy(line).into_owned());
        use tokio::io::AsyncWriteExt;
        for chunk in ["one\ntw", "o\n", "\nthr", "ee"] {
            sender.write_all(chunk.as_bytes()).await.unwrap();
            reader.pipe.readable().await.unwrap();
            assert!(reader.read(&mut collect));
        }
        drop(sender);
        reader.pipe.readable().await.unwrap();
        assert!(!reader.read(&mut collect), "end of file");
        assert_eq!(lines, ["one", "two", "", "three"]);
    }

    #[tokio::test]
    async fn an_endless_line_is_cut() {
        let (_sender, receiver) = pipe::pipe().unwrap();
        let mut reader = LineReader {
            pipe: receiver,
            partial: Vec::new(),
        };
        let mut lengths = Vec::new();
        let chunk = vec![b'x'; READ_BYTES];
        for _ in 0..(MAX_LINE_BYTES / READ_BYTES + 1) {
            reader.split(&chunk, &mut |line: &[u8]| lengths.push(line.len()));
        }
        assert_eq!(lengths, [MAX_LINE_BYTES]);
        assert_eq!(reader.partial.len(), READ_BYTES);
    }

    fn at(seconds: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(seconds * 1000 + millis)
    }

    fn formatted(time: SystemTime) -> String {
        String::from_utf8(format_timestamp(time).to_vec()).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(formatted(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            formatted(at(1_796_644_801, 123)),
            "2026-12-07T12:00:01.123Z"
        );
        // Leap days: 2024 (divisible by 4), 2000 (by 400); 2100 has none.
        assert_eq!(
            formatted(at(1_709_251_199, 999)),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(formatted(at(951_782_400, 0)), "2000-02-29T00:00:00.000Z");
        assert_eq!(formatted(at(4_107_456_000, 7)), "2100-02-28T00:00:00.007Z");
        assert_eq!(formatted(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000Z");
        // Sub-millisecond parts are cut, not rounded.
        let almost = UNIX_EPOCH + Duration::from_nanos(1_999_999);
        assert_eq!(formatted(almost), "1970-01-01T00:00:00.001Z");
        // Out of range: clamped, never a panic or a five-digit year.
        assert_eq!(
            formatted(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            formatted(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn timestamps_parse_back_and_other_lines_do_not() {
        for time in [
            UNIX_EPOCH,
            at(1_709_251_199, 999),
            at(951_782_400, 1),
            at(4_107_542_400, 500),
            at(1_796_644_801, 123),
        ] {
            let mut line = format_timestamp(time).to_vec();
            line.extend_from_slice(b" hello world");
            assert_eq!(parse_timestamp(&line), Some((time, &b"hello world"[..])));
        }
        let empty = b"2026-12-07T12:00:01.123Z ";
        assert_eq!(
            parse_timestamp(empty),
            Some((at(1_796_644_801, 123), &b""[..]))
        );
        for line in [
            &b"hello"[..],
            b"",
            b"2026-12-07T12:00:01.123Z",
            b"2026-12-07T12:00:01.123Zhello",
            b"2026-12-07 12:00:01.123Z hello",
            b"2026-13-07T12:00:01.123Z hello",
            b"2023-02-29T12:00:01.123Z hello",
            b"2026-12-07T24:00:01.123Z hello",
            b"2026-12-07T12:00:01.12xZ hello",
            b"1969-12-31T23:59:59.999Z hello",
        ] {
            assert_eq!(
                parse_timestamp(line),
                None,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        for days in 0..146_097 * 4 {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
            assert!(u64::from(day) <= days_in_month(year as u64, u64::from(month)));
        }
    }

    #[test]
    fn file_names_give_agent_and_rotation() {
        let path = Path::new("/run/logs/api.log");
        assert_eq!(rotated_path(path, 0), path);
        assert_eq!(rotated_path(path, 3), Path::new("/run/logs/api.log.3"));
        assert_eq!(parse_file_name("api.log"), Some(("api", 0)));
        assert_eq!(parse_file_name("api.log.2"), Some(("api", 2)));
        assert_eq!(parse_file_name("v1.2.log.10"), Some(("v1.2", 10)));
        assert_eq!(parse_file_name("a.log.log"), Some(("a.log", 0)));
        for name in [
            ".log",
            ".log.1",
            "api.txt",
            "api.log.",
            "api.log.x",
            "api.1",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn prefixes_line_up() {
        let console = Console {
            width: 5,
            color: false,
        };
        assert_eq!(prefix("db", &console), "db    | ");
    }
}
