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
    #[error("no supervisor is running for run directory {}", run_dir.display())]
    NotRunning { run_dir: PathBuf },
    #[error(
        "a supervisor is already running for run directory {} (pid {pid}); stop it with `supervisor down --run-dir {}`",
        run_dir.display(),
        run_dir.display()
    )]
    AlreadyRunning { run_dir: PathBuf, pid: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing {}: it {reason}", path.display())]
    Untrusted { path: PathBuf, reason: String },
    #[error(
        "refusing to talk to {}: it is served by {peer}, not by you or root; \
         another user may have replaced the supervisor's socket",
        path.display()
    )]
    ForeignPeer { path: PathBuf, peer: String },
    #[error("the supervisor did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("bad answer from the supervisor: {0}")]
    Protocol(String),
}
