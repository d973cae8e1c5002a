//! Circuit breakers: stop calling a target that keeps failing, try it again
//! after a pause, and say so in heartbeats.
//!
//! [`CircuitBreaker`] is the pure state machine of one target (no clock
//! reads: callers pass `now`):
//!
//! ```text
//!            failure_threshold failures within `window`
//!   Closed ─────────────────────────────────────────────▶ Open
//!     ▲                                                   │ recovery_timeout passed
//!     │ the trial call succeeded                          ▼
//!     └──────────────────────────────────────────────── HalfOpen
//!                      the trial call failed: back to Open ▲─┘
//! ```
//!
//! While open, calls fail at once with [`TransportError::CircuitOpen`]
//! instead of waiting for a timeout; half-open lets one trial call through.
//! [`Breakers`] is the shared table of breakers by target (an agent's name
//! once the SDK resolved it, else the endpoint), used by
//! [`super::SocketPool::request`] and by agent code around any other call
//! (a database driver, HTTP); the SDK's heartbeats carry its
//! [`Breakers::reports`] (`docs/protocol.md`, HEARTBEAT `breakers`).
//!
//! Owns breaker state and the report format. Does not own sockets, retries
//! or what the supervisor makes of a report (that is
//! `supervisor::degraded`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::TransportError;

/// When a breaker opens and when it tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker (0 is treated as 1).
    pub failure_threshold: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long an open breaker refuses calls before it lets a trial through.
    pub recovery_timeout: Duration,
}

impl Default for BreakerConfig {
    /// 5 failures within 30 s open it; a trial after 10 s.
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 5,
            window: Duration::from_secs(30),
            recovery_timeout: Duration::from_secs(10),
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls fail at once until the recovery timeout has passed.
    Open,
    /// The recovery timeout has passed: the next call is a trial.
    HalfOpen,
    /// A state this build does not know (a newer SDK's).
    #[serde(other)]
    Unknown,
}

impl BreakerState {
    /// `closed`, `open`, `half-open`, as status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Unknown => "unknown",
        }
    }
}

/// One breaker as a heartbeat carries it (`payload.breakers[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerReport {
    /// What the breaker guards: an agent's name, or an endpoint.
    pub target: String,
    pub state: BreakerState,
    /// How long it has been in `state` when the heartbeat was sent, in
    /// milliseconds (a duration, so the clocks of agent and supervisor need
    /// not agree).
    #[serde(default)]
    pub for_ms: u64,
    /// Failures counted in the current window.
    #[serde(default)]
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Closed,
    Open,
    /// `trial` is true while the one trial call is out.
    HalfOpen {
        trial: bool,
    },
}

/// The breaker of one target.
///
/// ```
/// use std::time::{Duration, Instant};
/// use supervisor::transport::{BreakerConfig, BreakerState, CircuitBreaker};
///
/// let config = BreakerConfig {
///     failure_threshold: 2,
///     window: Duration::from_secs(10),
///     recovery_timeout: Duration::from_secs(1),
/// };
/// let start = Instant::now();
/// let mut breaker = CircuitBreaker::new(config, start);
/// breaker.record_failure(start);
/// breaker.record_failure(start);
/// assert_eq!(breaker.state(start), BreakerState::Open);
/// assert!(breaker.permit(start).is_err());
/// let later = start + Duration::from_secs(1);
/// assert!(breaker.permit(later).is_ok()); // the trial
/// breaker.record_success(later);
/// assert_eq!(breaker.state(later), BreakerState::Closed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Phase,
    /// When `phase` was entered (for Open: when it opened).
    since: Instant,
    /// Failures within the window (Closed only).
    failures: VecDeque<Instant>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, now: Instant) -> CircuitBreaker {
        CircuitBreaker {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                ..config
            },
            phase: Phase::Closed,
            since: now,
            failures: VecDeque::new(),
        }
    }

    /// May a call go out now? `Err(wait)` while open: how long until a
    /// trial is allowed (zero while another trial is out). A permitted
    /// call must end in [`Self::record_success`], [`Self::record_failure`]
    /// or [`Self::release`].
    pub fn permit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.phase {
            Phase::Closed => Ok(()),
            Phase::Open => {
                let trial_at = self.since + self.config.recovery_timeout;
                if now >= trial_at {
                    self.enter(Phase::HalfOpen { trial: true }, trial_at);
                    Ok(())
                } else {
                    Err(trial_at - now)
                }
            }
            Phase::HalfOpen { trial: true } => Err(Duration::ZERO),
            Phase::HalfOpen { trial: false } => {
                self.phase = Phase::HalfOpen { trial: true };
                Ok(())
            }
        }
    }

    /// The call succeeded: a trial closes the breaker.
    pub fn record_success(&mut self, now: Instant) {
        match self.phase {
            Phase::HalfOpen { .. } | Phase::Open => self.enter(Phase::Closed, now),
            Phase::Closed => {}
        }
    }

    /// The call failed: counted while closed (opening at the threshold); a
    /// failed trial opens the breaker again for another recovery timeout.
    pub fn record_failure(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => {
                self.forget_old(now);
                self.failures.push_back(now);
                if self.failures.len() >= self.config.failure_threshold as usize {
                    self.enter(Phase::Open, now);
                }
            }
            Phase::HalfOpen { .. } => self.enter(Phase::Open, now),
            Phase::Open => {}
        }
    }

    /// A permitted call that ended without telling anything about the
    /// target (e.g. the local pool was exhausted): a trial may go again.
    pub fn release(&mut self) {
        if let Phase::HalfOpen { trial: true } = self.phase {
            self.phase = Phase::HalfOpen { trial: false };
        }
    }

    /// The state at `now`: an open breaker whose recovery timeout has
    /// passed reads as half-open (the next call is the trial).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open if now >= self.since + self.config.recovery_timeout => {
                BreakerState::HalfOpen
            }
            Phase::Open => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// The report of this breaker at `now`.
    pub fn report(&self, target: &str, now: Instant) -> BreakerReport {
        let state = self.state(now);
        let entered = match (self.phase.clone(), state) {
            (Phase::Open, BreakerState::HalfOpen) => self.since + self.config.recovery_timeout,
            _ => self.since,
        };
        let window_start = now.checked_sub(self.config.window);
        BreakerReport {
            target: target.to_string(),
            state,
            for_ms: u64::try_from(now.saturating_duration_since(entered).as_millis())
                .unwrap_or(u64::MAX),
            failures: u32::try_from(
                self.failures
                    .iter()
                    .filter(|at| window_start.is_none_or(|start| **at > start))
                    .count(),
            )
            .unwrap_or(u32::MAX),
        }
    }

    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.since = now;
        self.failures.clear();
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(first) = self.failures.front() {
            if now.saturating_duration_since(*first) >= self.config.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
    }
}

