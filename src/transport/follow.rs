//! A follower of the error bus: a SUB socket connected to the bus's PUB
//! endpoint, subscribed to topic prefixes (`<severity>.<agent>`), reading
//! [`ErrorRecord`]s. Used by `supervisor errors --follow`.
//!
//! Owns its SUB socket (one thread: the caller's). PUB semantics apply: a
//! follower that falls behind loses records; the journal is complete.

use std::time::Duration;

use super::messages::ErrorRecord;
use super::{TransportError, context, millis_i32};

/// A connected error bus subscriber.
pub struct ErrorFollower {
    /// SUB connected to the bus's PUB, subscribed to the chosen prefix.
    socket: zmq::Socket,
    /// Where it is connected, for errors.
    endpoint: String,
}

impl std::fmt::Debug for ErrorFollower {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ErrorFollower")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl ErrorFollower {
    /// Subscribes to every topic prefix in `topics` (`""` for all, `fatal.`,
    /// `error.api`, ...) on the bus at `endpoint`.
    pub fn connect(endpoint: &str, topics: &[String]) -> Result<ErrorFollower, TransportError> {
        let socket = context()
            .socket(zmq::SUB)
            .map_err(|error| TransportError::zmq("create SUB", endpoint, error))?;
        socket
            .set_linger(0)
            .map_err(|error| TransportError::zmq("set LINGER", endpoint, error))?;
        for topic in topics {
            socket
                .set_subscribe(topic.as_bytes())
                .map_err(|error| TransportError::zmq("subscribe", endpoint, error))?;
        }
        socket
            .connect(endpoint)
            .map_err(|error| TransportError::zmq("connect", endpoint, error))?;
        Ok(ErrorFollower {
            socket,
            endpoint: endpoint.to_string(),
        })
    }

    /// The next record, or `None` when nothing arrived within `timeout`.
    /// Unreadable messages are skipped.
    pub fn next(&self, timeout: Duration) -> Result<Option<ErrorRecord>, TransportError> {
        let ready = self
            .socket
            .poll(zmq::POLLIN, i64::from(millis_i32(timeout)))
            .map_err(|error| TransportError::zmq("poll", &self.endpoint, error))?;
        if ready == 0 {
            return Ok(None);
        }
        let frames = self
            .socket
            .recv_multipart(0)
            .map_err(|error| TransportError::zmq("receive", &self.endpoint, error))?;
        Ok(frames
            .last()
            .and_then(|body| serde_json::from_slice(body).ok()))
    }
}
