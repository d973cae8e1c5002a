//! The blocking client of the control socket, for the CLI: connect (a
//! missing socket or a refused connection means no supervisor is running),
//! send one request line, read one response line, all under timeouts so a
//! command never hangs.
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
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    run_dir: RunDir,
}

impl Client {
    /// Connects to `<run-dir>/control.sock`. A Unix socket connect does not
    /// wait for the server: it succeeds, or fails at once.
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

    /// Sends `request` and waits at most `timeout` for the answer.
    pub fn request(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ControlError> {
        let path = self.run_dir.socket();
        let io = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ControlError::Timeout(timeout)
            }
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                ControlError::NotRunning {
                    run_dir: self.run_dir.path.clone(),
                }
            }
            _ => ControlError::Io {
                path: path.clone(),
                source,
            },
        };
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
