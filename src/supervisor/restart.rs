//! Restart decisions: policy (`always` / `on-failure` / `never` with success
//! codes), exponential backoff with jitter counted from the last start (an
//! agent that ran longer than its backoff step restarts at once), backoff
//! reset after a long enough run, and the restart intensity limit (more than
//! `max_restarts` within `within` gives up, as in Erlang/OTP).
//!
//! Pure: every function takes `now` and a jitter value; nothing here reads
//! the clock or sleeps. The supervisor's transition code ([`super::lifecycle`])
//! calls it when an agent exits.
//!
//! Does not own which agents restart together (the strategy, applied by the
//! lifecycle), the timer that waits out a delay (the run loop sleeps until
//! the lifecycle's next deadline) or where each agent's [`RestartTracker`]
//! lives (in the lifecycle's record of that agent).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::manifest::{Backoff, RestartMode, RestartPolicy};
use crate::process::Termination;

/// Each delay is scaled by a factor in `[1 - JITTER, 1 + JITTER]`, so agents
/// that crashed together do not all restart in the same instant.
pub const JITTER: f64 = 0.2;

/// What to do with an agent that exited on its own (or was killed as hung).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start it again after `delay`.
    Restart { delay: Duration },
    /// It is done: a success under `on-failure`/`never`.
    Done,
    /// Stop trying; the agent is failed for this reason.
    GiveUp { reason: String },
}

/// The delay before restart number `attempt` (0-based): `initial *
/// multiplier^attempt`, capped at `max`, then scaled by `1 + JITTER * jitter`
/// where `jitter` is in `[-1, 1]` (and capped at `max` again).
///
/// ```
/// use std::time::Duration;
/// use supervisor::manifest::Backoff;
/// use supervisor::supervisor::restart::backoff_delay;
///
/// let backoff = Backoff {
///     initial: Duration::from_secs(1),
///     max: Duration::from_secs(10),
///     multiplier: 2.0,
/// };
/// assert_eq!(backoff_delay(&backoff, 0, 0.0), Duration::from_secs(1));
/// assert_eq!(backoff_delay(&backoff, 3, 0.0), Duration::from_secs(8));
/// // Past the cap, jitter never takes it above `max`.
/// assert_eq!(backoff_delay(&backoff, 9, 1.0), Duration::from_secs(10));
/// ```
pub fn backoff_delay(backoff: &Backoff, attempt: u32, jitter: f64) -> Duration {
    let base =
        backoff.initial.as_secs_f64() * backoff.multiplier.max(1.0).powi(attempt.min(64) as i32);
    let capped = base.min(backoff.max.as_secs_f64());
    let jittered = capped * (1.0 + JITTER * jitter.clamp(-1.0, 1.0));
    Duration::from_secs_f64(jittered.min(backoff.max.as_secs_f64()).max(0.0))
}

/// A run shorter than this is a crash whatever its backoff step: it always
/// waits the step, so an agent dying within a second of each start backs off.
pub const CRASH_WINDOW: Duration = Duration::from_secs(1);

/// How long to wait before restarting an agent whose run lasted `uptime`,
/// given its backoff step `delay`: the backoff counts from the last start,
/// so an agent that stayed up at least `delay` and at least [`CRASH_WINDOW`]
/// (healthy, then killed) restarts at once, while a crash loop (dying sooner)
/// waits the whole step, which grows exponentially up to the cap.
///
/// ```
/// use std::time::Duration;
/// use supervisor::supervisor::restart::wait_before_restart;
///
/// let step = Duration::from_secs(2);
/// // Crashed half a second after its start: waits the whole step.
/// assert_eq!(wait_before_restart(step, Duration::from_millis(500)), step);
/// // Ran for a minute: restarts at once.
/// assert_eq!(wait_before_restart(step, Duration::from_secs(60)), Duration::ZERO);
/// ```
pub fn wait_before_restart(delay: Duration, uptime: Duration) -> Duration {
    if uptime >= delay.max(CRASH_WINDOW) {
        Duration::ZERO
    } else {
        delay
    }
}

