//! The run directory (`.supervisor/` beside the first manifest by default):
//! `control.sock` (mode 0600), `supervisor.pid` (the lock), `supervisor.log`
//! (with `up --detach`) and `logs/<agent>.log`. Created with mode 0700 so only
//! the owning user can reach the socket or read the logs.
//!
//! Owns the one-supervisor-per-directory rule: [`RunDirLock`] holds an
//! exclusive `flock` on `supervisor.pid` for the supervisor's lifetime, so a
//! crashed supervisor never leaves a stale lock behind; `up` takes it
//! before anything is spawned. Also owns [`SocketAddress`]: a control
//! socket path that fits `sun_path` whatever the run directory's length.
//!
//! Owns the trust rule too (like ssh's `StrictModes`): [`RunDir::create`]
//! refuses a run directory (or its `logs/`) that is a symbolic link, is not
//! owned by the invoking user, or is writable by group or others, and one
//! holding a symbolic link where the supervisor writes. The files themselves
//! are opened without following links ([`crate::files`]).
//!
//! Does not serve the socket ([`super::server`]) or write the agent logs
//! (`crate::process::log`); it only says where they are.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::ControlError;

/// The files of one run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// The directory, absolute (see [`RunDir::new`]).
    pub path: PathBuf,
}

impl RunDir {
    /// The path is made absolute: agents get endpoints under it
    /// (`ipc://<run-dir>/agents.sock`) and may run in another directory.
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        let path = path.into();
        RunDir {
            path: std::path::absolute(&path).unwrap_or(path),
        }
    }

    /// `control.sock`: the control plane's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.path.join("control.sock")
    }

    /// A name for [`RunDir::socket`] that fits a Unix socket address, for
    /// `bind` and `connect`; see [`SocketAddress`].
    pub fn socket_address(&self) -> Result<SocketAddress, ControlError> {
        SocketAddress::new(self.socket())
    }

    /// `supervisor.pid`: the lock file (see [`RunDirLock`]), holding the
    /// running supervisor's pid.
    pub fn pid_file(&self) -> PathBuf {
        self.path.join("supervisor.pid")
    }

    /// `supervisor.log`: the supervisor's own log lines.
    pub fn supervisor_log(&self) -> PathBuf {
        self.path.join("supervisor.log")
    }

    /// `logs/`: one rotated log file per agent.
    pub fn logs(&self) -> PathBuf {
        self.path.join("logs")
    }

    /// `logs/<agent>.log`: the agent's stdout and stderr. `agent` is not
    /// checked here; validated agent names contain no `/`.
    pub fn agent_log(&self, agent: &str) -> PathBuf {
        self.logs().join(format!("{agent}.log"))
    }

    /// Creates the directory (0700) and `logs/`, after checking that an
    /// existing one can be trusted: see [`check_trusted`].
    pub fn create(&self) -> Result<(), ControlError> {
        let io = |source| ControlError::Io {
            path: self.path.clone(),
            source,
        };
        check_trusted(&self.path)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(io)?;
        check_trusted(&self.path)?;
        // An existing directory keeps its mode otherwise.
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        check_trusted(&self.logs())?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.logs())
            .map_err(|source| ControlError::Io {
                path: self.logs(),
                source,
            })?;
        check_trusted(&self.logs())?;
        self.refuse_links()
    }

    /// Every file the supervisor writes here must not be a symbolic link:
    /// one planted there would redirect the supervisor's writes.
    fn refuse_links(&self) -> Result<(), ControlError> {
        let mut paths: Vec<PathBuf> = [
            "supervisor.pid",
            "supervisor.log",
            "control.sock",
            "errors.jsonl",
            "errors.sock",
            "agents.sock",
        ]
        .iter()
        .map(|name| self.path.join(name))
        .collect();
        if let Ok(entries) = std::fs::read_dir(self.logs()) {
            paths.extend(entries.flatten().map(|entry| entry.path()));
        }
        for path in paths {
            if let Ok(meta) = std::fs::symlink_metadata(&path)
                && meta.file_type().is_symlink()
            {
                let target = std::fs::read_link(&path)
                    .map(|target| target.display().to_string())
                    .unwrap_or_default();
                return Err(ControlError::Untrusted {
                    path,
                    reason: format!("is a symbolic link (to {target}); remove it"),
                });
            }
        }
        Ok(())
    }

    /// The pid written in `supervisor.pid`, if any.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes
/// with the closing NUL).
const SUN_PATH_MAX: usize = 107;

/// A socket path usable with `bind` and `connect` whatever the length of
/// the run directory's path: the path itself when it fits `sun_path`, else
/// `/proc/self/fd/<n>/control.sock` through a handle on its directory (held
/// by this value: keep it alive until the `bind` or `connect` returned).
/// The socket file is created in the run directory either way.
#[derive(Debug)]
pub struct SocketAddress {
    /// The path to pass to `bind` or `connect`.
    pub path: PathBuf,
    /// The open directory `path` goes through, when it is the long form.
    _directory: Option<std::fs::File>,
}

impl SocketAddress {
    /// The address of `socket`.
    ///
    /// # Errors
    ///
    /// [`ControlError::Io`] when the path is too long and its directory
    /// cannot be opened.
    pub fn new(socket: PathBuf) -> Result<SocketAddress, ControlError> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        if socket.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(SocketAddress {
                path: socket,
                _directory: None,
            });
        }
        let (Some(directory), Some(name)) = (socket.parent(), socket.file_name()) else {
            return Ok(SocketAddress {
                path: socket,
                _directory: None,
            });
        };
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(directory)
            .map_err(|source| ControlError::Io {
                path: directory.to_path_buf(),
                source,
            })?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd())).join(name);
        Ok(SocketAddress {
            path,
            _directory: Some(handle),
        })
    }
}

