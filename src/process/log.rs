//! Agent output: each line of a child's stdout/stderr goes to
//! `<run-dir>/logs/<agent>.log` (rotated by size, bounded total) and, in the
//! foreground, to the console with a `name |` prefix like docker compose.
//!
//! Owns the log files while a run is alive (one pump task per run owns its
//! file). Does not own where the run directory is (`cli::up` decides).

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, BufReader};
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
        let mut out = stdout.map(|stream| BufReader::new(stream).split(b'\n'));
        let mut err = stderr.map(|stream| BufReader::new(stream).split(b'\n'));
        loop {
            let line = tokio::select! {
                line = next(&mut out), if out.is_some() => line.or_else(|| { out = None; None }),
                line = next(&mut err), if err.is_some() => line.or_else(|| { err = None; None }),
                else => break,
            };
            let Some(line) = line else { continue };
            if let Some(file) = &mut file {
                file.write_line(&line);
            }
            if let Some(prefix) = &console {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(prefix.as_bytes());
                let _ = stdout.write_all(&line);
                let _ = stdout.write_all(b"\n");
            }
        }
    }
}

/// The next line of a stream, or `None` at end of file or on a read error.
async fn next<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut Option<tokio::io::Split<R>>,
) -> Option<Vec<u8>> {
    match lines {
        Some(lines) => lines.next_segment().await.ok().flatten(),
        None => None,
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

    #[test]
    fn prefixes_line_up() {
        let console = Console {
            width: 5,
            color: false,
        };
        assert_eq!(prefix("db", &console), "db    | ");
    }
}
