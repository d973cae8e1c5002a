//! Health: whether an agent is ready, and whether a ready agent has hung.
//!
//! Owns [`probe`]: one bounded probe attempt against an agent (TCP connect,
//! HTTP GET, a command's exit status, or the legacy ZMQ health request
//! described in `docs/legacy.md`). It performs I/O and nothing else: no
//! retries, no schedule, no state. Owns [`schedule`]: when the next
//! readiness probe runs (fast first, backing off to the interval).
//!
//! Does not own the deadlines (the supervisor's lifecycle
//! keeps readiness deadlines and liveness failure counts), restarting or
//! killing agents (`supervisor`, `process`), or SDK heartbeats.

mod http;
mod legacy_zmq;
mod probe;
mod schedule;

pub use probe::{ProbeError, alive, local_port, probe};
pub use schedule::next_probe_delay;
