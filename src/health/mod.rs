//! Health: whether an agent is ready, and whether a ready agent has hung.
//!
//! Owns [`probe`]: one bounded probe attempt against an agent (TCP connect,
//! HTTP GET, a command's exit status, or the legacy ZMQ health request
//! described in `docs/legacy.md`), performing I/O and nothing else;
//! [`Prober`], which repeats it for one target and keeps an HTTP probe's
//! connection open between attempts (`http.rs`); the
//! probe schedules ([`watch_readiness`], [`watch_liveness`]: tasks that probe
//! until cancelled, readiness on the schedule of `schedule.rs`: fast first,
//! backing off to the interval); and [`diagnose`], the words for why an
//! agent is not ready.
//!
//! Does not own the deadlines (the supervisor's lifecycle keeps readiness
//! deadlines and liveness failure counts), restarting or killing agents
//! (`supervisor`, `process`), or SDK heartbeats.

mod diagnose;
mod http;
mod legacy_zmq;
mod listeners;
mod probe;
mod schedule;
mod watch;

pub use diagnose::diagnose;
pub use http::PROBES_PER_CONNECTION;
pub use probe::{ProbeError, Prober, alive, local_port, probe};
pub use schedule::next_probe_delay;
pub use watch::{aimed_at, watch_liveness, watch_readiness};