/// The breakers of one agent (or pool), by target; clones share them.
///
/// ```
/// use supervisor::transport::{BreakerConfig, BreakerError, Breakers};
///
/// let breakers = Breakers::new(BreakerConfig::default());
/// // ... query the database; an Err counts as a failure ...
/// match breakers.call("postgres", || Ok::<u32, String>(3)) {
///     Ok(rows) => assert_eq!(rows, 3),
///     Err(BreakerError::Open { retry_in }) => println!("postgres is out; retry in {retry_in:?}"),
///     Err(BreakerError::Failed(error)) => println!("query failed: {error}"),
/// }
/// assert_eq!(breakers.reports().len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct Breakers {
    config: BreakerConfig,
    table: Arc<Mutex<BTreeMap<String, CircuitBreaker>>>,
}

/// What [`Breakers::call`] returns on failure.
#[derive(Debug)]
pub enum BreakerError<E> {
    /// The breaker is open: the call was not made. Retry after `retry_in`.
    Open { retry_in: Duration },
    /// The call was made and failed (counted).
    Failed(E),
}

impl Breakers {
    /// An empty table; every target's breaker uses `config`.
    pub fn new(config: BreakerConfig) -> Breakers {
        Breakers {
            config,
            table: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The configuration every breaker of this table uses.
    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    /// May a call to `target` go out now? See [`CircuitBreaker::permit`].
    pub fn permit(&self, target: &str) -> Result<(), TransportError> {
        let now = Instant::now();
        let mut table = self.lock();
        let breaker = table
            .entry(target.to_string())
            .or_insert_with(|| CircuitBreaker::new(self.config, now));
        breaker
            .permit(now)
            .map_err(|retry_in| TransportError::circuit_open(target, retry_in))
    }

    /// The permitted call to `target` succeeded.
    pub fn record_success(&self, target: &str) {
        self.with(target, |breaker, now| breaker.record_success(now));
    }

    /// The permitted call to `target` failed.
    pub fn record_failure(&self, target: &str) {
        let opened = self.with(target, |breaker, now| {
            let before = breaker.state(now);
            breaker.record_failure(now);
            before != BreakerState::Open && breaker.state(now) == BreakerState::Open
        });
        if opened == Some(true) {
            tracing::warn!(%target, "circuit breaker opened");
        }
    }

    /// The permitted call to `target` ended without a verdict.
    pub fn release(&self, target: &str) {
        self.with(target, |breaker, _| breaker.release());
    }

    /// Runs `call` under `target`'s breaker: refused at once while open,
    /// else counted as a success (`Ok`) or a failure (`Err`).
    pub fn call<T, E>(
        &self,
        target: &str,
        call: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, BreakerError<E>> {
        if let Err(error) = self.permit(target) {
            let retry_in = match error {
                TransportError::CircuitOpen { retry_in_ms, .. } => {
                    Duration::from_millis(retry_in_ms)
                }
                _ => Duration::ZERO,
            };
            return Err(BreakerError::Open { retry_in });
        }
        match call() {
            Ok(value) => {
                self.record_success(target);
                Ok(value)
            }
            Err(error) => {
                self.record_failure(target);
                Err(BreakerError::Failed(error))
            }
        }
    }

    /// The state of `target`'s breaker now (`Closed` if it has none yet).
    pub fn state(&self, target: &str) -> BreakerState {
        let now = Instant::now();
        self.lock()
            .get(target)
            .map_or(BreakerState::Closed, |breaker| breaker.state(now))
    }

    /// Every breaker's report, by target name.
    pub fn reports(&self) -> Vec<BreakerReport> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|(target, breaker)| breaker.report(target, now))
            .collect()
    }

    fn with<R>(
        &self,
        target: &str,
        change: impl FnOnce(&mut CircuitBreaker, Instant) -> R,
    ) -> Option<R> {
        let now = Instant::now();
        self.lock()
            .get_mut(target)
            .map(|breaker| change(breaker, now))
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, CircuitBreaker>> {
        // A panic while holding the lock leaves breakers that are still valid.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            window: ms(1000),
            recovery_timeout: ms(500),
        }
    }

    #[test]
    fn opens_after_threshold_failures_within_the_window_only() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(config(), start);
        breaker.record_failure(start);
        breaker.record_failure(start + ms(100));
        // The first failure has left the window: two count, not three.
        breaker.record_failure(start + ms(1000));
        assert_eq!(breaker.state(start + ms(1000)), BreakerState::Closed);
        breaker.record_failure(start + ms(1050));
        assert_eq!(breaker.state(start + ms(1050)), BreakerState::Open);
        assert_eq!(breaker.permit(start + ms(1100)), Err(ms(450)));
    }

