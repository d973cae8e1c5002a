//! Health: whether an agent is ready, and whether a ready agent has hung.
//!
//! Owns two things:
//!
//! - [`probe`]: one bounded probe attempt against an agent (TCP connect, HTTP
//!   GET, a command's exit status, or the legacy ZMQ health request described
//!   in `docs/legacy.md`). It performs I/O and nothing else: no retries, no
//!   schedule, no state.
//! - Pure deadline logic, [`ReadinessDeadline`] and [`LivenessTracker`]: when
//!   to probe next, when readiness has run out of time, and when consecutive
//!   liveness failures mean an agent is hung. These take `now: Instant` and
//!   never read the clock, so the supervisor's transition code can test them
//!   with a paused clock.
//!
//! Does not own the schedule itself (the supervisor loop arms the timers),
//! restarting or killing agents (`supervisor`, `process`), or SDK heartbeats.

mod deadline;
mod http;
mod legacy_zmq;
mod probe;

pub use deadline::{LivenessTracker, MIN_ATTEMPT_TIMEOUT, ReadinessDeadline, Verdict};
pub use probe::{ProbeError, alive, local_port, probe};