/// A small xorshift generator for jitter (no `rand` dependency; jitter needs
/// no cryptographic quality). Seeded explicitly so tests are repeatable.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator started from `seed`; the same seed gives the same values.
    /// The lowest bit is forced on, so a zero seed still works (xorshift
    /// would stay at zero forever).
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    /// Seeded from the clock and the process id.
    pub fn from_entropy() -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        Jitter::new(nanos ^ ((std::process::id() as u64) << 32))
    }

    /// The next value, in `[-1, 1)` (53 random bits), advancing the generator.
    pub fn sample(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// Per-agent restart bookkeeping: the backoff attempt and the recent restarts.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    /// Index of the next backoff step; reset after a run of `reset_after`.
    attempt: u32,
    /// When each restart within the intensity window was decided.
    recent: VecDeque<Instant>,
    /// Restarts over the agent's whole life (for status).
    pub total: u32,
}

impl RestartTracker {
    /// Forgets the recent restarts and the backoff step (an operator started
    /// the agent again); the lifetime total stays.
    pub fn forgive(&mut self) {
        self.attempt = 0;
        self.recent.clear();
    }

    /// Decides what follows an exit. `failed` forces the exit to count as a
    /// failure whatever the code (a hung agent that was killed); `uptime` is
    /// how long the run lasted.
    pub fn on_exit(
        &mut self,
        policy: &RestartPolicy,
        termination: Termination,
        failed: bool,
        uptime: Duration,
        now: Instant,
        jitter: f64,
    ) -> Decision {
        let success = !failed
            && matches!(termination, Termination::Code(code) if policy.success_codes.contains(&code));
        match policy.mode {
            RestartMode::Never if success => return Decision::Done,
            RestartMode::Never => {
                return Decision::GiveUp {
                    reason: format!("{termination} (restart: never)"),
                };
            }
            RestartMode::OnFailure if success => return Decision::Done,
            RestartMode::OnFailure | RestartMode::Always => {}
        }
        if uptime >= policy.reset_after {
            self.attempt = 0;
        }
        if let Some(limit) = policy.max_restarts {
            while self
                .recent
                .front()
                .is_some_and(|at| now.duration_since(*at) >= policy.within)
            {
                self.recent.pop_front();
            }
            if self.recent.len() as u32 >= limit {
                return Decision::GiveUp {
                    reason: format!(
                        "{termination}; it restarted {} times within {:?} (max_restarts: {limit})",
                        self.recent.len(),
                        policy.within
                    ),
                };
            }
            self.recent.push_back(now);
        }
        let delay = backoff_delay(&policy.backoff, self.attempt, jitter);
        // A run that outlasted its step (and a crash) was healthy: it
        // restarts at once and leaves the sequence where it was, so kills
        // seconds apart never grow the backoff; a crash loop advances it.
        if !wait_before_restart(delay, uptime).is_zero() {
            self.attempt = self.attempt.saturating_add(1);
        }
        self.total += 1;
        Decision::Restart { delay }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::GiveUp;

    pub fn policy(mode: RestartMode) -> RestartPolicy {
        RestartPolicy {
            mode,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(30),
                multiplier: 2.0,
            },
            delay: Duration::ZERO,
            max_restarts: Some(5),
            within: Duration::from_secs(60),
            reset_after: Duration::from_secs(10),
            success_codes: vec![0],
            on_give_up: GiveUp::Shutdown,
        }
    }

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let backoff = Backoff {
            initial: ms(100),
            max: ms(1000),
            multiplier: 2.0,
        };
        let delays: Vec<_> = (0..6)
            .map(|attempt| backoff_delay(&backoff, attempt, 0.0))
            .collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(backoff_delay(&backoff, 1000, 0.0), ms(1000));
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_the_cap() {
        let backoff = Backoff {
            initial: ms(100),
            max: ms(1000),
            multiplier: 2.0,
        };
        assert_eq!(backoff_delay(&backoff, 0, 1.0), ms(120));
        assert_eq!(backoff_delay(&backoff, 0, -1.0), ms(80));
        assert_eq!(backoff_delay(&backoff, 9, 1.0), ms(1000));
        let mut jitter = Jitter::new(42);
        let values: Vec<f64> = (0..10_000).map(|_| jitter.sample()).collect();
        assert!(values.iter().all(|value| (-1.0..=1.0).contains(value)));
        assert!(
            values.iter().any(|value| *value < -0.9) && values.iter().any(|value| *value > 0.9)
        );
    }