    #[test]
    fn half_open_lets_one_trial_through_and_its_outcome_decides() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(config(), start);
        for _ in 0..3 {
            breaker.record_failure(start);
        }
        let trial_at = start + ms(500);
        assert_eq!(breaker.state(trial_at), BreakerState::HalfOpen);
        assert_eq!(breaker.report("db", trial_at + ms(20)).for_ms, 20);
        assert_eq!(breaker.permit(trial_at), Ok(()));
        assert_eq!(
            breaker.permit(trial_at),
            Err(Duration::ZERO),
            "one trial at a time"
        );
        breaker.record_failure(trial_at + ms(10));
        assert_eq!(breaker.state(trial_at + ms(10)), BreakerState::Open);
        assert!(breaker.permit(trial_at + ms(400)).is_err());
        let second_trial = trial_at + ms(510);
        assert_eq!(breaker.permit(second_trial), Ok(()));
        breaker.record_success(second_trial);
        assert_eq!(breaker.state(second_trial), BreakerState::Closed);
        let report = breaker.report("db", second_trial);
        assert_eq!((report.state, report.failures), (BreakerState::Closed, 0));
    }

    #[test]
    fn a_released_trial_may_go_again() {
        let start = Instant::now();
        let mut breaker = CircuitBreaker::new(config(), start);
        for _ in 0..3 {
            breaker.record_failure(start);
        }
        assert_eq!(breaker.permit(start + ms(600)), Ok(()));
        breaker.release();
        assert_eq!(breaker.permit(start + ms(601)), Ok(()));
    }

    #[test]
    fn reports_travel_as_documented() {
        let report = BreakerReport {
            target: "postgres".into(),
            state: BreakerState::HalfOpen,
            for_ms: 1200,
            failures: 0,
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(
            json,
            r#"{"target":"postgres","state":"half_open","for_ms":1200,"failures":0}"#
        );
        let newer: BreakerReport =
            serde_json::from_str(r#"{"target":"x","state":"tripped"}"#).unwrap();
        assert_eq!(newer.state, BreakerState::Unknown);
    }

    #[test]
    fn breakers_call_counts_and_refuses() {
        let breakers = Breakers::new(BreakerConfig {
            failure_threshold: 2,
            window: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(60),
        });
        for _ in 0..2 {
            assert!(matches!(
                breakers.call("cache", || Err::<(), _>("refused")),
                Err(BreakerError::Failed("refused"))
            ));
        }
        let mut called = false;
        let outcome = breakers.call("cache", || {
            called = true;
            Ok::<(), &str>(())
        });
        assert!(matches!(outcome, Err(BreakerError::Open { .. })));
        assert!(!called, "an open breaker does not make the call");
        assert_eq!(breakers.state("cache"), BreakerState::Open);
        assert_eq!(breakers.state("other"), BreakerState::Closed);
        assert_eq!(breakers.reports().len(), 1);
    }
}
