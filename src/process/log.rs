//! Agent output: each line of a child's stdout/stderr goes to
//! `<run-dir>/logs/<agent>.log` (rotated by size, bounded total) and, in the
//! foreground, to the console with a `name |` prefix like docker compose.
//!
//! Owns the log files while a run is alive (one pump task per run owns its
//! file). Does not own where the run directory is (`cli::up` decides).

use std::io::Write;
use std::path::{Path, PathBuf};

use std::os::fd::OwnedFd;

use tokio::net::unix::pipe;
use tokio::process::{ChildStderr, ChildStdout};

use super::SpawnSpec;

/// A size-rotated log file: `agent.log`, then `agent.log.1` .. `agent.log.<keep>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    pub path: PathBuf,
    /// Rotate when the file would grow past this.
    pub max_bytes: u64,
    /// How many rotated files are kept; total size is at most `(keep + 1) * max_bytes`.
    pub keep: u32,
}

impl LogTarget {
    /// 10 MB per file, 3 rotated files.
    pub fn new(path: PathBuf) -> LogTarget {
        LogTarget {
            path,
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

/// How lines are echoed to the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// Names are padded to this width so the `|` columns line up.
    pub width: usize,
    /// Colour the prefix (only when stdout is a terminal).
    pub color: bool,
}

/// Writes lines to a log file, rotating it by size.
struct RotatingFile {
    target: LogTarget,
    file: Option<std::fs::File>,
    size: u64,
}

impl RotatingFile {
    fn open(target: LogTarget) -> RotatingFile {
        let mut rotating = RotatingFile {
            target,
            file: None,
            size: 0,
        };
        rotating.reopen();
        rotating
    }

    fn reopen(&mut self) {
        if let Some(parent) = self.target.path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.target.path);
        match file {
            Ok(file) => {
                self.size = file.metadata().map(|meta| meta.len()).unwrap_or(0);
                self.file = Some(file);
            }
            Err(error) => {
                tracing::warn!(path = %self.target.path.display(), %error, "cannot open agent log");
                self.file = None;
            }
        }
    }

    fn write_line(&mut self, line: &[u8]) {
        let length = line.len() as u64 + 1;
        if self.size > 0 && self.size + length > self.target.max_bytes {
            rotate(&self.target.path, self.target.keep);
            self.reopen();
        }
        if let Some(file) = &mut self.file
            && file
                .write_all(line)
                .and_then(|()| file.write_all(b"\n"))
                .is_ok()
        {
            self.size += length;
        }
    }
}

/// `x.log.(keep-1)` -> `x.log.keep`, ..., `x.log` -> `x.log.1`.
fn rotate(path: &Path, keep: u32) {
    let numbered = |index: u32| PathBuf::from(format!("{}.{index}", path.display()));
    if keep == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    for index in (1..keep).rev() {
        let _ = std::fs::rename(numbered(index), numbered(index + 1));
    }
    let _ = std::fs::rename(path, numbered(1));
}

/// ANSI colours for prefixes, chosen by a hash of the name.
const COLORS: [u8; 6] = [36, 33, 32, 35, 34, 31];

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

/// Reads both streams until they close, writing every line to the log file
/// and the console. Returns when both reached end of file.
pub(super) fn pump(
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    spec: &SpawnSpec,
) -> impl std::future::Future<Output = ()> + use<> {
    let mut file = spec.log.clone().map(RotatingFile::open);
    let console = spec
        .console
        .as_ref()
        .map(|console| prefix(&spec.name, console));
    async move {
        let mut out = stdout.and_then(|stream| LineReader::new(stream.into_owned_fd()));
        let mut err = stderr.and_then(|stream| LineReader::new(stream.into_owned_fd()));
        let mut write = |line: &[u8]| {
            if let Some(file) = &mut file {
                file.write_line(line);
            }
            if let Some(prefix) = &console {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(prefix.as_bytes());
                let _ = stdout.write_all(line);
                let _ = stdout.write_all(b"\n");
            }
        };
        loop {
            let reader = tokio::select! {
                Ok(()) = readable(&out), if out.is_some() => &mut out,
                Ok(()) = readable(&err), if err.is_some() => &mut err,
                else => break,
            };
            if let Some(lines) = reader
                && !lines.read(&mut write)
            {
                *reader = None;
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
    pipe: pipe::Receiver,
    partial: Vec<u8>,
}

impl LineReader {
    /// `None` when the stream cannot be watched (it is then not read, as if closed).
    fn new(fd: std::io::Result<OwnedFd>) -> Option<LineReader> {
        let pipe = fd.and_then(pipe::Receiver::from_owned_fd);
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

    #[test]
    fn rotation_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/a.log");
        let mut file = RotatingFile::open(LogTarget {
            path: path.clone(),
            max_bytes: 10,
            keep: 2,
        });
        for index in 0..10 {
            file.write_line(format!("line{index}").as_bytes());
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line9\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("logs/a.log.1")).unwrap(),
            "line8\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("logs/a.log.2")).unwrap(),
            "line7\n"
        );
        assert!(!dir.path().join("logs/a.log.3").exists());
    }

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

    #[test]
    fn prefixes_line_up() {
        let console = Console {
            width: 5,
            color: false,
        };
        assert_eq!(prefix("db", &console), "db    | ");
    }
}
