//! Pure heartbeat deadlines of one running agent instance: has it stopped
//! beating for `interval × misses`, or stopped reporting progress for
//! `progress_timeout`? No I/O and no clock reads: callers pass `now`.
//!
//! Owns only this arithmetic. The supervisor loop owns the timer (it sleeps
//! until [`HeartbeatTracker::deadline`]) and decides what a verdict means
//! (kill the process group, restart with a reason naming the misses).

use std::time::{Duration, Instant};

use super::messages::HeartbeatPayload;

/// What the heartbeats of an agent say at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatVerdict {
    /// Beating, and progressing if progress is watched.
    Alive,
    /// No heartbeat for `silent_for`, which is at least `interval × misses`;
    /// `missed` whole intervals have passed without one.
    HeartbeatsMissed {
        /// Whole intervals without a heartbeat (at least `misses`).
        missed: u32,
        /// Time since the last heartbeat (or since the tracker started).
        silent_for: Duration,
    },
    /// Still beating, but `last_progress_ms` has not changed for `stalled_for`
    /// (at least the progress timeout).
    ProgressStalled {
        /// Time since `last_progress_ms` last changed.
        stalled_for: Duration,
    },
}

/// Heartbeat bookkeeping of one agent instance. A restarted agent gets a new
/// tracker, so silence of a dead instance never counts against its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatTracker {
    /// The interval the agent was told to beat at.
    interval: Duration,
    /// Intervals of silence that make it hung.
    misses: u32,
    /// How long progress may stall; `None`: not watched.
    progress_timeout: Option<Duration>,
    /// The last heartbeat (the tracker's start before the first).
    last_beat: Instant,
    /// When `progress_marker` last changed (the start before that).
    last_progress: Instant,
    /// The last `last_progress_ms` seen; progress means it changed.
    progress_marker: Option<u64>,
    /// Heartbeats seen.
    beats: u64,
}

impl HeartbeatTracker {
    /// Starts watching at `started` (usually when the agent reported ready, or
    /// when it was spawned if heartbeats are watched before readiness).
    /// `misses` of 0 is treated as 1. A zero interval is treated as 1 ms.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use supervisor::transport::{HeartbeatTracker, HeartbeatVerdict};
    ///
    /// let start = Instant::now();
    /// let mut tracker = HeartbeatTracker::new(Duration::from_secs(1), 3, None, start);
    /// assert_eq!(tracker.deadline(), start + Duration::from_secs(3));
    /// tracker.record(start + Duration::from_secs(2), None);
    /// assert_eq!(tracker.check(start + Duration::from_secs(4)), HeartbeatVerdict::Alive);
    /// assert!(matches!(
    ///     tracker.check(start + Duration::from_secs(5)),
    ///     HeartbeatVerdict::HeartbeatsMissed { missed: 3, .. }
    /// ));
    /// ```
    pub fn new(
        interval: Duration,
        misses: u32,
        progress_timeout: Option<Duration>,
        started: Instant,
    ) -> HeartbeatTracker {
        HeartbeatTracker {
            interval: interval.max(Duration::from_millis(1)),
            misses: misses.max(1),
            progress_timeout,
            last_beat: started,
            last_progress: started,
            progress_marker: None,
            beats: 0,
        }
    }

    /// Records a heartbeat received at `now`. Progress counts only when the
    /// payload's `last_progress_ms` differs from the previous one; until an
    /// agent reports progress at all, the progress clock runs from `started`.
    pub fn record(&mut self, now: Instant, payload: Option<&HeartbeatPayload>) {
        self.beats += 1;
        if now > self.last_beat {
            self.last_beat = now;
        }
        if let Some(marker) = payload.and_then(|payload| payload.last_progress_ms)
            && self.progress_marker != Some(marker)
        {
            self.progress_marker = Some(marker);
            self.last_progress = self.last_progress.max(now);
        }
    }

    /// The next moment [`Self::check`] can return something other than
    /// `Alive`, unless a heartbeat arrives first. The loop sleeps until then.
    pub fn deadline(&self) -> Instant {
        let silence = self.last_beat + self.interval.saturating_mul(self.misses);
        match self.progress_timeout {
            Some(timeout) => silence.min(self.last_progress + timeout),
            None => silence,
        }
    }

