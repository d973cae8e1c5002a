//! Pure readiness and liveness bookkeeping: no I/O, no clock reads.
//!
//! Owns the arithmetic of "when is the next readiness probe due", "has the
//! readiness timeout passed" and "how many liveness failures in a row make an
//! agent hung". The supervisor loop owns the timers and the agent state; it
//! feeds these types the probe results and the current `Instant`.

use std::time::{Duration, Instant};

use crate::manifest::{Liveness, Readiness, ReadinessCheck};

/// The shortest timeout [`ReadinessDeadline::attempt_timeout`] gives a probe.
pub const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// What one liveness result means for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it running: the probe passed, or it failed fewer times in a row
    /// than the limit.
    Alive,
    /// The probe failed `failures` times in a row, at least the limit: the
    /// agent is considered hung and should be killed and restarted.
    Hung { failures: u32 },
}

/// Counts consecutive liveness failures of one running agent instance.
///
/// A new instance (after a restart) gets a new tracker, so failures of a dead
/// instance never count against its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivenessTracker {
    failures_in_a_row: u32,
    limit: u32,
}

impl LivenessTracker {
    /// A tracker that declares the agent hung after `limit` consecutive
    /// failures. A limit of 0 is treated as 1: "hung before any failure"
    /// has no meaning, and killing on the first failure is the closest intent.
    pub fn new(limit: u32) -> LivenessTracker {
        LivenessTracker {
            failures_in_a_row: 0,
            limit: limit.max(1),
        }
    }

    /// The tracker for an agent's `liveness:` settings.
    pub fn for_liveness(liveness: &Liveness) -> LivenessTracker {
        LivenessTracker::new(liveness.failures)
    }

    /// Records one probe result. A success forgets earlier failures, because
    /// only failures *in a row* mean hung; a slow moment is not a hang.
    pub fn record(&mut self, ok: bool) -> Verdict {
        if ok {
            self.failures_in_a_row = 0;
            return Verdict::Alive;
        }
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        if self.failures_in_a_row >= self.limit {
            Verdict::Hung {
                failures: self.failures_in_a_row,
            }
        } else {
            Verdict::Alive
        }
    }

    /// Consecutive failures so far (for status output).
    pub fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }

    /// Consecutive failures that mean hung.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

/// The readiness schedule of one spawned agent instance: when to probe, and
/// when to give up.
///
/// Probes are due at `spawned_at + initial_delay + attempts * interval`: the
/// schedule is anchored at spawn time rather than at the end of the previous
/// attempt, so a slow probe does not push every later one back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessDeadline {
    spawned_at: Instant,
    initial_delay: Duration,
    interval: Duration,
    timeout: Duration,
    /// For `start_period` readiness: ready once running this long.
    start_period: Option<Duration>,
}

impl ReadinessDeadline {
    pub fn new(spawned_at: Instant, readiness: &Readiness) -> ReadinessDeadline {
        let start_period = match &readiness.check {
            ReadinessCheck::StartPeriod(period) => Some(*period),
            ReadinessCheck::Sdk | ReadinessCheck::Probe(_) => None,
        };
        ReadinessDeadline {
            spawned_at,
            initial_delay: readiness.initial_delay,
            interval: readiness.interval,
            timeout: readiness.timeout,
            start_period,
        }
    }

    /// When probe number `attempts` (0-based: the number of attempts already
    /// made) is due. May lie in the past when an attempt ran long; the caller
    /// then probes at once. May lie after [`Self::deadline`]; the caller wakes
    /// at whichever comes first.
    pub fn next_probe_at(&self, attempts: u32) -> Instant {
        let since_first = self.interval.saturating_mul(attempts);
        self.spawned_at + self.initial_delay.saturating_add(since_first)
    }

    /// The moment readiness has failed if the agent is not ready by then.
    pub fn deadline(&self) -> Instant {
        self.spawned_at + self.timeout
    }

