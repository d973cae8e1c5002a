//! What the agents themselves report through the SDK, as the lifecycle sees
//! it: READY for `readiness: sdk`, heartbeats (one [`HeartbeatTracker`] per
//! running instance: missed heartbeats or stalled progress kill the process
//! group and restart the agent under its policy), and reported errors (the
//! `on_error` policy: per-severity actions and the error-rate rule).
//!
//! A child module of `lifecycle` so it can reach the agent records; pure like
//! its parent (every function takes `now`). Does not own the sockets (that is
//! `transport`, bridged by `supervisor::fabric`).

use std::time::Duration;

use tokio::time::Instant;

use super::{Lifecycle, Phase, StopIntent, format_duration};
use crate::manifest::{ErrorAction, ReadinessCheck};
use crate::supervisor::event::{Action, AgentId, HeartbeatPayload, Severity};
use crate::transport::{HeartbeatTracker, HeartbeatVerdict};

/// `1.5 s` style, for reasons people read.
fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

impl Lifecycle {
    /// Agents are supervised through the agent endpoint: `readiness: sdk`
    /// waits for READY (instead of a 1 s start period) and SDK agents are
    /// watched for missed heartbeats. Call before [`Lifecycle::begin`].
    pub fn enable_fabric(&mut self) {
        self.fabric = true;
    }

    /// A new tracker for the current run of `agent`, starting at `now`.
    fn new_tracker(&self, agent: AgentId, now: Instant) -> HeartbeatTracker {
        let heartbeat = &self.agents[agent].spec.agent.heartbeat;
        HeartbeatTracker::new(
            heartbeat.interval,
            heartbeat.misses,
            heartbeat.progress_timeout,
            now.into_std(),
        )
    }

    /// Forgets the heartbeats, errors and degradation of the previous run.
    pub(super) fn reset_reports(&mut self, agent: AgentId) {
        let record = &mut self.agents[agent];
        if let Some(process) = record.phase.process_mut() {
            process.heartbeat = None;
        }
        record.last_heartbeat = None;
        record.error_times.clear();
        record.degraded = None;
    }

    /// Whether SDK reports of `agent` still matter: it runs and nobody
    /// decided to stop it yet.
    fn watched(&self, agent: AgentId) -> bool {
        self.agents[agent].phase.running_unstopped()
    }

    /// `ReportedReady`: readiness passes, for `readiness: sdk` only.
    pub(super) fn on_reported_ready(
        &mut self,
        agent: AgentId,
        run: u64,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.current(agent, run)
            && matches!(self.agents[agent].phase, Phase::Starting { stop: None, .. })
            && self.agents[agent].spec.agent.readiness.check == ReadinessCheck::Sdk
        {
            self.become_ready(agent, now, actions);
        }
    }

    /// `HeartbeatReceived`: feeds the run's tracker (created at the first
    /// heartbeat for agents whose readiness is not `sdk`: an agent that never
    /// uses the SDK is never killed for silence) and keeps the payload.
    pub(super) fn on_heartbeat(
        &mut self,
        agent: AgentId,
        run: u64,
        payload: Option<HeartbeatPayload>,
        now: Instant,
    ) {
        if !self.current(agent, run) || !self.watched(agent) {
            return;
        }
        let untracked = self.agents[agent]
            .phase
            .process()
            .is_some_and(|process| process.heartbeat.is_none());
        if untracked {
            let tracker = self.new_tracker(agent, now);
            if let Some(process) = self.agents[agent].phase.process_mut() {
                process.heartbeat = Some(tracker);
            }
        }
        let record = &mut self.agents[agent];
        if let Some(tracker) = record
            .phase
            .process_mut()
            .and_then(|process| process.heartbeat.as_mut())
        {
            tracker.record(now.into_std(), payload.as_ref());
        }
        self.record_idle(agent, payload.as_ref(), now);
        let record = &mut self.agents[agent];
        record.last_heartbeat = Some((now, payload));
    }

