//! One probe attempt: [`probe`] and its error type [`ProbeError`]; and
//! [`Prober`], which probes one target repeatedly and keeps what can be
//! reused between attempts (an HTTP connection).
//!
//! Owns the dispatch over [`Probe`] kinds, the TCP and exec probes, the
//! rule that every attempt is bounded by its timeout, and which local port a
//! probe reaches ([`local_port`]; whose listener that is, is checked by the
//! supervisor's readiness task). The HTTP client lives in
//! `http.rs` and the legacy ZMQ request in `legacy_zmq.rs`. Retrying and
//! scheduling belong to the caller.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::health::http::HttpClient;
use crate::manifest::Probe;

/// Why one probe attempt failed. Every variant names its target (`tcp
/// 127.0.0.1:7200`, the URL, the command, `zmq tcp://127.0.0.1:7211`).
///
/// The underlying cause is part of the message rather than a `source()`,
/// because a probe failure ends up as a single line (an agent's recorded
/// reason, a log field) and must be complete on its own.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing listens at the target (the connection was actively refused).
    #[error("{target}: connection refused")]
    Refused {
        /// What was probed: `tcp 127.0.0.1:7200`, a URL, a command, `zmq tcp://...`.
        target: String,
    },
    /// Any other I/O failure, with the step that failed.
    #[error("{target}: {action} failed: {error}")]
    Io {
        /// What was probed: `tcp 127.0.0.1:7200`, a URL, a command, `zmq tcp://...`.
        target: String,
        /// The step: `connect`, `write`, `read`, `spawn`, ...
        action: &'static str,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// No complete answer within the probe timeout.
    #[error("{target}: no answer within {after:?}")]
    Timeout {
        /// What was probed: `tcp 127.0.0.1:7200`, a URL, a command, `zmq tcp://...`.
        target: String,
        /// The probe timeout that ran out.
        after: Duration,
    },
    /// An HTTP answer outside 2xx.
    #[error("{url}: HTTP status {status}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The status code answered.
        status: u16,
    },
    /// An exec probe that exited unsuccessfully (non-zero or killed by a signal).
    #[error("{target}: {status}")]
    ExitStatus {
        /// What was probed: `tcp 127.0.0.1:7200`, a URL, a command, `zmq tcp://...`.
        target: String,
        /// How the command ended.
        status: ExitStatus,
    },
    /// The agent answered and said it is not healthy (legacy `degraded`,
    /// `error`, or `ready: false`).
    #[error("{target}: unhealthy (status {status:?}){}", colon_prefixed(.message))]
    Unhealthy {
        /// What was probed: `tcp 127.0.0.1:7200`, a URL, a command, `zmq tcp://...`.
        target: String,
        /// The status word the agent answered (`degraded`, `error`, ...).
        status: String,
        /// The agent's own explanation; empty when it gave none.
        message: String,
    },
    /// The agent answered something the protocol does not allow.
    #[error("{target}: bad reply: {reason}")]
    BadReply {
        /// What was probed: `tcp 127.0.0.1:7200`, a URL, a command, `zmq tcp://...`.
        target: String,
        /// What was wrong with the reply.
        reason: String,
    },
    /// The probe cannot be attempted as written (https, an empty command,
    /// a malformed URL).
    #[error("{target}: cannot probe: {reason}")]
    Unsupported {
        /// What was probed: `tcp 127.0.0.1:7200`, a URL, a command, `zmq tcp://...`.
        target: String,
        /// Why it cannot be attempted.
        reason: String,
    },
}

impl ProbeError {
    /// Maps an I/O error of one probe step, keeping "refused" apart because
    /// it is the common "not listening yet" case during startup.
    pub(crate) fn from_io(target: &str, action: &'static str, error: std::io::Error) -> ProbeError {
        if error.kind() == std::io::ErrorKind::ConnectionRefused {
            ProbeError::Refused {
                target: target.to_string(),
            }
        } else {
            ProbeError::Io {
                target: target.to_string(),
                action,
                error,
            }
        }
    }
}

/// Makes one attempt of `probe`, bounded by `timeout` whatever the target
/// does (accepts and never answers, never exits, drops packets).
///
/// `Ok(())` means healthy. An exec probe still running at the timeout is
/// killed with its whole process group and reaped before this returns.
pub async fn probe(probe: &Probe, timeout: Duration) -> Result<(), ProbeError> {
    match probe {
        Probe::Tcp { host, port } => probe_tcp(host, *port, timeout).await,
        Probe::Http { url } => HttpClient::once(url).probe(timeout).await,
        Probe::Exec { command } => probe_exec(command, timeout).await,
        Probe::Zmq { host, port } => {
            crate::health::legacy_zmq::probe_zmq(host, *port, timeout).await
        }
    }
}

/// One liveness attempt: like [`probe`], except that any answer of the
/// legacy ZMQ health protocol counts, `degraded` and `error` included. A
/// liveness probe asks "is it hung?", and an agent that answers is not:
/// legacy agents report `degraded` for reasons that a restart does not cure
/// (their Redis ready key expires after five minutes and is never renewed).
pub async fn alive(probe: &Probe, timeout: Duration) -> Result<(), ProbeError> {
    liveness_verdict(probe, crate::health::probe(probe, timeout).await)
}

