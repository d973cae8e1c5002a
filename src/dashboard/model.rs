//! What the dashboard page shows, as one JSON document: every host's
//! supervisor status, the restart timeline, the recent errors.
//!
//! Owns the timeline: a restart is seen as an agent's `restarts_by_cause`
//! count of some cause going up between two statuses, and "caused by" names the dependency (direct or further up)
//! that restarted, exited or failed last, within [`CAUSE_WINDOW_MS`], before an
//! agent restarted with cause `dependency`. Restarts before the dashboard
//! attached are not in it (the counts are in the table).
//!
//! Every record carries its `host`, so a second supervisor (the two-host
//! link) is one more entry in `hosts` and more rows, not a new shape.
//!
//! Does not own the statuses (the supervisor's, read through its control
//! socket) nor the error journal (`<run-dir>/errors.jsonl`).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::control::{AgentView, StatusView};

/// Timeline entries kept (oldest dropped first).
pub const TIMELINE_LENGTH: usize = 500;
/// Errors kept (oldest dropped first).
pub const ERRORS_LENGTH: usize = 500;
/// How far back a dependency's restart counts as the cause of a dependent's.
pub const CAUSE_WINDOW_MS: u64 = 30_000;

/// One supervisor the dashboard shows.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// Its machine's host name.
    /// The host of the supervisor whose status showed the restart.
    pub host: String,
    /// The last status read; `None` before the first.
    pub status: Option<StatusView>,
    /// Why it cannot be read now (`None` while connected).
    pub disconnected: Option<String>,
}

/// One restart (or give-up) of one agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub host: String,
    /// Milliseconds since the Unix epoch, when the dashboard saw it.
    pub at_ms: u64,
    /// The agent that restarted or failed.
    pub agent: String,
    /// `exit`, `signal`, `liveness`, `dependency`, `operator`, ..., or
    /// `failed` when the supervisor gave up on it.
    pub cause: String,
    /// The supervisor's words (`killed by signal 9 (SIGKILL)`, ...).
    pub reason: Option<String>,
    /// The dependency whose restart brought this one about.
    pub caused_by: Option<String>,
    /// Its restarts of every cause after this one.
    pub restarts: u32,
}

/// The whole page's data.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// The host the dashboard runs on (shown in the title).
    pub dashboard_host: String,
    /// One entry per supervisor: the dashboard's own host first, others as
    /// their statuses arrive.
    pub hosts: Vec<Host>,
    /// Restarts and give-ups seen since the dashboard attached, oldest first,
    /// at most [`TIMELINE_LENGTH`].
    pub timeline: VecDeque<TimelineEntry>,
    /// Records of the error journal, newest last, each with `host` added.
    pub errors: VecDeque<serde_json::Value>,
    /// Counts every change, so the page can tell a new document.
    pub version: u64,
}

impl Model {
    /// An empty model: only `dashboard_host`, marked `connecting`, version 0.
    pub fn new(dashboard_host: &str) -> Model {
        Model {
            dashboard_host: dashboard_host.to_string(),
            hosts: vec![Host {
                host: dashboard_host.to_string(),
                status: None,
                disconnected: Some("connecting".to_string()),
            }],
            timeline: VecDeque::new(),
            errors: VecDeque::new(),
            version: 0,
        }
    }

    /// A new status of `host`'s supervisor, seen at `at_ms`.
    pub fn status(&mut self, host: &str, status: StatusView, at_ms: u64) {
        let index = self.host_index(host);
        if let Some(previous) = &self.hosts[index].status {
            for entry in restarts(host, previous, &status, at_ms, &self.timeline) {
                self.timeline.push_back(entry);
            }
            while self.timeline.len() > TIMELINE_LENGTH {
                self.timeline.pop_front();
            }
        }
        let entry = &mut self.hosts[index];
        entry.status = Some(status);
        entry.disconnected = None;
        self.version += 1;
    }

    /// `host`'s supervisor cannot be read, because of `why`; its last status
    /// stays. The version changes only when the reason does, so a supervisor
    /// that stays away does not wake every page each second.
    pub fn disconnected(&mut self, host: &str, why: String) {
        let index = self.host_index(host);
        if self.hosts[index].disconnected.as_ref() != Some(&why) {
            self.hosts[index].disconnected = Some(why);
            self.version += 1;
        }
    }

