//! A run from start to exit: spawned, ready (readiness probe, start
//! period), liveness results, the timers of `Starting` and `Stopping`, and
//! where an exit leads given why the agent was stopped.
//!
//! Part of [`super::Lifecycle`]; pure like it. What follows an exit nobody
//! asked for is `restarting.rs`; the order of stops is `stopping.rs`.

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{
    DIAGNOSIS_WAIT, Lifecycle, Mode, Phase, Process, SDK_FALLBACK_START_PERIOD, StopIntent,
    format_duration,
};
use crate::manifest::ReadinessCheck;
use crate::process::Termination;
use crate::supervisor::event::{Action, AgentId, RemoteRun};
use crate::supervisor::state::AgentState;

/// An agent of another host reported not ready is probed again after this
/// long if no report of it being ready came first.
const REMOTE_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl Lifecycle {
    /// Starts a new run of `agent` (from `Pending` or `BackingOff`).
    pub(super) fn start(&mut self, agent: AgentId, now: Instant, actions: &mut Vec<Action>) {
        let readiness = self.agents[agent].spec.agent.readiness.clone();
        let started = Phase::Starting {
            process: Process::new(now),
            ready_deadline: Some(now + readiness.timeout),
            ready_at: None,
            diagnosing: false,
            stop: None,
        };
        if self.transition(agent, started).is_none() {
            return;
        }
        let record = &mut self.agents[agent];
        record.run += 1;
        record.own_exit = None;
        let run = record.run;
        self.reset_reports(agent);
        let record = &self.agents[agent];
        match (record.spec.remote, run) {
            (true, _) => tracing::info!(agent = record.name(), "probing (on another host)"),
            (false, 1) => tracing::info!(agent = record.name(), "starting"),
            (false, _) => tracing::info!(agent = record.name(), "starting (run {run})"),
        }
        if !record.spec.remote {
            actions.push(Action::Spawn { agent, run });
        }
        match readiness.check {
            ReadinessCheck::Probe(_) => actions.push(Action::WatchReadiness { agent, run }),
            // Nothing to observe on another host without a probe.
            _ if record.spec.remote => self.become_ready(agent, now, actions),
            // Armed by `Spawned`, once the process exists.
            ReadinessCheck::StartPeriod(_) | ReadinessCheck::Sdk => {}
        }
    }

    /// `Spawned`: the pid is known; a start period counts from now.
    pub(super) fn on_spawned(&mut self, agent: AgentId, pid: u32, now: Instant) {
        let fabric = self.fabric;
        let record = &mut self.agents[agent];
        let check = record.spec.agent.readiness.check.clone();
        if let Some(process) = record.phase.process_mut() {
            process.pid = Some(pid);
        }
        if let Phase::Starting { ready_at, .. } = &mut record.phase {
            match check {
                ReadinessCheck::StartPeriod(period) => *ready_at = Some(now + period),
                ReadinessCheck::Sdk if fabric => {}
                ReadinessCheck::Sdk => *ready_at = Some(now + SDK_FALLBACK_START_PERIOD),
                ReadinessCheck::Probe(_) => {}
            }
        }
    }

    /// `SpawnFailed`: it cannot run (or, shutting down, it simply stops).
    pub(super) fn on_spawn_failed(
        &mut self,
        agent: AgentId,
        error: String,
        actions: &mut Vec<Action>,
    ) {
        if let Phase::Starting { stop, .. } = &self.agents[agent].phase {
            actions.push(Action::CancelWatchers { agent });
            if *stop == Some(StopIntent::Shutdown) {
                self.transition(agent, Phase::Stopped);
            } else {
                self.fail(agent, format!("cannot be started: {error}"), actions);
            }
        }
    }

    /// `Diagnosed`: the words for a missed readiness deadline; it is killed
    /// and restarted under its policy.
    pub(super) fn on_diagnosed(&mut self, agent: AgentId, text: String) {
        let timeout = self.agents[agent].spec.agent.readiness.timeout;
        if let Phase::Starting {
            diagnosing,
            ready_deadline,
            stop,
            ..
        } = &mut self.agents[agent].phase
            && *diagnosing
            && stop.is_none()
        {
            *diagnosing = false;
            *ready_deadline = None;
            *stop = Some(StopIntent::Restart {
                reason: format!("not ready within {}: {text}", format_duration(timeout)),
                cause: "readiness",
            });
        }
    }

    pub(super) fn become_ready(&mut self, agent: AgentId, now: Instant, actions: &mut Vec<Action>) {
        let Phase::Starting { process, .. } = &self.agents[agent].phase else {
            return;
        };
        let process = process.clone();
        let since = process.since;
        let ready = Phase::Ready {
            process,
            liveness_failures: 0,
            stop: None,
        };
        if self.transition(agent, ready).is_none() {
            return;
        }
        let record = &mut self.agents[agent];
        record.first_ready.get_or_insert(now);
        let took = now.duration_since(since);
        record.time_to_ready = Some(took);
        tracing::info!(agent = record.name(), "ready in {}", format_duration(took));
        if !record.spec.remote && record.spec.agent.liveness.is_some() {
            actions.push(Action::WatchLiveness {
                agent,
                run: record.run,
            });
        }
    }

    /// `LivenessProbed`: enough failures in a row and it is hung: killed and
    /// restarted under its policy.
    pub(super) fn on_liveness(
        &mut self,
        agent: AgentId,
        result: Result<(), String>,
        actions: &mut Vec<Action>,
    ) {
        let record = &mut self.agents[agent];
        let Some(liveness) = &record.spec.agent.liveness else {
            return;
        };
        let Phase::Ready {
            liveness_failures,
            stop,
            ..
        } = &mut record.phase
        else {
            return;
        };
        if stop.is_some() {
            return;
        }
        match result {
            Ok(()) => *liveness_failures = 0,
            Err(error) => {
                *liveness_failures += 1;
                let failures = *liveness_failures;
                tracing::warn!(agent = %record.spec.agent.name, failures, %error, "liveness probe failed");
                if failures >= liveness.failures.max(1) {
                    let reason =
                        format!("hung: liveness probe failed {failures} times in a row ({error})");
                    *stop = Some(StopIntent::Restart {
                        reason,
                        cause: "liveness",
                    });
                    actions.push(Action::CancelWatchers { agent });
                }
            }
        }
    }

    /// `DeadlineReached`: every timer that is due fires.
    pub(super) fn on_deadlines(&mut self, now: Instant, actions: &mut Vec<Action>) {
        self.check_heartbeats(now, actions);
        self.check_idle(now, actions);
        let due = |deadline: Option<Instant>| deadline.is_some_and(|at| at <= now);
        for agent in 0..self.agents.len() {
            match &self.agents[agent].phase {
                Phase::Starting {
                    ready_deadline,
                    stop: None,
                    ..
                } if due(*ready_deadline) => self.readiness_missed(agent, now, actions),
                Phase::Starting {
                    ready_at,
                    stop: None,
                    ..
                } if due(*ready_at) => self.become_ready(agent, now, actions),
                Phase::BackingOff { until } if *until <= now => {
                    if self.dependencies_ready(agent) {
                        self.start(agent, now, actions);
                    } else {
                        self.transition(agent, Phase::Pending);
                    }
                }
                Phase::Stopping { kill_at, .. } if due(*kill_at) => {
                    let record = &mut self.agents[agent];
                    if let Phase::Stopping {
                        process, kill_at, ..
                    } = &mut record.phase
                    {
                        *kill_at = None;
                        if let Some(pid) = process.pid {
                            tracing::warn!(
                                agent = %record.spec.agent.name,
                                "did not stop within its grace; sending SIGKILL"
                            );
                            actions.push(Action::Signal {
                                agent,
                                run: record.run,
                                pid,
                                signal: Signal::SIGKILL,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The readiness deadline of a starting agent passed: an agent of
    /// another host fails; a local one is first diagnosed (what does it
    /// listen on?), then killed and tried again under its restart policy.
    fn readiness_missed(&mut self, agent: AgentId, now: Instant, actions: &mut Vec<Action>) {
        let record = &mut self.agents[agent];
        let reason = format!(
            "not ready within {}",
            format_duration(record.spec.agent.readiness.timeout)
        );
        let probed = matches!(record.spec.agent.readiness.check, ReadinessCheck::Probe(_));
        let remote = record.spec.remote;
        let run = record.run;
        actions.push(Action::CancelWatchers { agent });
        let Phase::Starting {
            process,
            ready_deadline,
            diagnosing,
            stop,
            ..
        } = &mut record.phase
        else {
            return;
        };
        *ready_deadline = None;
        if remote {
            self.fail(agent, reason, actions);
        } else if let (Some(pid), false, true) = (process.pid, *diagnosing, probed) {
            // Say what it listens on before it is killed; if the answer
            // does not come, it is killed anyway.
            *diagnosing = true;
            *ready_deadline = Some(now + DIAGNOSIS_WAIT);
            actions.push(Action::Diagnose { agent, run, pid });
        } else {
            *diagnosing = false;
            // Killed and tried again under its restart policy
            // (model-loading agents may miss a first deadline).
            *stop = Some(StopIntent::Restart {
                reason,
                cause: "readiness",
            });
        }
    }

    /// `Exited`: where the exit leads depends on why the agent was stopped;
    /// an exit nobody asked for goes to the restart policy.
    pub(super) fn on_exit(
        &mut self,
        agent: AgentId,
        termination: Termination,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let record = &mut self.agents[agent];
        let (process, intent) = match &mut record.phase {
            Phase::Starting { process, stop, .. } | Phase::Ready { process, stop, .. } => {
                (process.clone(), stop.take())
            }
            Phase::Stopping {
                process, intent, ..
            } => (process.clone(), Some(intent.clone())),
            // No process of this run (an exit reported twice): nothing to do.
            _ => return,
        };
        let decided = matches!(record.phase, Phase::Starting { .. } | Phase::Ready { .. });
        record.own_exit = intent.is_none().then_some(termination);
        actions.push(Action::CancelWatchers { agent });
        tracing::info!(agent = record.name(), "{termination}");
        if let (true, Some(intent)) = (decided, &intent) {
            // Its stop was decided but not signalled yet (it waited for its
            // dependents or its pid): the exit completes that stop, so it
            // leaves through `Stopping` like any other (found by the
            // property tests: `Ready -> Pending` is no transition).
            let stopping = Phase::Stopping {
                process: process.clone(),
                intent: intent.clone(),
                kill_at: None,
            };
            self.transition(agent, stopping);
        }
        let running = self.mode == Mode::Running;
        let record = &mut self.agents[agent];
        match intent {
            Some(StopIntent::Shutdown) => {
                record.reason = Some(format!("{termination} (stopped)"));
                self.transition(agent, Phase::Stopped);
            }
            Some(StopIntent::Requeue) if running => {
                record.reason = Some(format!("{termination} (restarted with a dependency)"));
                record.count_restart("dependency");
                self.transition(agent, Phase::Pending);
            }
            Some(StopIntent::Replace { reason, cause, .. }) if running => {
                record.reason = Some(reason);
                record.count_restart(cause);
                self.transition(agent, Phase::Pending);
            }
            Some(StopIntent::Requeue | StopIntent::Replace { .. }) => {
                self.transition(agent, Phase::Stopped);
            }
            Some(StopIntent::Operator) => {
                record.reason = Some(format!("stopped by operator ({termination})"));
                self.transition(agent, Phase::Stopped);
            }
            Some(StopIntent::Idle { reason }) if running => {
                record.reason = Some(reason);
                self.transition(agent, Phase::Idle);
            }
            Some(StopIntent::Idle { .. }) => {
                self.transition(agent, Phase::Stopped);
            }
            Some(StopIntent::Retire) => {
                record.reason = Some(format!("removed by reload ({termination})"));
                self.transition(agent, Phase::Stopped);
            }
            Some(StopIntent::Restart { reason, cause }) => {
                let uptime = now.duration_since(process.since);
                self.decide_restart(
                    agent,
                    termination,
                    true,
                    reason,
                    cause,
                    uptime,
                    now,
                    actions,
                )
            }
            None => {
                let cause = match termination {
                    Termination::Code(_) => "exit",
                    _ => "signal",
                };
                // With its last words: `exited with code 1: No module named 'x'`.
                let reason = match process.last_line {
                    Some(line) => format!("{termination}: {line}"),
                    None => termination.to_string(),
                };
                let uptime = now.duration_since(process.since);
                self.decide_restart(
                    agent,
                    termination,
                    false,
                    reason,
                    cause,
                    uptime,
                    now,
                    actions,
                )
            }
        }
    }
}

impl Lifecycle {
    /// Pushed by the other host's supervisor, which owns the agent: ready is
    /// as good as a passed probe (the probe runs only while no report has
    /// come); not ready (it stopped, is restarting or failed there) makes it
    /// `BackingOff` here: dependents that start now wait for it (they are not
    /// blocked), and it is probed again after [`REMOTE_RECHECK`] unless
    /// reported ready before. Agents here that already run are left alone
    /// (one host never restarts agents because of another host's state; a
    /// restart with dependents is routed explicitly, `crate::link`).
    /// A report about an older run than one already applied is stale and
    /// ignored: the link delivers each host's reports in order, but a
    /// restart notice can be overtaken by the new run's readiness (see
    /// [`RemoteRun`]).
    pub(super) fn on_remote_report(
        &mut self,
        agent: AgentId,
        ready: bool,
        run: RemoteRun,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if !self.agents[agent].spec.remote {
            return;
        }
        if self
            .remote_runs
            .get(&agent)
            .is_some_and(|newest| run < *newest)
        {
            tracing::debug!(
                agent = self.agents[agent].name(),
                ?run,
                ready,
                "stale report of another host's agent ignored"
            );
            return;
        }
        self.remote_runs.insert(agent, run);
        let unstopped = self.agents[agent].phase.running_unstopped();
        match (ready, self.state(agent)) {
            (true, AgentState::Starting) if unstopped => {
                actions.push(Action::CancelWatchers { agent });
                self.become_ready(agent, now, actions);
            }
            (true, AgentState::BackingOff | AgentState::Pending) => {
                self.start(agent, now, actions);
                if matches!(self.agents[agent].phase, Phase::Starting { stop: None, .. }) {
                    actions.push(Action::CancelWatchers { agent });
                    self.become_ready(agent, now, actions);
                }
            }
            (false, AgentState::Ready | AgentState::Starting) if unstopped => {
                actions.push(Action::CancelWatchers { agent });
                self.transition(
                    agent,
                    Phase::BackingOff {
                        until: now + REMOTE_RECHECK,
                    },
                );
            }
            _ => {}
        }
    }
}
