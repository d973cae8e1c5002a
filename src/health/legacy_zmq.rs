//! The legacy ZMQ health probe (see `docs/legacy.md`, "ZMQ health protocol").
//!
//! Owns the request/reply exchange with a legacy BaseAgent's REP health
//! socket and the judgement of its JSON reply. Does not own any long-lived
//! socket: every attempt uses a fresh REQ socket that is closed at the end,
//! because a REQ socket whose reply never came is stuck in its send/receive
//! lockstep and must never be reused.
//!
//! libzmq sockets are single-threaded and blocking, so the exchange runs on
//! tokio's blocking pool, bounded by the same deadline as the async side.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::health::probe::{ProbeError, connect_host};

/// The request every legacy client sends; the agents answer any frame the
/// same way, but this is what they were written against.
const REQUEST: &str = r#"{"action": "health_check"}"#;

/// The process's one libzmq context (owned by `transport`): a context owns
/// I/O threads, and it is safe to share between threads.
fn context() -> zmq::Context {
    crate::transport::context()
}

pub(crate) async fn probe_zmq(host: &str, port: u16, timeout: Duration) -> Result<(), ProbeError> {
    let host = connect_host(host).to_string();
    let endpoint = if host.contains(':') {
        format!("tcp://[{host}]:{port}")
    } else {
        format!("tcp://{host}:{port}")
    };
    let target = format!("zmq {endpoint}");
    // The deadline is fixed before the blocking task is queued: if the pool is
    // busy the exchange gets less time, never more.
    let deadline = Instant::now() + timeout;
    let exchange = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || exchange(&target, &endpoint, deadline, timeout))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(result)) => result,
        Ok(Err(join_error)) => Err(ProbeError::BadReply {
            target,
            reason: format!("probe task failed: {join_error}"),
        }),
        // The blocking task ends by itself at the same deadline and closes
        // its socket; nothing to clean up here.
        Err(_elapsed) => Err(ProbeError::Timeout {
            target,
            after: timeout,
        }),
    }
}

/// Sends the request and waits for the reply until `deadline`, on the calling
/// (blocking) thread. The socket is dropped on every path, with LINGER 0 so
/// an unsent request does not hold the close.
fn exchange(
    target: &str,
    endpoint: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let zmq_error = |action: &'static str, error: zmq::Error| ProbeError::Io {
        target: target.to_string(),
        action,
        error: std::io::Error::other(error),
    };
    let timed_out = || ProbeError::Timeout {
        target: target.to_string(),
        after: timeout,
    };

    let socket = context()
        .socket(zmq::REQ)
        .map_err(|error| zmq_error("create socket", error))?;
    socket
        .set_linger(0)
        .map_err(|error| zmq_error("set LINGER", error))?;
    if endpoint.starts_with("tcp://[") {
        socket
            .set_ipv6(true)
            .map_err(|error| zmq_error("enable IPv6", error))?;
    }
    socket
        .connect(endpoint)
        .map_err(|error| zmq_error("connect", error))?;

    // A REQ socket queues the request until the connection is up; bound the
    // send too so a full queue cannot block past the deadline.
    socket
        .set_sndtimeo(millis_until(deadline))
        .map_err(|error| zmq_error("set SNDTIMEO", error))?;
    match socket.send(REQUEST, 0) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Err(timed_out()),
        Err(error) => return Err(zmq_error("send request", error)),
    }

    // libzmq's clock is coarse (its poll may return up to a millisecond
    // early): wait again until the deadline has really passed.
    let ready = loop {
        let ready = socket
            .poll(zmq::POLLIN, i64::from(millis_until(deadline)))
            .map_err(|error| zmq_error("poll", error))?;
        if ready > 0 || Instant::now() >= deadline {
            break ready;
        }
    };
    if ready == 0 {
        return Err(timed_out());
    }
    let reply = match socket.recv_bytes(zmq::DONTWAIT) {
        Ok(reply) => reply,
        Err(zmq::Error::EAGAIN) => return Err(timed_out()),
        Err(error) => return Err(zmq_error("receive reply", error)),
    };
    judge_reply(target, &reply)
}

/// Milliseconds left until `deadline`, rounded up so a sub-millisecond rest
/// still waits, and never negative (`-1` would mean "forever" to libzmq).
fn millis_until(deadline: Instant) -> i32 {
    let left = deadline.saturating_duration_since(Instant::now());
    let millis = left.as_micros().div_ceil(1000);
    i32::try_from(millis).unwrap_or(i32::MAX)
}