    /// New records of `host`'s error journal.
    pub fn errors(&mut self, host: &str, records: Vec<serde_json::Value>) {
        if records.is_empty() {
            return;
        }
        for mut record in records {
            if let Some(object) = record.as_object_mut() {
                object.insert("host".into(), host.into());
            }
            self.errors.push_back(record);
        }
        while self.errors.len() > ERRORS_LENGTH {
            self.errors.pop_front();
        }
        self.version += 1;
    }

    /// Whether `agent` is one of `host`'s agents (log and action requests
    /// name only these).
    pub fn has_agent(&self, host: &str, agent: &str) -> bool {
        self.hosts
            .iter()
            .filter(|entry| entry.host == host)
            .filter_map(|entry| entry.status.as_ref())
            .any(|status| status.agent(agent).is_some())
    }

    /// The index of `host` in `hosts`, adding an empty entry for a new host.
    fn host_index(&mut self, host: &str) -> usize {
        match self.hosts.iter().position(|entry| entry.host == host) {
            Some(index) => index,
            None => {
                self.hosts.push(Host {
                    host: host.to_string(),
                    status: None,
                    disconnected: None,
                });
                self.hosts.len() - 1
            }
        }
    }
}

/// The timeline entries between two statuses of one supervisor, seen at
/// `at_ms`: one per cause whose count in an agent's `restarts_by_cause`
/// went up, or, without one, a `failed` entry when the agent became
/// failed. An agent missing from `previous` (just added) gives none. A
/// `dependency` restart gets `caused_by`: the latest entry within
/// [`CAUSE_WINDOW_MS`] (in `earlier` for this host, or this batch) of an
/// agent it depends on, directly or further up.
pub fn restarts(
    host: &str,
    previous: &StatusView,
    next: &StatusView,
    at_ms: u64,
    earlier: &VecDeque<TimelineEntry>,
) -> Vec<TimelineEntry> {
    let before: BTreeMap<&str, &AgentView> = previous
        .agents
        .iter()
        .map(|agent| (agent.name.as_str(), agent))
        .collect();
    let mut found = Vec::new();
    for agent in &next.agents {
        let Some(old) = before.get(agent.name.as_str()) else {
            continue;
        };
        // Restarts by cause, not `restarts`: a restart with a dependency
        // counts under its cause only (the backoff count is the policy's).
        let increased: Vec<&String> = agent
            .restarts_by_cause
            .iter()
            .filter(|(cause, count)| {
                old.restarts_by_cause.get(*cause).copied().unwrap_or(0) < **count
            })
            .map(|(cause, _)| cause)
            .collect();
        if !increased.is_empty() {
            for cause in increased {
                found.push(TimelineEntry {
                    host: host.to_string(),
                    at_ms,
                    agent: agent.name.clone(),
                    cause: cause.clone(),
                    reason: agent.reason.clone(),
                    caused_by: None,
                    restarts: agent.restarts_by_cause.values().sum(),
                });
            }
        } else if agent.state == "failed" && old.state != "failed" {
            found.push(TimelineEntry {
                host: host.to_string(),
                at_ms,
                agent: agent.name.clone(),
                cause: "failed".to_string(),
                reason: agent.reason.clone(),
                caused_by: None,
                restarts: agent.restarts,
            });
        }
    }
    // Who brought a `dependency` restart about: the latest event of an
    // agent it depends on (transitively), this batch's included.
    let dependencies: BTreeMap<&str, &[String]> = next
        .agents
        .iter()
        .map(|agent| (agent.name.as_str(), agent.dependencies.as_slice()))
        .collect();
    let candidates: Vec<TimelineEntry> = earlier
        .iter()
        .filter(|entry| entry.host == host && entry.at_ms + CAUSE_WINDOW_MS >= at_ms)
        .chain(found.iter())
        .cloned()
        .collect();
    for entry in &mut found {
        if entry.cause != "dependency" {
            continue;
        }
        let upstream = upstream(&entry.agent, &dependencies);
        entry.caused_by = candidates
            .iter()
            .filter(|candidate| candidate.cause != "dependency" || candidate.caused_by.is_some())
            .filter(|candidate| upstream.contains(&candidate.agent.as_str()))
            .max_by_key(|candidate| candidate.at_ms)
            .map(|candidate| candidate.agent.clone())
            .or_else(|| {
                // Restarted with a dependency that itself restarted with
                // one: name the nearest such dependency.
                candidates
                    .iter()
                    .filter(|candidate| upstream.contains(&candidate.agent.as_str()))
                    .max_by_key(|candidate| candidate.at_ms)
                    .map(|candidate| candidate.agent.clone())
            });
    }
    found
}

