//! The files the supervisor writes in its run directory (`supervisor.pid`,
//! `supervisor.log`, `logs/<agent>.log`, `errors.jsonl`): how they are
//! opened and how they are rotated by size.
//!
//! Opening: relative to a handle on the parent directory, and neither the
//! directory nor the file is followed through a symbolic link (`O_NOFOLLOW`
//! on both), so a link planted in the run directory makes the open fail
//! instead of redirecting root's writes to a file of the planter's choice.
//! A file that is not a regular file, or that has other hard links, is
//! refused too (see `docs/security.md`).
//!
//! Rotation: `x.log` becomes `x.log.1`, `.1` becomes `.2` and so on, up to
//! `keep` old files ([`rotated_path`]); a [`RotatingFile`] rotates before a
//! write that would take the file past `max_bytes`. Agent logs
//! (`process::log`) and the error journal (`transport::error_bus`) share it.
//!
//! Owns the open flags and the rotation scheme. Does not own where the run
//! directory is or whether it is trusted (`control::rundir`), nor what is
//! written (each writer owns its format).

use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// Opens `path` for appending, creating it (mode 0600) if missing, without
/// following a symbolic link in its last two components.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    open_in_directory(path, OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT)
}

/// Opens `path` for reading and writing (not truncated), creating it (mode
/// 0600) if missing, without following a symbolic link.
pub fn open_read_write(path: &Path) -> std::io::Result<File> {
    open_in_directory(path, OFlag::O_RDWR | OFlag::O_CREAT)
}

/// Replaces `path` with `bytes`: written to a new file (`O_EXCL`) beside
/// it, then renamed over it, so a link at `path` is replaced, not followed.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".new-{}", std::process::id()));
    let temporary = PathBuf::from(name);
    let _ = std::fs::remove_file(&temporary);
    let mut file = open_in_directory(&temporary, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

fn open_in_directory(path: &Path, flags: OFlag) -> std::io::Result<File> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => (
            if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            },
            name,
        ),
        _ => return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
    };
    let directory = nix::fcntl::open(
        parent,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| refusal(parent, errno))?;
    let fd = openat(
        directory.as_fd(),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|errno| refusal(path, errno))?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file; refusing to write to it",
            path.display()
        )));
    }
    if meta.nlink() > 1 {
        return Err(std::io::Error::other(format!(
            "{} has {} hard links; refusing to write to it",
            path.display(),
            meta.nlink()
        )));
    }
    Ok(file)
}

/// `ELOOP` from `O_NOFOLLOW` means "a symbolic link": say so.
fn refusal(path: &Path, errno: nix::errno::Errno) -> std::io::Error {
    if errno == nix::errno::Errno::ELOOP {
        std::io::Error::other(format!(
            "{} is a symbolic link; refusing to follow it",
            path.display()
        ))
    } else {
        std::io::Error::from(errno)
    }
}

/// A size-rotated file: `agent.log`, then `agent.log.1` .. `agent.log.<keep>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// The live file; rotated copies get `.1`, `.2`, ... appended.
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

/// Appends to a file, rotating it by size. A file that cannot be opened
/// (again, after a rotation) is skipped, with one warning, and opening it
/// is tried again at most once a second; the writer never fails its caller.
#[derive(Debug)]
pub struct RotatingFile {
    /// The path and the rotation limits.
    target: LogTarget,
    /// Open for appending; `None` while opening fails.
    file: Option<File>,
    /// The file's size as far as this writer knows (what it found plus what
    /// it appended), checked against `max_bytes` before each append.
    size: u64,
    /// When opening last failed (for the retry interval and one warning).
    failed_at: Option<std::time::Instant>,
}

impl RotatingFile {
    /// Opens (creating) the file; the error says why it could not be.
    pub fn open(target: LogTarget) -> std::io::Result<RotatingFile> {
        let file = open_append(&target.path)?;
        let size = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        Ok(RotatingFile {
            target,
            file: Some(file),
            size,
            failed_at: None,
        })
    }