    #[test]
    fn policies_decide_by_exit_code() {
        let now = Instant::now();
        let code = Termination::Code;
        let mut tracker = RestartTracker::default();
        let always = policy(RestartMode::Always);
        assert!(matches!(
            tracker.on_exit(&always, code(0), false, ms(1), now, 0.0),
            Decision::Restart { .. }
        ));
        let mut on_failure = policy(RestartMode::OnFailure);
        on_failure.success_codes = vec![0, 3];
        assert_eq!(
            tracker.on_exit(&on_failure, code(3), false, ms(1), now, 0.0),
            Decision::Done
        );
        assert!(matches!(
            tracker.on_exit(&on_failure, code(3), true, ms(1), now, 0.0),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            tracker.on_exit(
                &on_failure,
                Termination::Signaled(9),
                false,
                ms(1),
                now,
                0.0
            ),
            Decision::Restart { .. }
        ));
        let never = policy(RestartMode::Never);
        assert_eq!(
            tracker.on_exit(&never, code(0), false, ms(1), now, 0.0),
            Decision::Done
        );
        assert!(matches!(
            tracker.on_exit(&never, code(1), false, ms(1), now, 0.0),
            Decision::GiveUp { .. }
        ));
    }

    #[test]
    fn intensity_limit_gives_up_on_the_restart_past_the_limit() {
        let start = Instant::now();
        let mut policy = policy(RestartMode::Always);
        policy.max_restarts = Some(3);
        policy.within = Duration::from_secs(10);
        let mut tracker = RestartTracker::default();
        for second in 0..3 {
            let now = start + Duration::from_secs(second);
            assert!(matches!(
                tracker.on_exit(&policy, Termination::Code(1), false, ms(1), now, 0.0),
                Decision::Restart { .. }
            ));
        }
        let now = start + Duration::from_secs(3);
        assert!(matches!(
            tracker.on_exit(&policy, Termination::Code(1), false, ms(1), now, 0.0),
            Decision::GiveUp { .. }
        ));
        // Once the oldest restarts leave the window, restarting is allowed again.
        let later = start + Duration::from_secs(11);
        assert!(matches!(
            tracker.on_exit(&policy, Termination::Code(1), false, ms(1), later, 0.0),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn an_agent_that_outlived_its_step_restarts_at_once_a_crash_loop_waits() {
        assert_eq!(wait_before_restart(ms(100), ms(2000)), Duration::ZERO);
        assert_eq!(wait_before_restart(ms(1000), ms(1000)), Duration::ZERO);
        assert_eq!(wait_before_restart(ms(1600), ms(1599)), ms(1600));
        assert_eq!(wait_before_restart(ms(1600), ms(50)), ms(1600));
        // Inside the crash window the step is waited even when shorter.
        assert_eq!(wait_before_restart(ms(100), ms(999)), ms(100));
    }

    #[test]
    fn backoff_resets_after_a_long_run() {
        let now = Instant::now();
        let policy = policy(RestartMode::Always);
        let mut tracker = RestartTracker::default();
        let delays: Vec<_> = [ms(1), ms(1), ms(1), Duration::from_secs(10), ms(1)]
            .into_iter()
            .map(|uptime| tracker.on_exit(&policy, Termination::Code(1), false, uptime, now, 0.0))
            .collect();
        // The long run resets the sequence and, having outlasted its step,
        // does not advance it: the next crash waits the first step again.
        let expected =
            [ms(100), ms(200), ms(400), ms(100), ms(100)].map(|delay| Decision::Restart { delay });
        assert_eq!(delays, expected);
    }

    #[test]
    fn kills_seconds_apart_of_a_healthy_agent_never_grow_its_backoff() {
        let now = Instant::now();
        let policy = RestartPolicy {
            max_restarts: None,
            ..policy(RestartMode::Always)
        };
        let mut tracker = RestartTracker::default();
        for _ in 0..10 {
            let Decision::Restart { delay } =
                tracker.on_exit(&policy, Termination::Signaled(9), false, ms(2000), now, 0.0)
            else {
                panic!("restarted");
            };
            assert_eq!(delay, ms(100));
            assert_eq!(wait_before_restart(delay, ms(2000)), Duration::ZERO);
        }
        // A crash loop after them still backs off from the first step.
        let delays: Vec<_> = (0..3)
            .map(|_| tracker.on_exit(&policy, Termination::Code(1), false, ms(300), now, 0.0))
            .collect();
        let expected = [ms(100), ms(200), ms(400)].map(|delay| Decision::Restart { delay });
        assert_eq!(delays, expected);
    }
}
