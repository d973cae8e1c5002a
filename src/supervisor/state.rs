//! Agent states and the one table of legal transitions between them.
//!
//! Owns the vocabulary of the lifecycle, not the decisions: which transition
//! happens when is decided in [`super::lifecycle`], which checks every change
//! against [`allowed`].
//!
//! ```text
//! from \ to    Pending Blocked Starting Ready BackingOff Stopping Stopped Failed Idle
//! Pending         .       x       x       .       .         .        x       .     .
//! Blocked         x       .       .       .       .         .        x       .     .
//! Starting        .       .       .       x       x         x        x       x     .
//! Ready           .       .       .       .       x         x        x       x     .
//! BackingOff      x       .       x       .       .         .        x       x     .
//! Stopping        x       .       .       .       x         .        x       x     x
//! Stopped         x       .       .       .       .         .        .       .     .
//! Failed          x       .       .       .       .         .        .       .     .
//! Idle            x       .       .       .       .         .        x       .     .
//! ```
//!
//! - `Pending`: waiting for its dependencies; `Starting` once all are ready,
//!   `Blocked` when one of them failed for good, `Stopped` on shutdown.
//! - `Starting`: spawned (or, for an agent of another host, being probed);
//!   `Ready` when its readiness check passes; `BackingOff` when it exited and
//!   will be restarted; `Stopping` when it is asked to stop (shutdown, a
//!   strategy restart, readiness timeout); `Stopped` when it exits for good
//!   without fault or has no process to stop; `Failed` when it cannot start or
//!   its restarts are exhausted.
//! - `Ready`: same exits as `Starting`.
//! - `BackingOff`: `Starting` when the delay is over and its dependencies are
//!   ready, `Pending` when they are not, `Stopped` on shutdown, `Failed` when
//!   it cannot be spawned.
//! - `Stopping`: where the exit leads depends on why it was stopped:
//!   `Stopped` (shutdown), `Pending` (restarted with the agent it depends on),
//!   `BackingOff` (killed as hung, restarted under its policy), `Failed`.
//! - `Blocked`: `Pending` when an operator starts the dependency it waited for.
//! - `Idle`: stopped on purpose after its SDK heartbeats reported no work
//!   for `idle_stop` (it leaves `Ready` through `Stopping`); not final and
//!   no fault: `Pending` when woken (a RESOLVE of it, `start`, a pending
//!   dependent that needs it), `Stopped` on shutdown or an operator `stop`.
//!   Its dependents keep running.
//! - `Stopped` and `Failed` are final on their own; only an operator
//!   (`start`, `restart`) or a reload that changed the agent's definition
//!   brings them back to `Pending`.

/// Where an agent is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgentState {
    /// Waiting for its dependencies to be ready (`waiting_on` names them).
    Pending,
    /// A dependency failed for good: it will not start on its own.
    Blocked,
    /// Spawned (or, for a remote agent, being probed); not ready yet.
    Starting,
    /// Its readiness check passed; dependents may start.
    Ready,
    /// Exited; waiting for its backoff delay before the next start.
    BackingOff,
    /// Asked to stop (signal sent), waiting for its exit within the grace.
    Stopping,
    /// Not running and not restarted: shut down, done, or held by an operator.
    Stopped,
    /// Gave up: it could not be spawned or its restarts ran out.
    Failed,
    Idle,
}

impl AgentState {
    /// Every state, in declaration order (the transition table's rows).
    pub const ALL: [AgentState; 9] = [
        AgentState::Pending,
        AgentState::Blocked,
        AgentState::Starting,
        AgentState::Ready,
        AgentState::BackingOff,
        AgentState::Stopping,
        AgentState::Stopped,
        AgentState::Failed,
        AgentState::Idle,
    ];

    /// The kebab-case name used on the wire, in `status` and on the dashboard
    /// (`backing-off`, `ready`, ...); also what `Display` prints.
    ///
    /// ```
    /// use supervisor::supervisor::AgentState;
    ///
    /// assert_eq!(AgentState::BackingOff.as_str(), "backing-off");
    /// assert_eq!(AgentState::Ready.to_string(), "ready");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Pending => "pending",
            AgentState::Blocked => "blocked",
            AgentState::Starting => "starting",
            AgentState::Ready => "ready",
            AgentState::BackingOff => "backing-off",
            AgentState::Stopping => "stopping",
            AgentState::Stopped => "stopped",
            AgentState::Failed => "failed",
            AgentState::Idle => "idle",
        }
    }

    /// Nothing more will happen to an agent in this state on its own (only
    /// an operator or a reload can move it back to `Pending`).
    pub fn is_final(self) -> bool {
        matches!(self, AgentState::Stopped | AgentState::Failed)
    }
}