/// Held by the running supervisor; dropping it removes the socket and the
/// pid file and releases the lock.
#[derive(Debug)]
pub struct RunDirLock {
    /// The directory locked.
    run_dir: RunDir,
    /// The locked `supervisor.pid`; the kernel releases the lock when the
    /// process ends, however it ends.
    _file: Flock<std::fs::File>,
}

impl RunDirLock {
    /// Takes the lock and writes this process's pid, or says who holds it.
    pub fn acquire(run_dir: &RunDir) -> Result<RunDirLock, ControlError> {
        // A supervisor that is ending removes `supervisor.pid` while still
        // holding its lock: whoever locked that removed file must try again
        // on the new one, or two supervisors would each hold "the" lock.
        loop {
            let file = RunDirLock::lock_file(run_dir)?;
            let same_file = match (std::fs::metadata(run_dir.pid_file()), file.metadata()) {
                (Ok(named), Ok(held)) => named.ino() == held.ino() && named.dev() == held.dev(),
                _ => false,
            };
            if !same_file {
                continue;
            }
            let mut locked = file;
            let io = |source| ControlError::Io {
                path: run_dir.pid_file(),
                source,
            };
            locked.set_len(0).map_err(io)?;
            writeln!(*locked, "{}", std::process::id()).map_err(io)?;
            return Ok(RunDirLock {
                run_dir: run_dir.clone(),
                _file: locked,
            });
        }
    }

    /// Opens `supervisor.pid` and locks it, or says who holds it.
    fn lock_file(run_dir: &RunDir) -> Result<Flock<std::fs::File>, ControlError> {
        let path = run_dir.pid_file();
        let io = |source| ControlError::Io {
            path: path.clone(),
            source,
        };
        let file = crate::files::open_read_write(&path).map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => Ok(locked),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(ControlError::AlreadyRunning {
                run_dir: run_dir.path.clone(),
                pid: run_dir
                    .pid()
                    .map(|pid| pid.to_string())
                    .unwrap_or_else(|| "unknown".into()),
            }),
            Err((_, errno)) => Err(io(std::io::Error::from(errno))),
        }
    }

    /// The directory this lock holds.
    pub fn run_dir(&self) -> &RunDir {
        &self.run_dir
    }
}

/// Removes `control.sock` and `supervisor.pid` (errors ignored: they may be
/// gone already); the lock itself goes with the file handle.
impl Drop for RunDirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.run_dir.socket());
        let _ = std::fs::remove_file(self.run_dir.pid_file());
    }
}

/// Refuses `path` unless it is missing, or a real directory (not a link)
/// owned by the invoking user and not writable by group or others.
pub fn check_trusted(path: &Path) -> Result<(), ControlError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ControlError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let refuse = |reason: String| {
        Err(ControlError::Untrusted {
            path: path.to_path_buf(),
            reason,
        })
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symbolic link; name the real directory".into());
    }
    if !meta.is_dir() {
        return refuse("is not a directory".into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return refuse(format!(
            "is owned by {}, not by you ({}); use a run directory of your own",
            user_name(meta.uid()),
            user_name(me)
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "is writable by group or others (mode {:o}); `chmod 700` it",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// `alice (uid 1000)`, or `uid 1000` for a uid without a name.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// `.supervisor/` beside `first` (the first manifest), or in the current
/// directory without one.
pub fn default_run_dir(first: Option<&Path>) -> PathBuf {
    let parent = first
        .and_then(Path::parent)
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(".supervisor")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_run_dir_and_the_directory_is_private() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let run_dir = RunDir::new(scratch.path().join("run"));
        run_dir.create().expect("create");
        let mode = std::fs::metadata(&run_dir.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let lock = RunDirLock::acquire(&run_dir).expect("first lock");
        assert_eq!(run_dir.pid(), Some(std::process::id()));
        let error = RunDirLock::acquire(&run_dir).expect_err("second lock");
        assert!(
            error.to_string().contains("already running")
                && error.to_string().contains(&std::process::id().to_string()),
            "{error}"
        );
        drop(lock);
        RunDirLock::acquire(&run_dir).expect("lock again after release");
    }

    #[test]
    fn untrusted_run_directories_are_refused() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let open = scratch.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = RunDir::new(&open).create().expect_err("world-writable");
        assert!(
            error.to_string().contains("writable by group or others"),
            "{error}"
        );
        let link = scratch.path().join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let error = RunDir::new(&link).create().expect_err("a link");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        let planted = RunDir::new(scratch.path().join("planted"));
        planted.create().expect("create");
        std::os::unix::fs::symlink("/etc/passwd", planted.agent_log("a")).unwrap();
        let error = planted.create().expect_err("a planted link");
        assert!(error.to_string().contains("a.log"), "{error}");
    }

    #[test]
    fn a_socket_in_a_run_dir_of_any_length_can_be_bound_and_reached() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let long = scratch.path().join("d".repeat(150)).join("e".repeat(150));
        let run_dir = RunDir::new(&long);
        run_dir.create().expect("create");
        let address = run_dir.socket_address().expect("address");
        assert!(address.path.as_os_str().len() <= SUN_PATH_MAX);
        let listener = std::os::unix::net::UnixListener::bind(&address.path).expect("bind");
        drop(address);
        assert!(run_dir.socket().exists());
        let address = run_dir.socket_address().expect("address");
        std::os::unix::net::UnixStream::connect(&address.path).expect("connect");
        listener.accept().expect("accept");
    }
}