    /// The heartbeat deadlines the loop must wake up for.
    pub(super) fn heartbeat_deadline(&self) -> Option<Instant> {
        (0..self.agents.len())
            .filter(|agent| self.watched(*agent))
            .filter_map(|agent| self.agents[agent].phase.process()?.heartbeat.as_ref())
            .map(|tracker| Instant::from_std(tracker.deadline()))
            .min()
    }

    /// On a deadline: an agent whose heartbeats stopped (hung, deadlocked,
    /// SIGSTOPped) or whose progress stalled is killed (SIGKILL to its
    /// process group: a stopped process never acts on SIGTERM) and restarted
    /// under its policy.
    pub(super) fn check_heartbeats(&mut self, now: Instant, actions: &mut Vec<Action>) {
        for agent in 0..self.agents.len() {
            if !self.watched(agent) {
                continue;
            }
            let record = &mut self.agents[agent];
            let Some(tracker) = record
                .phase
                .process()
                .and_then(|process| process.heartbeat.as_ref())
            else {
                continue;
            };
            if Instant::from_std(tracker.deadline()) > now {
                continue;
            }
            let heartbeat = &record.spec.agent.heartbeat;
            let (reason, cause) = match tracker.check(now.into_std()) {
                HeartbeatVerdict::Alive => continue,
                HeartbeatVerdict::HeartbeatsMissed { missed, silent_for } => (
                    format!(
                        "missed {missed} heartbeats (silent {}, interval {} × {})",
                        seconds(silent_for),
                        format_duration(heartbeat.interval),
                        heartbeat.misses
                    ),
                    "heartbeat",
                ),
                HeartbeatVerdict::ProgressStalled { stalled_for } => (
                    format!(
                        "no progress for {} (progress_timeout {})",
                        seconds(stalled_for),
                        format_duration(heartbeat.progress_timeout.unwrap_or_default())
                    ),
                    "progress",
                ),
            };
            tracing::warn!(
                agent = record.name(),
                "hung: {reason}; killing its process group"
            );
            if let Some(process) = record.phase.process_mut() {
                process.heartbeat = None;
            }
            record.phase.set_stop(StopIntent::Restart { reason, cause });
            actions.push(Action::CancelWatchers { agent });
        }
    }