    /// A writer whose file could not be opened: writes are dropped until a
    /// rotation opens it again.
    pub fn unopened(target: LogTarget) -> RotatingFile {
        RotatingFile {
            target,
            file: None,
            size: 0,
            failed_at: Some(std::time::Instant::now()),
        }
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.target.path
    }

    /// Writes `parts` as one append (one `writev`: a reader following the
    /// file never sees half of it), rotating first if the file would grow
    /// past `max_bytes`.
    pub fn append<const N: usize>(&mut self, parts: [&[u8]; N]) -> std::io::Result<()> {
        let length = parts.iter().map(|part| part.len() as u64).sum::<u64>();
        let retry = self.file.is_none()
            && self
                .failed_at
                .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1));
        if (self.size > 0 && self.size + length > self.target.max_bytes) || retry {
            self.rotate();
        }
        let Some(file) = &mut self.file else {
            return Err(std::io::Error::other(format!(
                "{} is not open",
                self.target.path.display()
            )));
        };
        write_parts(file, &parts)?;
        self.size += length;
        Ok(())
    }

    fn rotate(&mut self) {
        if self.file.is_some() {
            self.file = None;
            rotate(&self.target.path, self.target.keep);
        }
        match open_append(&self.target.path) {
            Ok(file) => {
                self.size = file.metadata().map(|meta| meta.len()).unwrap_or(0);
                self.file = Some(file);
                self.failed_at = None;
            }
            Err(error) => {
                if self.failed_at.is_none() {
                    tracing::warn!(path = %self.target.path.display(), %error, "cannot open the file; its lines are dropped until it can be");
                }
                self.failed_at = Some(std::time::Instant::now());
            }
        }
    }
}

/// Writes `parts` with one `writev` (an append of a few hundred bytes to a
/// regular file is written whole); finishes piece by piece if it was not.
fn write_parts<const N: usize>(file: &mut File, parts: &[&[u8]; N]) -> std::io::Result<()> {
    let slices = parts.map(IoSlice::new);
    let written = loop {
        match file.write_vectored(&slices) {
            Ok(written) => break written,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    };
    let mut skip = written;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
        } else {
            file.write_all(&part[skip..])?;
            skip = 0;
        }
    }
    Ok(())
}

/// `x.log` for 0, else `x.log.<index>` (the index-th older file).
pub fn rotated_path(path: &Path, index: u32) -> PathBuf {
    if index == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// `x.log.(keep-1)` -> `x.log.keep`, ..., `x.log` -> `x.log.1`.
fn rotate(path: &Path, keep: u32) {
    if keep == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    for index in (1..keep).rev() {
        let _ = std::fs::rename(rotated_path(path, index), rotated_path(path, index + 1));
    }
    let _ = std::fs::rename(path, rotated_path(path, 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_links_and_hard_links_are_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let link = dir.path().join("a.log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let error = open_append(&link).expect_err("a symlink is refused");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        let hard = dir.path().join("b.log");
        std::fs::hard_link(&victim, &hard).unwrap();
        let error = open_append(&hard).expect_err("a hard link is refused");
        assert!(error.to_string().contains("hard links"), "{error}");
        // A linked parent directory is not followed either.
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("logs")).unwrap();
        assert!(open_append(&dir.path().join("logs/c.log")).is_err());
        assert!(!real.join("c.log").exists());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let mut file = open_append(&dir.path().join("new.log")).expect("a new file");
        file.write_all(b"x").unwrap();
        let replaced = dir.path().join("fabric.json");
        std::os::unix::fs::symlink(&victim, &replaced).unwrap();
        replace(&replaced, b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(&replaced).unwrap(), "{}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn rotation_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut file = RotatingFile::open(LogTarget {
            path: path.clone(),
            max_bytes: 6,
            keep: 2,
        })
        .unwrap();
        for index in 0..10 {
            file.append([format!("line{index}").as_bytes(), b"\n"])
                .unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line9\n");
        assert_eq!(
            std::fs::read_to_string(rotated_path(&path, 1)).unwrap(),
            "line8\n"
        );
        assert_eq!(
            std::fs::read_to_string(rotated_path(&path, 2)).unwrap(),
            "line7\n"
        );
        assert!(!rotated_path(&path, 3).exists());
    }
}