/// What a probe's result means for liveness (see [`alive`]).
fn liveness_verdict(probe: &Probe, result: Result<(), ProbeError>) -> Result<(), ProbeError> {
    match result {
        Err(ProbeError::Unhealthy { .. } | ProbeError::BadReply { .. })
            if matches!(probe, Probe::Zmq { .. }) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Probes one target again and again, keeping between attempts what can
/// be reused: an HTTP probe keeps its connection open (see
/// `docs/manifest.md`, "HTTP probes"); other kinds are the same as
/// [`probe`] and [`alive`].
///
/// One per watch task: a restarted agent is watched by new tasks, so its
/// first probe opens a fresh connection and nothing of the old instance is
/// carried over. Dropping it resets the kept connection.
pub struct Prober {
    /// What is probed.
    probe: Probe,
    /// The kept connection of an HTTP probe.
    http: Option<HttpClient>,
}

impl Prober {
    /// A prober for `probe`, with no connection yet.
    pub fn new(probe: Probe) -> Prober {
        let http = match &probe {
            Probe::Http { url } => Some(HttpClient::new(url)),
            _ => None,
        };
        Prober { probe, http }
    }

    /// One attempt, as [`probe`].
    pub async fn probe(&mut self, timeout: Duration) -> Result<(), ProbeError> {
        match &mut self.http {
            Some(client) => client.probe(timeout).await,
            None => crate::health::probe(&self.probe, timeout).await,
        }
    }

    /// One liveness attempt, as [`alive`].
    pub async fn alive(&mut self, timeout: Duration) -> Result<(), ProbeError> {
        let result = self.probe(timeout).await;
        liveness_verdict(&self.probe, result)
    }
}

/// The port on this machine that a tcp or http probe connects to, `None`
/// for other kinds and other hosts. Readiness checks who listens there.
pub fn local_port(probe: &Probe) -> Option<u16> {
    let local = |host: &str| {
        let host = connect_host(host);
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback())
    };
    match probe {
        Probe::Tcp { host, port } if local(host) => Some(*port),
        Probe::Http { url } => crate::health::http::parse_url(url)
            .ok()
            .filter(|target| local(&target.host))
            .map(|target| target.port),
        _ => None,
    }
}

/// The address to connect to for a host written as a bind address: legacy
/// manifests say `0.0.0.0` (all interfaces), which as a destination means
/// "this machine"; loopback says that explicitly and works everywhere.
pub(crate) fn connect_host(host: &str) -> &str {
    match host {
        "0.0.0.0" | "*" | "" => "127.0.0.1",
        "::" | "[::]" => "::1",
        other => other,
    }
}

/// Passes when a TCP connection to `host:port` (a wildcard host probes
/// loopback) is accepted within `timeout`, name resolution included; the
/// connection is closed at once. A refusal fails at once
/// ([`ProbeError::Refused`]).
async fn probe_tcp(host: &str, port: u16, timeout: Duration) -> Result<(), ProbeError> {
    let host = connect_host(host);
    let target = format!("tcp {host}:{port}");
    // Name resolution is inside the timeout too: a hanging resolver must not
    // stall the probe.
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(error)) => Err(ProbeError::from_io(&target, "connect", error)),
        Err(_elapsed) => Err(ProbeError::Timeout {
            target,
            after: timeout,
        }),
    }
}

/// Passes when `command` (program and arguments, no shell) exits with
/// status 0 within `timeout`; its output is discarded. Another status is
/// [`ProbeError::ExitStatus`]; past `timeout` its whole process group is
/// killed and reaped and the result is [`ProbeError::Timeout`]. An empty
/// command is [`ProbeError::Unsupported`].
async fn probe_exec(command: &[String], timeout: Duration) -> Result<(), ProbeError> {
    let target = format!("exec `{}`", command.join(" "));
    let Some((program, args)) = command.split_first() else {
        return Err(ProbeError::Unsupported {
            target,
            reason: "empty command".to_string(),
        });
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a timeout can kill whatever the command
        // started too (`sh -c 'a | b'`), not only the direct child.
        .process_group(0)
        // If the caller drops this future (shutdown), the child dies with it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| ProbeError::from_io(&target, "spawn", error))?;

    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(ProbeError::ExitStatus { target, status }),
        Ok(Err(error)) => Err(ProbeError::from_io(&target, "wait", error)),
        Err(_elapsed) => {
            if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                // ESRCH only means the group is already gone.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            // Kill (again, harmless) and reap, so no zombie is left behind.
            if let Err(error) = child.kill().await {
                tracing::warn!(%target, %error, "could not kill timed-out exec probe");
            }
            Err(ProbeError::Timeout {
                target,
                after: timeout,
            })
        }
    }
}

/// `": message"`, or nothing for an empty message (keeps the Display tidy).
fn colon_prefixed(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn bind_addresses_become_loopback() {
        assert_eq!(connect_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(connect_host("::"), "::1");
        assert_eq!(connect_host("localhost"), "localhost");
        assert_eq!(connect_host("10.0.0.7"), "10.0.0.7");
    }

    #[test]
    fn local_ports_of_tcp_and_http_probes() {
        let tcp = |host: &str| Probe::Tcp {
            host: host.into(),
            port: 7200,
        };
        assert_eq!(local_port(&tcp("0.0.0.0")), Some(7200));
        assert_eq!(local_port(&tcp("127.0.0.1")), Some(7200));
        assert_eq!(local_port(&tcp("10.0.0.7")), None);
        let http = Probe::Http {
            url: "http://localhost:8080/health".into(),
        };
        assert_eq!(local_port(&http), Some(8080));
    }

    #[test]
    fn messages_name_the_target() {
        let error = ProbeError::Unhealthy {
            target: "zmq tcp://127.0.0.1:7211".into(),
            status: "degraded".into(),
            message: "redis down".into(),
        };
        assert_eq!(
            error.to_string(),
            "zmq tcp://127.0.0.1:7211: unhealthy (status \"degraded\"): redis down"
        );
        let error = ProbeError::ExitStatus {
            target: "exec `x`".into(),
            status: ExitStatus::from_raw(9),
        };
        assert!(error.to_string().starts_with("exec `x`: "), "{error}");
    }
}
