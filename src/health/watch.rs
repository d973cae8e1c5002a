//! Probe schedules: the readiness watch (probe after the initial delay, then
//! on the schedule of [`super::next_probe_delay`]: fast first, backing off
//! to the interval, until one attempt passes on a listener that is the
//! agent's own) and the liveness watch (probe every interval, report each
//! change), each a task ended by its cancellation token.
//!
//! Owns when probes run and whose listener a passing readiness probe
//! reached. Does not own the probes themselves ([`super::probe`]), the
//! deadlines or failure counts (the supervisor's lifecycle), or which agent
//! is watched (the supervisor's loop spawns these tasks).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::manifest::Probe;

/// Probe attempts never get less time than this, whatever the interval.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// For an agent of another host (`host`), a probe aimed at a loopback or
/// wildcard address goes to that host instead.
pub fn aimed_at(probe: &Probe, host: &str) -> Probe {
    let local = |target: &str| matches!(target, "127.0.0.1" | "localhost" | "0.0.0.0" | "::1" | "");
    match probe {
        Probe::Tcp { host: target, port } if local(target) => Probe::Tcp {
            host: host.to_string(),
            port: *port,
        },
        Probe::Zmq { host: target, port } if local(target) => Probe::Zmq {
            host: host.to_string(),
            port: *port,
        },
        other => other.clone(),
    }
}

/// Readiness watches running now (their probes share a budget, see
/// [`super::schedule::shared_floor`]).
static WATCHING: AtomicUsize = AtomicUsize::new(0);

/// Counts one readiness watch in [`WATCHING`] while it lives.
struct Watching;

