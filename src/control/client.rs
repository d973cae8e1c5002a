//! The blocking client of the control socket, for the CLI: connect (a
//! missing socket or a refused connection means no supervisor is running),
//! send one request line, read one response line, all under timeouts so a
//! command never hangs.
//!
//! Before sending anything it checks who serves the socket: the socket file
//! must be owned by the invoking user (or root) and the listening process
//! (`SO_PEERCRED`) must run as the invoking user or root, so a `down` never
//! reaches a listener another user put in the supervisor's place.
//!
//! Owns one connection; no retries, no state beyond it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::protocol::{Request, Response};
use super::{ControlError, RunDir};

/// One connection to a supervisor's control socket.
#[derive(Debug)]
pub struct Client {
    /// Reads response lines.
    reader: BufReader<UnixStream>,
    /// Writes request lines (a clone of the same socket).
    writer: UnixStream,
    /// For error messages.
    run_dir: RunDir,
}

impl Client {
    /// Connects to `<run-dir>/control.sock`. A Unix socket connect does not
    /// wait for the server: it succeeds, or fails at once.
    ///
    /// # Errors
    ///
    /// [`ControlError::NotRunning`] when there is no socket or nobody listens
    /// on it; [`ControlError::ForeignPeer`] when the socket file or the process
    /// serving it belongs to another user (not root); [`ControlError::Io`]
    /// for any other failure, naming the socket.
    pub fn connect(run_dir: &RunDir) -> Result<Client, ControlError> {
        let path = run_dir.socket();
        let address = run_dir.socket_address().map_err(|error| match error {
            ControlError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ControlError::NotRunning {
                    run_dir: run_dir.path.clone(),
                }
            }
            other => other,
        })?;
        let stream = UnixStream::connect(&address.path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ControlError::NotRunning {
                    run_dir: run_dir.path.clone(),
                }
            }
            _ => ControlError::Io {
                path: path.clone(),
                source,
            },
        })?;
        check_peer(&path, &stream)?;
        let writer = stream.try_clone().map_err(|source| ControlError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Client {
            reader: BufReader::new(stream),
            writer,
            run_dir: run_dir.clone(),
        })
    }

    /// Sends `request` as one line and waits at most `timeout` (at least 1 ms)
    /// for the answer line; the timeout bounds the write and the read each.
    ///
    /// # Errors
    ///
    /// [`ControlError::Timeout`] when the supervisor does not answer in time;
    /// [`ControlError::NotRunning`] when it closed the connection (it is
    /// ending, or it closed an idle connection); [`ControlError::Protocol`] for
    /// an answer that is not a [`Response`]; [`ControlError::Io`] otherwise.
    /// After a timeout the late answer may still arrive on this connection
    /// and would be read as the answer to the next request: reconnect before
    /// sending another (`top` does).
    pub fn request(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ControlError> {
        let run_dir = self.run_dir.clone();
        let io = |source| io_error(&run_dir, timeout, source);
        let timeout = timeout.max(Duration::from_millis(1));
        self.writer.set_write_timeout(Some(timeout)).map_err(io)?;
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(io)?;
        let mut line = serde_json::to_vec(request)
            .map_err(|error| ControlError::Protocol(error.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(io)?;
        self.next_response(timeout)
    }

    /// Reads the next response without sending anything: the answers after
    /// the first to a `watch`. Waits at most `timeout`; fails as
    /// [`Client::request`] does.
    pub fn next_response(&mut self, timeout: Duration) -> Result<Response, ControlError> {
        let run_dir = self.run_dir.clone();
        let io = |source| io_error(&run_dir, timeout, source);
        let timeout = timeout.max(Duration::from_millis(1));
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(io)?;
        let mut answer = String::new();
        let count = self.reader.read_line(&mut answer).map_err(io)?;
        if count == 0 {
            // The supervisor closed the connection: it is ending.
            return Err(ControlError::NotRunning {
                run_dir: self.run_dir.path.clone(),
            });
        }
        serde_json::from_str(&answer).map_err(|error| ControlError::Protocol(error.to_string()))
    }
}

/// What a failed read or write on the socket means.
fn io_error(run_dir: &RunDir, timeout: Duration, source: std::io::Error) -> ControlError {
    match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ControlError::Timeout(timeout)
        }
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
            ControlError::NotRunning {
                run_dir: run_dir.path.clone(),
            }
        }
        _ => ControlError::Io {
            path: run_dir.socket(),
            source,
        },
    }
}

/// The socket file and the process listening on it belong to this user or root.
fn check_peer(path: &std::path::Path, stream: &UnixStream) -> Result<(), ControlError> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let trusted = |uid: u32| uid == me || uid == 0;
    let owner = std::fs::symlink_metadata(path)
        .map_err(|source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .uid();
    if !trusted(owner) {
        return Err(ControlError::ForeignPeer {
            path: path.to_path_buf(),
            peer: format!("a socket file owned by {}", super::rundir::user_name(owner)),
        });
    }
    let credentials =
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).map_err(
            |errno| ControlError::Io {
                path: path.to_path_buf(),
                source: errno.into(),
            },
        )?;
    let peer = credentials.uid();
    if !trusted(peer) {
        return Err(ControlError::ForeignPeer {
            path: path.to_path_buf(),
            peer: format!(
                "process {} running as {}",
                credentials.pid(),
                super::rundir::user_name(peer)
            ),
        });
    }
    Ok(())
}
