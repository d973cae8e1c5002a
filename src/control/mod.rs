//! The control plane: how another process (the `status`, `start`, `stop`,
//! `restart`, `down`, `reload` and `logs` commands, or a script) reaches a
//! running supervisor, plus hot reload and the metrics listener.
//!
//! Layout: [`rundir`] (the run directory, its 0700 mode and the one-supervisor
//! lock on `supervisor.pid`), [`protocol`] (line-delimited JSON requests and
//! responses, documented in `docs/protocol.md`), [`server`] (the socket task:
//! requests in, [`crate::supervisor::Command`]s out), [`client`] (blocking,
//! with timeouts, for the CLI), [`reload`] (loading new manifests and
//! watching the files), [`metrics`] (`/metrics` and `/health` over HTTP).
//!
//! Owns no agent state: everything it shows comes from the supervisor's
//! status channel, everything it changes goes through a
//! [`crate::supervisor::SupervisorHandle`].

pub mod client;
pub mod metrics;
pub mod protocol;
pub mod reload;
pub mod rundir;
pub mod server;

use std::path::PathBuf;

pub use client::Client;
pub use protocol::{AgentView, Request, Response, StatusView};
pub use rundir::{RunDir, RunDirLock};

/// What can go wrong on the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No `control.sock` to connect to, or nobody listening on it.
    #[error("no supervisor is running for run directory {}", run_dir.display())]
    NotRunning {
        /// The run directory that was looked in.
        run_dir: PathBuf,
    },
    /// `up` found the run directory's lock held by another supervisor.
    #[error(
        "a supervisor is already running for run directory {} (pid {pid}); stop it with `supervisor down --run-dir {}`",
        run_dir.display(),
        run_dir.display()
    )]
    AlreadyRunning {
        /// The run directory whose lock is held.
        run_dir: PathBuf,
        /// The holder's pid as read from `supervisor.pid`, or `unknown`.
        pid: String,
    },
    /// A file or socket of the run directory could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or socket.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A run-directory file that is not safe to use (a symbolic link,
    /// owned by another user, writable by others).
    #[error("refusing {}: it {reason}", path.display())]
    Untrusted {
        /// The file refused.
        path: PathBuf,
        /// Why, completing "it ...", e.g. `is a symbolic link (to ...); remove it`.
        reason: String,
    },
    /// The control socket belongs to, or is served by, a user who is
    /// neither the caller nor root.
    #[error(
        "refusing to talk to {}: it is served by {peer}, not by you or root; \
         another user may have replaced the supervisor's socket",
        path.display()
    )]
    ForeignPeer {
        /// The control socket.
        path: PathBuf,
        /// Who: the socket file's owner, or the serving process and its user.
        peer: String,
    },
    /// No response line within this long.
    #[error("the supervisor did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The response was not a valid [`Response`] line (e.g. a supervisor
    /// of another version).
    #[error("bad answer from the supervisor: {0}")]
    Protocol(String),
}