impl Watching {
    /// Counts a new watch; the count drops again when the guard is dropped.
    fn start() -> Watching {
        WATCHING.fetch_add(1, Ordering::Relaxed);
        Watching
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        WATCHING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long one probe attempt may take.
fn attempt_timeout(interval: Duration, limit: Duration) -> Duration {
    interval
        .max(MIN_PROBE_TIMEOUT)
        .min(limit.max(MIN_PROBE_TIMEOUT))
}

/// Probes after the initial delay, then on the schedule of
/// [`super::next_probe_delay`] (fast first, backing off to the interval),
/// until one attempt
/// passes (reported once) or `token` is cancelled. A tcp probe of a local
/// port is also tried again the moment that port listens
/// (`listeners::listening`), and then needs no fast schedule: where the
/// listener watch works it is probed every interval besides. The
/// readiness timeout is the lifecycle's deadline, not this task's.
///
/// A tcp or http probe of a local port that connects passes only if the
/// listener is in the agent's process tree (`owner`: its pid once spawned):
/// a port held by a foreign process is reported through `blocked` (once per
/// change) and probed again. Ownership is read from `/proc` only after a
/// successful connect, so polling a closed port stays a bare connect.
pub async fn watch_readiness(
    probe: Probe,
    readiness: crate::manifest::Readiness,
    owner: Option<Arc<OnceLock<u32>>>,
    token: CancellationToken,
    passed: impl FnOnce(),
    blocked: impl Fn(String),
) {
    let port = crate::health::local_port(&probe);
    let tcp_port = port.filter(|_| matches!(probe, Probe::Tcp { .. }));
    // When the listener watch wakes this probe the moment its port listens,
    // probing fast on a schedule as well only costs refused connects
    // (thousands while 500 agents start): the interval is enough then.
    let woken_by_watch = tcp_port.is_some() && super::listeners::available();
    let mut woke = false;
    let mut last_blocked: Option<String> = None;
    tokio::select! {
        _ = token.cancelled() => return,
        _ = tokio::time::sleep(readiness.initial_delay) => {}
    }
    let timeout = attempt_timeout(readiness.interval, readiness.timeout);
    let mut prober = crate::health::Prober::new(probe);
    let first = Instant::now();
    let _counted = Watching::start();
    loop {
        let now = Instant::now();
        let delay = match woken_by_watch {
            true => readiness.interval,
            false => {
                let floor = super::schedule::shared_floor(WATCHING.load(Ordering::Relaxed));
                super::next_probe_delay(now - first, readiness.interval)
                    .max(floor.min(readiness.interval))
            }
        };
        let next = now + delay;
        let result = tokio::select! {
            _ = token.cancelled() => return,
            result = prober.probe(timeout) => result,
        };
        if result.is_ok() {
            let verdict = match (port, &owner) {
                (Some(port), Some(owner)) => {
                    let pid = owner.get().copied();
                    tokio::task::spawn_blocking(move || listener_owner(port, pid))
                        .await
                        .unwrap_or(Listener::Ours)
                }
                _ => Listener::Ours,
            };
            match verdict {
                Listener::Ours => {
                    passed();
                    return;
                }
                Listener::NotYetKnown => {}
                Listener::Foreign(reason) => {
                    if last_blocked.as_ref() != Some(&reason) {
                        blocked(reason.clone());
                        last_blocked = Some(reason);
                    }
                }
            }
        }
        // A tcp probe that could not connect to a local port is tried
        // again as soon as the port listens (within a millisecond, see
        // `listeners`), else at the scheduled time. Only once in a row: a
        // port that listens yet refuses this probe (another address
        // family) waits for the schedule.
        let wake = match (tcp_port, &result) {
            (Some(port), Err(_)) if !woke => Some(port),
            _ => None,
        };
        woke = false;
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
            true = async {
                match wake {
                    Some(port) => super::listeners::listening(port).await,
                    None => std::future::pending().await,
                }
            } => woke = true,
        }
    }
}

/// Whose listener a readiness probe reached.
#[derive(Debug, PartialEq, Eq)]
enum Listener {
    /// The agent's (or `/proc` cannot tell: trust the connect).
    Ours,
    /// The agent's pid is not known yet: probe again.
    NotYetKnown,
    /// Another process's: `port 7200 is held by pid 4242 (nc), not by this agent`.
    Foreign(String),
}

/// Blocking (`/proc`): is a listener on `port` in the tree (or the process
/// group) of `pid`?
fn listener_owner(port: u16, pid: Option<u32>) -> Listener {
    use crate::check::bound;
    let sockets = bound::listening_sockets(port);
    if sockets.is_empty() {
        return Listener::Ours;
    }
    let Some(pid) = pid else {
        return Listener::NotYetKnown;
    };
    // The common case first: the agent itself holds it. Reading its own
    // descriptors is cheap; finding its descendants walks all of /proc,
    // which on a busy machine took 100-500 ms per agent (issue 18).
    if !bound::held_by(&sockets, [pid]).is_empty() {
        return Listener::Ours;
    }
    let tree = crate::process::ports::tree(pid);
    if !bound::held_by(&sockets, tree).is_empty() {
        return Listener::Ours;
    }
    // A child that outlived its parent (reparented, so outside the tree)
    // still belongs to the agent if it stayed in the agent's process group.
    let listeners = bound::listeners(port);
    if listeners.holders.iter().any(|holder| {
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(holder.pid as i32)))
            .is_ok_and(|group| group.as_raw() as u32 == pid)
    }) {
        return Listener::Ours;
    }
    Listener::Foreign(format!(
        "port {port} is held by {}, not by this agent",
        listeners.describe()
    ))
}

/// Probes every interval until `token` is cancelled (an HTTP probe on a
/// kept connection, see [`crate::health::Prober`]), and reports each result
/// except a pass after a pass: that changes nothing in the lifecycle (the
/// failure count is already zero) but would wake the supervisor loop and
/// republish the status of every agent, per agent per interval.
pub async fn watch_liveness(
    probe: Probe,
    liveness: crate::manifest::Liveness,
    token: CancellationToken,
    report: impl Fn(Result<(), String>),
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + liveness.interval, liveness.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passed_before = false;
    let mut prober = crate::health::Prober::new(probe);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let result = tokio::select! {
            _ = token.cancelled() => return,
            result = prober.alive(liveness.timeout) => result,
        };
        let passed = result.is_ok();
        if !(passed && passed_before) {
            report(result.map_err(|error| error.to_string()));
        }
        passed_before = passed;
    }
}
