//! Resource samples of the agents' process trees, matched to agents by
//! pid: the figures for the status, memory above the limit for its grace
//! restarts the agent (cause `memory`), CPU above the limit is a warning
//! (at most once a minute per agent).
//!
//! Part of [`super::Lifecycle`]; pure like it. The sampling itself is
//! [`crate::process::sample`].

use std::collections::HashMap;

use tokio::time::Instant;

use super::{CPU_WARNING_EVERY, Lifecycle, StopIntent, format_duration};
use crate::supervisor::event::{Action, AgentId, ResourceSample};

impl Lifecycle {
    /// `ResourcesSampled`: records the figures and enforces the limits.
    pub(super) fn on_samples(
        &mut self,
        samples: &[ResourceSample],
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let by_pid: HashMap<u32, AgentId> = self
            .agents
            .iter()
            .enumerate()
            .filter_map(|(agent, record)| Some((record.phase.pid()?, agent)))
            .collect();
        for sample in samples {
            let Some(&agent) = by_pid.get(&sample.pid) else {
                continue;
            };
            let record = &mut self.agents[agent];
            let watched = record.phase.running_unstopped();
            let Some(process) = record.phase.process_mut() else {
                continue;
            };
            if let Some(cpu_percent) = sample.cpu_percent {
                process.cpu_percent = Some(cpu_percent);
            }
            process.rss_bytes = Some(sample.rss_bytes);
            let Some(limits) = record.spec.agent.limits.clone() else {
                continue;
            };
            if !watched {
                continue;
            }
            match limits.memory_bytes {
                Some(limit) if sample.rss_bytes > limit => {
                    let since = *process.memory_over_since.get_or_insert(now);
                    let over = now.duration_since(since);
                    if over >= limits.grace {
                        const MIB: u64 = 1024 * 1024;
                        let reason = format!(
                            "memory {} MiB above the limit of {} MiB for {}",
                            sample.rss_bytes / MIB,
                            limit / MIB,
                            format_duration(over)
                        );
                        tracing::warn!(agent = record.name(), "{reason}; restarting");
                        record.phase.set_stop(StopIntent::Restart {
                            reason,
                            cause: "memory",
                        });
                        actions.push(Action::CancelWatchers { agent });
                    }
                }
                _ => process.memory_over_since = None,
            }
            if let Some(limit) = limits.cpu_percent
                && let Some(cpu_percent) = sample.cpu_percent
                && cpu_percent > limit
                && record
                    .cpu_warned_at
                    .is_none_or(|at| now.duration_since(at) >= CPU_WARNING_EVERY)
            {
                record.cpu_warned_at = Some(now);
                self.cpu_warnings += 1;
                tracing::warn!(
                    agent = record.name(),
                    cpu_percent,
                    limit,
                    "CPU {cpu_percent:.0}% above the limit of {limit:.0}%"
                );
            }
        }
    }
}