    /// The verdict at `now`. Missed heartbeats win over stalled progress:
    /// they are the stronger statement (the agent is not even beating).
    pub fn check(&self, now: Instant) -> HeartbeatVerdict {
        let silent_for = now.saturating_duration_since(self.last_beat);
        let missed = u32::try_from(silent_for.as_nanos() / self.interval.as_nanos().max(1))
            .unwrap_or(u32::MAX);
        if missed >= self.misses {
            return HeartbeatVerdict::HeartbeatsMissed { missed, silent_for };
        }
        if let Some(timeout) = self.progress_timeout {
            let stalled_for = now.saturating_duration_since(self.last_progress);
            if stalled_for >= timeout {
                return HeartbeatVerdict::ProgressStalled { stalled_for };
            }
        }
        HeartbeatVerdict::Alive
    }

    /// Heartbeats recorded so far.
    pub fn beats(&self) -> u64 {
        self.beats
    }

    /// When the last heartbeat (or the start) was recorded.
    pub fn last_beat(&self) -> Instant {
        self.last_beat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    fn progress(marker: u64) -> HeartbeatPayload {
        HeartbeatPayload {
            last_progress_ms: Some(marker),
            ..HeartbeatPayload::default()
        }
    }

    #[test]
    fn silence_of_interval_times_misses_is_a_miss() {
        let start = Instant::now();
        let mut tracker = HeartbeatTracker::new(ms(100), 3, None, start);
        assert_eq!(tracker.check(start + ms(299)), HeartbeatVerdict::Alive);
        assert_eq!(
            tracker.check(start + ms(300)),
            HeartbeatVerdict::HeartbeatsMissed {
                missed: 3,
                silent_for: ms(300)
            }
        );
        tracker.record(start + ms(250), None);
        assert_eq!(tracker.deadline(), start + ms(550));
        assert_eq!(tracker.check(start + ms(549)), HeartbeatVerdict::Alive);
        assert!(matches!(
            tracker.check(start + ms(900)),
            HeartbeatVerdict::HeartbeatsMissed { missed: 6, .. }
        ));
        assert_eq!(tracker.beats(), 1);
    }

    #[test]
    fn late_or_reordered_beats_never_move_the_clock_back() {
        let start = Instant::now();
        let mut tracker = HeartbeatTracker::new(ms(100), 2, None, start);
        tracker.record(start + ms(150), None);
        tracker.record(start + ms(120), None);
        assert_eq!(tracker.last_beat(), start + ms(150));
    }

    #[test]
    fn progress_must_change_to_count() {
        let start = Instant::now();
        let mut tracker = HeartbeatTracker::new(ms(100), 3, Some(ms(1000)), start);
        assert_eq!(tracker.deadline(), start + ms(300));
        for step in 1..=12 {
            // Beats every 100 ms, always with the same progress marker.
            tracker.record(start + ms(step * 100), Some(&progress(42)));
        }
        // Marker first seen at 100 ms; unchanged since, so stalled at 1100 ms.
        assert_eq!(tracker.deadline(), start + ms(1100));
        assert_eq!(
            tracker.check(start + ms(1200)),
            HeartbeatVerdict::ProgressStalled {
                stalled_for: ms(1100)
            }
        );
        tracker.record(start + ms(1250), Some(&progress(43)));
        assert_eq!(tracker.check(start + ms(1300)), HeartbeatVerdict::Alive);
    }

    #[test]
    fn missed_beats_win_over_stalled_progress() {
        let start = Instant::now();
        let tracker = HeartbeatTracker::new(ms(100), 1, Some(ms(50)), start);
        assert!(matches!(
            tracker.check(start + ms(100)),
            HeartbeatVerdict::HeartbeatsMissed { missed: 1, .. }
        ));
        assert!(matches!(
            tracker.check(start + ms(60)),
            HeartbeatVerdict::ProgressStalled { .. }
        ));
    }

    #[test]
    fn zero_settings_are_clamped() {
        let start = Instant::now();
        let tracker = HeartbeatTracker::new(Duration::ZERO, 0, None, start);
        assert_eq!(tracker.deadline(), start + ms(1));
    }
}
