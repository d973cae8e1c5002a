//! When the next readiness probe runs: [`next_probe_delay`].
//!
//! Owns the readiness probe schedule: probes start fast and slow down as the
//! wait grows, so an agent that opens its port is seen within a few ms of
//! doing so, while one that takes seconds is not hammered. Does not own the
//! probing itself ([`crate::health::probe`]) or the readiness deadline (the
//! supervisor's lifecycle).
//!
//! The delay is a fixed fraction of the time already spent probing
//! ([`LATENESS_FRACTION`]), between [`FIRST_PROBE_DELAY`] and the agent's
//! configured interval. So readiness is seen at most ~5 % (and at least
//! 5 ms) after the port opens until the delay reaches the interval, which
//! at the default 100 ms interval happens after 2 s of waiting. A fixed
//! interval instead makes every hop of a dependency chain pay half an
//! interval on average (issue 18: ~29 ms per hop at 100 ms).
//!
//! Cost: a refused loopback connect is a few µs of kernel time, and an
//! agent ready after 200 ms is probed ~35 times instead of 3; after 1 s,
//! ~67 times instead of 11; after that, once per interval as before.
//! Many agents waiting at once share a budget ([`shared_floor`]): 500
//! agents probed every 5 ms would be 100,000 probes a second on the
//! supervisor's one runtime thread (issue 18's 500-agent start took 18 s).

use std::time::Duration;

/// The shortest wait between two probes of one agent.
pub const FIRST_PROBE_DELAY: Duration = Duration::from_millis(5);

/// The delay grows as this fraction (1/20) of the time already spent waiting.
pub const LATENESS_FRACTION: u32 = 20;

/// How long to wait before the next readiness probe, `waited` after the first
/// one, for an agent whose configured probe interval is `interval`.
///
/// Never longer than `interval` (the manifest's promise) and never shorter
/// than `FIRST_PROBE_DELAY` (5 ms) unless `interval` itself is shorter.
///
/// ```
/// use std::time::Duration;
/// use supervisor::health::next_probe_delay;
///
/// let interval = Duration::from_secs(1);
/// // Fast at first ...
/// assert_eq!(next_probe_delay(Duration::ZERO, interval), Duration::from_millis(5));
/// // ... a twentieth of the time waited so far ...
/// assert_eq!(next_probe_delay(Duration::from_secs(4), interval), Duration::from_millis(200));
/// // ... and never longer than the interval.
/// assert_eq!(next_probe_delay(Duration::from_secs(60), interval), interval);
/// ```
pub fn next_probe_delay(waited: Duration, interval: Duration) -> Duration {
    (waited / LATENESS_FRACTION)
        .max(FIRST_PROBE_DELAY)
        .min(interval)
}

/// The probes of all agents waiting at once stay under this many a second.
pub const PROBES_PER_SECOND: u32 = 2_000;

/// The shortest wait between two probes of one agent while `watching`
/// agents wait for readiness at once: [`FIRST_PROBE_DELAY`] for up to ten
/// of them, then growing with their number so that together they stay
/// under [`PROBES_PER_SECOND`].
pub fn shared_floor(watching: usize) -> Duration {
    let spread =
        Duration::from_secs(1) * u32::try_from(watching).unwrap_or(u32::MAX) / PROBES_PER_SECOND;
    spread.max(FIRST_PROBE_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn many_waiting_agents_share_a_probe_budget() {
        assert_eq!(shared_floor(1), FIRST_PROBE_DELAY);
        assert_eq!(shared_floor(10), FIRST_PROBE_DELAY);
        assert_eq!(shared_floor(100), ms(50));
        assert_eq!(shared_floor(500), ms(250));
    }

    /// Probe times (ms after the first probe) up to `until`.
    fn schedule(interval: Duration, until: Duration) -> Vec<Duration> {
        let mut waited = Duration::ZERO;
        let mut times = vec![waited];
        while waited < until {
            waited += next_probe_delay(waited, interval);
            times.push(waited);
        }
        times
    }

    #[test]
    fn starts_fast_then_backs_off_to_the_interval() {
        assert_eq!(next_probe_delay(Duration::ZERO, ms(100)), ms(5));
        assert_eq!(next_probe_delay(ms(50), ms(100)), ms(5));
        assert_eq!(next_probe_delay(ms(400), ms(100)), ms(20));
        assert_eq!(next_probe_delay(ms(1000), ms(100)), ms(50));
        assert_eq!(next_probe_delay(ms(2000), ms(100)), ms(100));
        assert_eq!(next_probe_delay(ms(60_000), ms(100)), ms(100));
    }

    #[test]
    fn never_exceeds_a_short_interval() {
        assert_eq!(next_probe_delay(Duration::ZERO, ms(2)), ms(2));
        assert_eq!(next_probe_delay(ms(10_000), ms(2)), ms(2));
    }

    #[test]
    fn the_delay_only_grows() {
        let times = schedule(ms(100), Duration::from_secs(10));
        let gaps: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
        assert!(gaps.windows(2).all(|pair| pair[0] <= pair[1]), "{gaps:?}");
        assert_eq!(gaps.last(), Some(&ms(100)));
    }

    /// An agent whose port opens at `ready` (after the first probe) is seen
    /// at the first probe at or after it: how late is that, at most?
    fn worst_lateness(interval: Duration, ready_until: Duration) -> Duration {
        let times = schedule(interval, ready_until + interval);
        let mut worst = Duration::ZERO;
        let mut ready = Duration::ZERO;
        while ready <= ready_until {
            let seen = times
                .iter()
                .find(|&&time| time >= ready)
                .expect("schedule reaches past ready");
            worst = worst.max(*seen - ready);
            ready += ms(1);
        }
        worst
    }

    #[test]
    fn readiness_is_seen_within_a_few_ms_early_and_a_twentieth_later() {
        // Default 100 ms interval: an agent ready within 100 ms is seen at
        // most one 5 ms step late, one ready after 200 ms at most ~10 ms late.
        assert!(worst_lateness(ms(100), ms(100)) <= ms(5));
        assert!(worst_lateness(ms(100), ms(200)) <= ms(11));
        assert!(worst_lateness(ms(100), ms(1000)) <= ms(51));
        // Past 2 s it is the configured interval, as before.
        assert!(worst_lateness(ms(100), ms(5000)) <= ms(100));
    }

    #[test]
    fn probe_counts_stay_modest() {
        // Ready after 200 ms: ~35 probes; after 1 s: ~67; after 10 s, the
        // interval dominates: ~163, against 101 at a fixed 100 ms.
        let count = |until| schedule(ms(100), until).len();
        assert!(count(ms(200)) <= 40, "{}", count(ms(200)));
        assert!(count(ms(1000)) <= 70, "{}", count(ms(1000)));
        assert!(count(ms(10_000)) <= 170, "{}", count(ms(10_000)));
    }
}