/// Every agent `agent` depends on, directly or further up.
fn upstream<'a>(agent: &str, dependencies: &BTreeMap<&'a str, &'a [String]>) -> Vec<&'a str> {
    let mut found: Vec<&'a str> = Vec::new();
    let mut stack: Vec<&'a str> = dependencies
        .get(agent)
        .into_iter()
        .flat_map(|list| list.iter().map(String::as_str))
        .collect();
    while let Some(next) = stack.pop() {
        if found.contains(&next) {
            continue;
        }
        found.push(next);
        if let Some(list) = dependencies.get(next) {
            stack.extend(list.iter().map(String::as_str));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, dependencies: &[&str], restarts: &[(&str, u32)]) -> AgentView {
        let view = serde_json::json!({
            "name": name, "host": "h", "state": "ready", "remote": false,
            "required": true, "held": false, "pid": 1, "uptime_s": 1.0,
            "restarts": restarts.iter().map(|(_, count)| count).sum::<u32>(),
            "restarts_by_cause": restarts.iter().map(|(cause, count)| (cause.to_string(), *count)).collect::<BTreeMap<_, _>>(),
            "reason": null, "ready_at_s": null, "time_to_ready_s": null,
            "heartbeat_age_s": null, "cpu_percent": null, "rss_bytes": null,
            "waiting_on": [], "dependencies": dependencies,
        });
        serde_json::from_value(view).unwrap()
    }

    fn status(agents: Vec<AgentView>) -> StatusView {
        StatusView {
            supervisor_pid: 1,
            uptime_s: 1.0,
            all_ready_s: None,
            shutting_down: false,
            reloads: 0,
            config_errors: Vec::new(),
            console_dropped_lines: 0,
            agents,
            link: None,
        }
    }

    #[test]
    fn a_dependency_restart_names_the_dependency_that_caused_it() {
        let mut model = Model::new("h");
        model.status(
            "h",
            status(vec![
                agent("store", &[], &[]),
                agent("api", &["store"], &[]),
                agent("worker", &["api"], &[]),
            ]),
            1000,
        );
        assert!(model.timeline.is_empty());
        model.status(
            "h",
            status(vec![
                agent("store", &[], &[("signal", 1)]),
                agent("api", &["store"], &[]),
                agent("worker", &["api"], &[]),
            ]),
            2000,
        );
        model.status(
            "h",
            status(vec![
                agent("store", &[], &[("signal", 1)]),
                agent("api", &["store"], &[("dependency", 1)]),
                agent("worker", &["api"], &[("dependency", 1)]),
            ]),
            2500,
        );
        let seen: Vec<(&str, &str, Option<&str>)> = model
            .timeline
            .iter()
            .map(|entry| {
                (
                    entry.agent.as_str(),
                    entry.cause.as_str(),
                    entry.caused_by.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("store", "signal", None),
                ("api", "dependency", Some("store")),
                ("worker", "dependency", Some("store")),
            ]
        );
    }

    #[test]
    fn an_old_restart_is_not_a_cause() {
        let mut model = Model::new("h");
        let before = status(vec![
            agent("store", &[], &[]),
            agent("api", &["store"], &[]),
        ]);
        model.status("h", before, 0);
        let store_down = status(vec![
            agent("store", &[], &[("exit", 1)]),
            agent("api", &["store"], &[]),
        ]);
        model.status("h", store_down, 1000);
        let api_down = status(vec![
            agent("store", &[], &[("exit", 1)]),
            agent("api", &["store"], &[("dependency", 1)]),
        ]);
        model.status("h", api_down, 1000 + CAUSE_WINDOW_MS + 1);
        assert_eq!(model.timeline[1].caused_by, None);
        assert!(model.version >= 3);
    }
}