    /// `ErrorReported`: applies the agent's `on_error` policy.
    pub(super) fn on_error_reported(
        &mut self,
        agent: AgentId,
        run: u64,
        severity: Severity,
        message: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if !self.current(agent, run) || !self.watched(agent) {
            return;
        }
        let level = severity;
        let record = &mut self.agents[agent];
        let policy = &record.spec.agent.on_error;
        let mut decided = policy
            .on_severity
            .iter()
            .find(|(wanted, _)| *wanted == level)
            .map(|(_, action)| (*action, format!("{severity} error reported: {message}")));
        if let Some(rate) = &policy.rate
            && level >= rate.severity
        {
            record.error_times.push_back(now);
            while record
                .error_times
                .front()
                .is_some_and(|at| now.duration_since(*at) > rate.within)
            {
                record.error_times.pop_front();
            }
            if record.error_times.len() >= rate.count as usize && decided.is_none() {
                record.error_times.clear();
                decided = Some((
                    rate.action,
                    format!(
                        "{} errors of severity {:?} or worse within {}",
                        rate.count,
                        rate.severity,
                        format_duration(rate.within)
                    )
                    .to_lowercase(),
                ));
            }
        }
        match decided {
            None => {}
            Some((ErrorAction::Degraded, reason)) => {
                if record.degraded.is_none() {
                    tracing::warn!(agent = record.name(), "degraded: {reason}");
                }
                record.degraded = Some(reason);
            }
            Some((ErrorAction::Restart, reason)) => {
                tracing::warn!(agent = record.name(), "{reason}; restarting (on_error)");
                if let Some(process) = record.phase.process_mut() {
                    process.heartbeat = None;
                }
                record.phase.set_stop(StopIntent::Restart {
                    reason,
                    cause: "error",
                });
                actions.push(Action::CancelWatchers { agent });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::super::tests::{agent, ms};
    use super::*;
    use crate::manifest::{ErrorPolicy, Strategy};
    use crate::supervisor::event::Event;
    use crate::supervisor::lifecycle::AgentSpec;
    use crate::supervisor::restart::Jitter;
    use crate::supervisor::state::AgentState;

    fn sdk_lifecycle(now: Instant) -> Lifecycle {
        let mut worker = agent("worker", &[]);
        worker.readiness.check = ReadinessCheck::Sdk;
        worker.heartbeat.interval = ms(100);
        worker.heartbeat.misses = 3;
        worker.on_error = ErrorPolicy {
            on_severity: vec![(Severity::Fatal, ErrorAction::Restart)],
            rate: None,
        };
        let mut lifecycle = Lifecycle::new(
            vec![AgentSpec {
                agent: worker,
                remote: false,
            }],
            Strategy::OneForOne,
            false,
            now,
            Jitter::new(1),
        );
        lifecycle.enable_fabric();
        lifecycle.begin(now);
        lifecycle.apply(
            Event::Spawned {
                agent: 0,
                run: 1,
                pid: 42,
            },
            now,
        );
        lifecycle
    }

    fn killed(actions: &[Action]) -> bool {
        actions.iter().any(|action| {
            matches!(
                action,
                Action::Signal {
                    signal: Signal::SIGKILL,
                    pid: 42,
                    ..
                }
            )
        })
    }

    #[test]
    fn sdk_readiness_waits_for_ready_and_silence_kills_the_group() {
        let start = Instant::now();
        let mut lifecycle = sdk_lifecycle(start);
        // No start-period fallback, and no heartbeat deadline before the
        // first heartbeat (a Python agent importing for seconds is not hung):
        // the readiness timeout (30 s) bounds the start.
        assert_eq!(lifecycle.next_deadline(), Some(start + ms(30_000)));
        assert!(!killed(
            &lifecycle.apply(Event::DeadlineReached, start + ms(1_000))
        ));
        assert_eq!(lifecycle.state(0), AgentState::Starting);
        lifecycle.apply(
            Event::HeartbeatReceived {
                agent: 0,
                run: 1,
                payload: None,
            },
            start + ms(50),
        );
        lifecycle.apply(Event::ReportedReady { agent: 0, run: 1 }, start + ms(60));
        assert_eq!(lifecycle.state(0), AgentState::Ready);
        // A stale run's heartbeat changes nothing.
        lifecycle.apply(
            Event::HeartbeatReceived {
                agent: 0,
                run: 0,
                payload: None,
            },
            start + ms(300),
        );
        assert_eq!(lifecycle.next_deadline(), Some(start + ms(350)));
        assert!(!killed(
            &lifecycle.apply(Event::DeadlineReached, start + ms(349))
        ));
        let actions = lifecycle.apply(Event::DeadlineReached, start + ms(350));
        assert!(killed(&actions), "{actions:?}");
        assert_eq!(lifecycle.state(0), AgentState::Stopping);
        // No heartbeat deadline any more while it is being killed.
        assert_eq!(lifecycle.next_deadline(), None);
        lifecycle.apply(
            Event::Exited {
                agent: 0,
                run: 1,
                termination: crate::process::Termination::Signaled(9),
            },
            start + ms(360),
        );
        assert_eq!(lifecycle.state(0), AgentState::BackingOff);
        let status = &lifecycle.snapshot().agents[0];
        assert!(
            status
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("missed 3 heartbeats"),
            "{status:?}"
        );
        assert_eq!(status.restarts_by_cause.get("heartbeat"), Some(&1));
    }

    #[test]
    fn a_fatal_error_restarts_under_on_error() {
        let start = Instant::now();
        let mut lifecycle = sdk_lifecycle(start);
        lifecycle.apply(Event::ReportedReady { agent: 0, run: 1 }, start);
        let calm = lifecycle.apply(
            Event::ErrorReported {
                agent: 0,
                run: 1,
                severity: Severity::Error,
                message: "slow".into(),
            },
            start,
        );
        assert!(!killed(&calm));
        let actions = lifecycle.apply(
            Event::ErrorReported {
                agent: 0,
                run: 1,
                severity: Severity::Fatal,
                message: "broken".into(),
            },
            start,
        );
        assert!(killed(&actions), "{actions:?}");
    }
}
