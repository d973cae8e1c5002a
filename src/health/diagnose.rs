//! Why an agent is not ready, in words an operator can act on: what its
//! process tree really listens on and which of those ports answer its
//! readiness check, e.g. `nothing listens on 9110; the agent listens on
//! 9100, 9101 (answers health: ok), 9102`. Real legacy agents often bind
//! their health socket on `port+1` (the base class's default) or take ports
//! from their own registry, not from the manifest.
//!
//! Owns the wording and the extra probes; the listening ports come from
//! `process::ports`, the probes from `health`.

use std::time::Duration;

use crate::health::probe;
use crate::manifest::Probe;
use crate::process::ports;

/// How long each extra probe may take (they run concurrently).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// At most this many ports are probed.
const MAX_PROBED: usize = 8;

/// The diagnosis of the agent whose process is `pid`, for its readiness
/// probe `check`.
pub async fn diagnose(pid: u32, check: Probe) -> String {
    let listening: Vec<u16> = tokio::task::spawn_blocking(move || {
        ports::listening(&ports::tree(pid)).into_iter().collect()
    })
    .await
    .unwrap_or_default();
    let expected = port_of(&check);
    let mut text = String::new();
    if let Some(expected) = expected {
        if listening.contains(&expected) {
            let answer = match probe(&check, PROBE_TIMEOUT).await {
                Ok(()) => "answers now".to_string(),
                Err(error) => error.to_string(),
            };
            text.push_str(&format!("{expected} listens but {answer}"));
        } else {
            text.push_str(&format!("nothing of the agent listens on {expected}"));
        }
    }
    let others: Vec<u16> = listening
        .iter()
        .copied()
        .filter(|port| Some(*port) != expected)
        .collect();
    if !text.is_empty() {
        text.push_str("; ");
    }
    if listening.is_empty() {
        text.push_str("the agent listens on no TCP port");
        return text;
    }
    // Which of the other ports answer the same kind of check.
    let mut answers = Vec::new();
    for port in others.iter().take(MAX_PROBED) {
        let Some(candidate) = with_port(&check, *port) else {
            answers.push(None);
            continue;
        };
        answers.push(Some(tokio::spawn(async move {
            probe(&candidate, PROBE_TIMEOUT).await.is_ok()
        })));
    }
    let mut shown = Vec::new();
    for (index, port) in others.iter().enumerate() {
        let answered = match answers.get_mut(index).and_then(Option::take) {
            Some(task) => task.await.unwrap_or(false),
            None => false,
        };
        if answered {
            shown.push(format!("{port} (answers {}: ok)", kind(&check)));
        } else {
            shown.push(port.to_string());
        }
    }
    text.push_str(&format!("the agent listens on {}", shown.join(", ")));
    text
}

/// The port a probe checks, when it checks one.
fn port_of(check: &Probe) -> Option<u16> {
    match check {
        Probe::Tcp { port, .. } | Probe::Zmq { port, .. } => Some(*port),
        Probe::Http { url } => url_port(url),
        Probe::Exec { .. } => None,
    }
}

/// The same probe on another port; `None` for probes without a port and
/// for plain TCP (a listening port always "answers" a connect).
fn with_port(check: &Probe, port: u16) -> Option<Probe> {
    match check {
        Probe::Zmq { host, .. } => Some(Probe::Zmq {
            host: host.clone(),
            port,
        }),
        Probe::Http { url } => {
            let old = url_port(url)?;
            Some(Probe::Http {
                url: url.replacen(&format!(":{old}"), &format!(":{port}"), 1),
            })
        }
        Probe::Tcp { .. } | Probe::Exec { .. } => None,
    }
}

/// The word the diagnosis uses for what a port answers: `health` (the
/// legacy ZMQ request), `http`, `tcp` or `exec`.
fn kind(check: &Probe) -> &'static str {
    match check {
        Probe::Zmq { .. } => "health",
        Probe::Http { .. } => "http",
        Probe::Tcp { .. } => "tcp",
        Probe::Exec { .. } => "exec",
    }
}

/// `http://host:8080/health` -> 8080.
fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_what_the_agent_listens_on_instead() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let free = portpicker::pick_unused_port().expect("a free port");
        let text = diagnose(
            std::process::id(),
            Probe::Tcp {
                host: "127.0.0.1".into(),
                port: free,
            },
        )
        .await;
        assert!(
            text.starts_with(&format!(
                "nothing of the agent listens on {free}; the agent listens on "
            )) && text.contains(&port.to_string()),
            "{text}"
        );
    }

    #[test]
    fn ports_of_urls() {
        assert_eq!(url_port("http://127.0.0.1:8080/health"), Some(8080));
        assert_eq!(url_port("http://localhost/health"), None);
        let moved = with_port(
            &Probe::Http {
                url: "http://127.0.0.1:8080/health".into(),
            },
            9000,
        );
        assert_eq!(
            moved,
            Some(Probe::Http {
                url: "http://127.0.0.1:9000/health".into()
            })
        );
    }
}