/// Decides whether a legacy health reply means healthy.
///
/// Healthy: a JSON object whose `status` is `ok` or `healthy` (any case) and
/// whose `ready` is not `false` (absent counts as ready: early agents did not
/// send it). Anything else that is a JSON object with a `status` string is
/// [`ProbeError::Unhealthy`]; anything else is [`ProbeError::BadReply`].
pub(crate) fn judge_reply(target: &str, reply: &[u8]) -> Result<(), ProbeError> {
    let bad_reply = |reason: String| ProbeError::BadReply {
        target: target.to_string(),
        reason,
    };
    let value: Value = serde_json::from_slice(reply)
        .map_err(|error| bad_reply(format!("not JSON ({error}): {:?}", preview(reply))))?;
    let Value::Object(fields) = &value else {
        return Err(bad_reply(format!("not a JSON object: {}", preview(reply))));
    };
    let Some(status) = fields.get("status").and_then(Value::as_str) else {
        return Err(bad_reply(format!("no `status` string: {}", preview(reply))));
    };
    let healthy_status =
        status.eq_ignore_ascii_case("ok") || status.eq_ignore_ascii_case("healthy");
    let ready = fields.get("ready") != Some(&Value::Bool(false));
    if healthy_status && ready {
        return Ok(());
    }
    let mut message = ["error", "message"]
        .iter()
        .filter_map(|key| fields.get(*key).and_then(Value::as_str))
        .find(|text| !text.is_empty())
        .unwrap_or_default()
        .to_string();
    if healthy_status {
        // Status says ok but the agent is not ready: say so, since the status
        // alone would read as healthy.
        message = if message.is_empty() {
            "ready: false".to_string()
        } else {
            format!("ready: false; {message}")
        };
    }
    let failed_checks = failed_checks(fields.get("health_checks"));
    if !failed_checks.is_empty() {
        let failed = format!("failed checks: {}", failed_checks.join(", "));
        message = if message.is_empty() {
            failed
        } else {
            format!("{message} ({failed})")
        };
    }
    Err(ProbeError::Unhealthy {
        target: target.to_string(),
        status: status.to_string(),
        message,
    })
}

/// Names of the `health_checks` entries that are `false` (later BaseAgents
/// send `{port_accessible, redis_connected, ready_signal}`).
fn failed_checks(checks: Option<&Value>) -> Vec<String> {
    let Some(Value::Object(checks)) = checks else {
        return Vec::new();
    };
    checks
        .iter()
        .filter(|(_, passed)| **passed == Value::Bool(false))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The start of a reply, for error messages: replies can be large.
fn preview(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "zmq tcp://127.0.0.1:7211";

    fn judge(reply: &str) -> Result<(), ProbeError> {
        judge_reply(TARGET, reply.as_bytes())
    }

    #[test]
    fn ok_and_healthy_are_healthy_in_any_case() {
        assert!(
            judge(
                r#"{"status":"ok","ready":true,"initialized":true,"message":"fine","uptime":3.2}"#
            )
            .is_ok()
        );
        assert!(judge(r#"{"status":"OK"}"#).is_ok());
        assert!(judge(r#"{"status":"healthy","timestamp":"2025-07-20T10:00:00"}"#).is_ok());
        assert!(judge(r#"{"status":"Healthy","ready":null}"#).is_ok());
    }

    #[test]
    fn ready_false_is_unhealthy_even_with_status_ok() {
        match judge(r#"{"status":"ok","ready":false,"message":"loading model"}"#) {
            Err(ProbeError::Unhealthy {
                status, message, ..
            }) => {
                assert_eq!(status, "ok");
                assert_eq!(message, "ready: false; loading model");
            }
            other => panic!("expected Unhealthy, got {other:?}"),
        }
    }

    #[test]
    fn degraded_and_error_are_unhealthy_with_their_message() {
        let reply = r#"{"status":"degraded","ready":false,"message":"Agent is degraded",
            "health_checks":{"port_accessible":true,"redis_connected":false,"ready_signal":false}}"#;
        match judge(reply) {
            Err(ProbeError::Unhealthy {
                status, message, ..
            }) => {
                assert_eq!(status, "degraded");
                assert_eq!(
                    message,
                    "Agent is degraded (failed checks: ready_signal, redis_connected)"
                );
            }
            other => panic!("expected Unhealthy, got {other:?}"),
        }
        match judge(r#"{"status":"error","error":"Invalid JSON request"}"#) {
            Err(ProbeError::Unhealthy {
                status, message, ..
            }) => {
                assert_eq!(status, "error");
                assert_eq!(message, "Invalid JSON request");
            }
            other => panic!("expected Unhealthy, got {other:?}"),
        }
    }

    #[test]
    fn non_json_and_shapeless_replies_are_bad_replies() {
        for reply in ["pong", "", "[1,2]", r#"{"ready":true}"#, r#"{"status":1}"#] {
            match judge(reply) {
                Err(ProbeError::BadReply { target, .. }) => assert_eq!(target, TARGET),
                other => panic!("{reply:?}: expected BadReply, got {other:?}"),
            }
        }
    }

    #[test]
    fn millis_until_never_means_forever() {
        assert_eq!(millis_until(Instant::now()), 0);
        let soon = Instant::now() + Duration::from_micros(300);
        assert!(millis_until(soon) <= 1);
        assert!(millis_until(Instant::now() + Duration::from_secs(2)) > 1900);
    }
}
