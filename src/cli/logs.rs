//! `supervisor logs NAME [-f] [-n N]`: print the end of an agent's log file
//! (`<run-dir>/logs/<agent>.log`) and, with `-f`, follow it (across
//! rotation) until interrupted. Asks the supervisor first, so an unknown
//! agent or a supervisor that is not running is reported clearly.
//!
//! Owns reading the files; writing them is `crate::process::log`'s.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::Exit;
use super::remote::{RunDirArgs, status};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent whose log to show.
    #[arg(value_name = "NAME")]
    pub agent: String,
    #[command(flatten)]
    pub target: RunDirArgs,
    /// Keep printing new lines as they are written.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many lines from the end to print first.
    #[arg(short = 'n', long = "lines", default_value_t = 50, value_name = "N")]
    pub lines: usize,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let run_dir = args.target.run_dir();
    let view = match status(&run_dir)? {
        Ok(view) => view,
        Err(exit) => return Ok(exit),
    };
    if view.agent(&args.agent).is_none() {
        let names: Vec<&str> = view
            .agents
            .iter()
            .map(|agent| agent.name.as_str())
            .collect();
        eprintln!(
            "error: no agent `{}` (agents: {})",
            args.agent,
            names.join(", ")
        );
        return Ok(Exit::Usage);
    }
    let path = run_dir.agent_log(&args.agent);
    let mut out = std::io::stdout().lock();
    let mut offset = match std::fs::read(&path) {
        Ok(bytes) => {
            out.write_all(tail(&bytes, args.lines))?;
            out.flush()?;
            bytes.len() as u64
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    if !args.follow {
        return Ok(Exit::Ok);
    }
    let mut current = inode(&path);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = inode(&path);
        let size = std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);
        if now != current || size < offset {
            // Rotated (a new file) or truncated: start from its beginning.
            current = now;
            offset = 0;
        }
        if size > offset {
            let mut file = std::fs::File::open(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            file.seek(SeekFrom::Start(offset))?;
            let mut chunk = Vec::new();
            file.take(size - offset).read_to_end(&mut chunk)?;
            offset += chunk.len() as u64;
            out.write_all(&chunk)?;
            out.flush()?;
        }
    }
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|meta| meta.ino())
}

/// The last `lines` lines of `bytes`.
fn tail(bytes: &[u8], lines: usize) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut start = 0;
    let mut seen = 0;
    for (index, byte) in body.iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == lines {
                start = index + 1;
                break;
            }
        }
    }
    if lines == 0 {
        return &[];
    }
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc\n", 5), b"a\nb\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\n", 0), b"");
    }
}
