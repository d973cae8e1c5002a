//! Health: whether an agent is ready, and whether a ready agent has hung.
//!
//! Owns [`probe`]: one bounded probe attempt against an agent (TCP connect,
//! HTTP GET, a command's exit status, or the legacy ZMQ health request
//! described in `docs/legacy.md`). It performs I/O and nothing else: no
//! retries, no schedule, no state.
//!
//! Does not own the schedule or the deadlines (the supervisor's lifecycle
//! keeps readiness deadlines and liveness failure counts), restarting or
//! killing agents (`supervisor`, `process`), or SDK heartbeats.

mod http;
mod legacy_zmq;
mod probe;

pub use probe::{ProbeError, alive, local_port, probe};