impl std::fmt::Display for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

use AgentState::*;

/// Every legal `(from, to)` pair; the table in the module doc, row by row.
pub const ALLOWED_TRANSITIONS: &[(AgentState, AgentState)] = &[
    (Pending, Blocked),
    (Pending, Starting),
    (Pending, Stopped),
    (Blocked, Pending),
    (Blocked, Stopped),
    (Starting, Ready),
    (Starting, BackingOff),
    (Starting, Stopping),
    (Starting, Stopped),
    (Starting, Failed),
    (Ready, BackingOff),
    (Ready, Stopping),
    (Ready, Stopped),
    (Ready, Failed),
    (BackingOff, Pending),
    (BackingOff, Starting),
    (BackingOff, Stopped),
    (BackingOff, Failed),
    (Stopping, Pending),
    (Stopping, BackingOff),
    (Stopping, Stopped),
    (Stopping, Failed),
    (Stopping, Idle),
    (Stopped, Pending),
    (Failed, Pending),
    (Idle, Pending),
    (Idle, Stopped),
];

/// Whether an agent may go from `from` to `to`.
pub fn allowed(from: AgentState, to: AgentState) -> bool {
    ALLOWED_TRANSITIONS.contains(&(from, to))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table drawn in this file's module doc, parsed.
    fn drawn_table() -> Vec<(AgentState, AgentState)> {
        let source = include_str!("state.rs");
        let lines: Vec<&str> = source
            .lines()
            .map(|line| line.trim_start_matches("//!").trim())
            .skip_while(|line| !line.starts_with("from \\ to"))
            .take_while(|line| !line.starts_with("```"))
            .collect();
        let columns: Vec<&str> = lines[0].split_whitespace().skip(3).collect();
        let name = |text: &str| {
            AgentState::ALL
                .into_iter()
                .find(|state| format!("{state:?}") == text)
                .unwrap_or_else(|| panic!("unknown state {text} in the drawn table"))
        };
        let mut pairs = Vec::new();
        for row in &lines[1..] {
            let mut cells = row.split_whitespace();
            let from = name(cells.next().unwrap());
            let marks: Vec<&str> = cells.collect();
            assert_eq!(marks.len(), columns.len(), "row {from:?} has every column");
            for (column, mark) in columns.iter().zip(marks) {
                match mark {
                    "x" => pairs.push((from, name(column))),
                    "." => {}
                    other => panic!("unexpected mark {other}"),
                }
            }
        }
        assert_eq!(lines.len() - 1, AgentState::ALL.len(), "one row per state");
        pairs
    }

    #[test]
    fn the_drawn_table_and_the_code_agree_on_every_pair() {
        let drawn = drawn_table();
        for from in AgentState::ALL {
            for to in AgentState::ALL {
                assert_eq!(
                    allowed(from, to),
                    drawn.contains(&(from, to)),
                    "{from:?} -> {to:?} differs between the doc table and ALLOWED_TRANSITIONS"
                );
            }
        }
    }

    #[test]
    fn final_states_lead_only_back_to_pending_and_nothing_returns_to_itself() {
        for from in AgentState::ALL {
            for to in AgentState::ALL {
                if (from.is_final() && to != Pending) || from == to {
                    assert!(!allowed(from, to), "{from:?} -> {to:?} must be illegal");
                }
            }
        }
        // The operator's way back, and only that one.
        for from in [Stopped, Failed, Blocked] {
            assert!(allowed(from, Pending), "{from:?} cannot be started again");
        }
    }

    #[test]
    fn every_state_but_pending_is_reachable_and_every_live_state_can_stop() {
        for state in AgentState::ALL {
            if state != Pending {
                assert!(
                    AgentState::ALL.iter().any(|from| allowed(*from, state)),
                    "{state:?} is unreachable"
                );
            }
            if !state.is_final() {
                assert!(allowed(state, Stopped), "{state:?} cannot be shut down");
            }
        }
    }
}