    /// True once the readiness timeout has passed (`now` at the deadline counts).
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }

    /// Time left before the deadline (zero once expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline().saturating_duration_since(now)
    }

    /// The timeout to give one probe attempt started at `now`: the interval,
    /// but at least [`MIN_ATTEMPT_TIMEOUT`], and never past the deadline.
    ///
    /// The floor exists because intervals are short (100 ms by default) while
    /// an agent busy starting up may take a few hundred milliseconds to
    /// answer; such an answer must count. Attempts still never overlap: the
    /// caller runs them one after the other, and a long one only makes the
    /// next due at once.
    pub fn attempt_timeout(&self, now: Instant) -> Duration {
        self.remaining(now)
            .min(self.interval.max(MIN_ATTEMPT_TIMEOUT))
    }

    /// For `start_period` readiness: the moment the agent counts as ready if
    /// it is still running. `None` for probe and SDK readiness.
    pub fn ready_at(&self) -> Option<Instant> {
        self.start_period.map(|period| self.spawned_at + period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Probe;

    fn readiness(check: ReadinessCheck) -> Readiness {
        Readiness {
            check,
            timeout: Duration::from_secs(10),
            interval: Duration::from_secs(2),
            initial_delay: Duration::from_millis(500),
        }
    }

    fn tcp() -> ReadinessCheck {
        ReadinessCheck::Probe(Probe::Tcp {
            host: "127.0.0.1".into(),
            port: 7200,
        })
    }

    #[test]
    fn liveness_is_hung_only_after_limit_failures_in_a_row() {
        let mut tracker = LivenessTracker::new(3);
        assert_eq!(tracker.record(false), Verdict::Alive);
        assert_eq!(tracker.record(false), Verdict::Alive);
        assert_eq!(tracker.failures_in_a_row(), 2);
        assert_eq!(tracker.record(false), Verdict::Hung { failures: 3 });
        // Stays hung (and keeps counting) until a success.
        assert_eq!(tracker.record(false), Verdict::Hung { failures: 4 });
    }

    #[test]
    fn liveness_success_resets_the_count() {
        let mut tracker = LivenessTracker::new(3);
        tracker.record(false);
        tracker.record(false);
        assert_eq!(tracker.record(true), Verdict::Alive);
        assert_eq!(tracker.failures_in_a_row(), 0);
        assert_eq!(tracker.record(false), Verdict::Alive);
        assert_eq!(tracker.record(false), Verdict::Alive);
        assert_eq!(tracker.record(false), Verdict::Hung { failures: 3 });
    }

    #[test]
    fn liveness_limit_zero_means_first_failure() {
        let mut tracker = LivenessTracker::new(0);
        assert_eq!(tracker.limit(), 1);
        assert_eq!(tracker.record(true), Verdict::Alive);
        assert_eq!(tracker.record(false), Verdict::Hung { failures: 1 });
    }

    #[test]
    fn liveness_tracker_from_manifest_settings() {
        let liveness = Liveness {
            probe: Probe::Tcp {
                host: "127.0.0.1".into(),
                port: 1,
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            failures: 2,
        };
        let mut tracker = LivenessTracker::for_liveness(&liveness);
        assert_eq!(tracker.record(false), Verdict::Alive);
        assert_eq!(tracker.record(false), Verdict::Hung { failures: 2 });
    }

    #[test]
    fn readiness_probes_are_anchored_at_spawn() {
        let spawned_at = Instant::now();
        let deadline = ReadinessDeadline::new(spawned_at, &readiness(tcp()));
        assert_eq!(
            deadline.next_probe_at(0),
            spawned_at + Duration::from_millis(500)
        );
        assert_eq!(
            deadline.next_probe_at(1),
            spawned_at + Duration::from_millis(2500)
        );
        assert_eq!(
            deadline.next_probe_at(4),
            spawned_at + Duration::from_millis(8500)
        );
        // Past the deadline: still computed, the caller takes the earlier of the two.
        assert_eq!(
            deadline.next_probe_at(5),
            spawned_at + Duration::from_millis(10500)
        );
        assert_eq!(deadline.ready_at(), None);
    }

    #[test]
    fn readiness_expires_at_the_timeout() {
        let spawned_at = Instant::now();
        let deadline = ReadinessDeadline::new(spawned_at, &readiness(tcp()));
        assert!(!deadline.expired(spawned_at));
        assert!(!deadline.expired(spawned_at + Duration::from_millis(9999)));
        assert!(deadline.expired(spawned_at + Duration::from_secs(10)));
        assert!(deadline.expired(spawned_at + Duration::from_secs(11)));
        assert_eq!(
            deadline.remaining(spawned_at + Duration::from_secs(11)),
            Duration::ZERO
        );
    }

    #[test]
    fn attempt_timeout_is_bounded_by_interval_and_deadline() {
        let spawned_at = Instant::now();
        let deadline = ReadinessDeadline::new(spawned_at, &readiness(tcp()));
        // The interval when it is longer than the floor.
        assert_eq!(deadline.attempt_timeout(spawned_at), Duration::from_secs(2));
        // Cut at the deadline.
        assert_eq!(
            deadline.attempt_timeout(spawned_at + Duration::from_millis(9500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            deadline.attempt_timeout(spawned_at + Duration::from_secs(12)),
            Duration::ZERO
        );

        // A short (or zero) interval still gives each attempt the floor.
        for interval in [Duration::ZERO, Duration::from_millis(100)] {
            let mut frequent = readiness(tcp());
            frequent.interval = interval;
            let deadline = ReadinessDeadline::new(spawned_at, &frequent);
            assert_eq!(
                deadline.attempt_timeout(spawned_at + Duration::from_secs(3)),
                MIN_ATTEMPT_TIMEOUT
            );
        }
    }

    #[test]
    fn start_period_readiness_has_a_ready_time() {
        let spawned_at = Instant::now();
        let deadline = ReadinessDeadline::new(
            spawned_at,
            &readiness(ReadinessCheck::StartPeriod(Duration::from_secs(3))),
        );
        assert_eq!(
            deadline.ready_at(),
            Some(spawned_at + Duration::from_secs(3))
        );
        assert_eq!(
            ReadinessDeadline::new(spawned_at, &readiness(ReadinessCheck::Sdk)).ready_at(),
            None
        );
    }
}
