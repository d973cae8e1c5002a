//! The one table of agents the fabric knows: for each name, the current
//! run's token, which run of which agent that is, and where the agent
//! serves (from the manifest, or what it advertised in READY).
//!
//! Owned by the supervisor loop, which writes it: a fresh token before it
//! spawns each run, revoked when that run's process exited. The agent
//! endpoint reads it to check every message's token, and the fabric's bridge
//! to map a message to its run and to answer RESOLVE. Everyone holds a
//! clone of the same [`AgentTable`]; there is no second copy to keep in step.
//!
//! ```
//! use supervisor::transport::{AgentTable, TokenCheck};
//! let table = AgentTable::default();
//! table.register_run("db", "secret", 0, 1, None);
//! assert_eq!(table.check("db", b"secret"), TokenCheck::Valid);
//! assert_eq!(table.check("db", b"guess"), TokenCheck::Wrong);
//! table.revoke("db", Some(1));
//! assert_eq!(table.check("db", b"secret"), TokenCheck::Unknown);
//! ```

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::secrets_equal;

/// What the table holds for one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableEntry {
    /// The current run's token; `None` before the first spawn and once that
    /// run's process has exited.
    pub token: Option<String>,
    /// The supervisor loop's agent id and run number of the token's run.
    pub run: Option<(usize, u64)>,
    /// Where it serves according to the manifest (`tcp://address:port`).
    pub endpoint: Option<String>,
    /// Where its current run said it serves (READY); wins over `endpoint`.
    pub advertised: Option<String>,
}

/// The outcome of checking a message's name and token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// The name has no current run (never started, or its process exited).
    Unknown,
    /// Not the current run's token (e.g. an older process of the agent).
    Wrong,
    /// The current run's token.
    Valid,
}

/// A shared handle to the table; clones see the same entries.
#[derive(Debug, Clone, Default)]
pub struct AgentTable(Arc<RwLock<HashMap<String, TableEntry>>>);

impl AgentTable {
    /// An agent the fabric should know before it runs (for RESOLVE), with
    /// where the manifest says it serves.
    pub fn declare(&self, name: &str, endpoint: Option<String>) {
        self.write().entry(name.to_string()).or_default().endpoint = endpoint;
    }

    /// A new run `run` of agent `id`: its token is the only one accepted
    /// for `name` from now on, and what the previous run advertised is
    /// forgotten.
    pub fn register_run(
        &self,
        name: &str,
        token: &str,
        id: usize,
        run: u64,
        endpoint: Option<String>,
    ) {
        let mut table = self.write();
        let entry = table.entry(name.to_string()).or_default();
        entry.token = Some(token.to_string());
        entry.run = Some((id, run));
        entry.endpoint = endpoint;
        entry.advertised = None;
    }

    /// Accepts `token` for `name`, outside any supervisor run (tests, tools).
    pub fn allow(&self, name: &str, token: &str) {
        self.write().entry(name.to_string()).or_default().token = Some(token.to_string());
    }

    /// Refuses `name` from now on: its process exited. With `run`, only if
    /// that is still the current run (a later run keeps its token).
    pub fn revoke(&self, name: &str, run: Option<u64>) {
        if let Some(entry) = self.write().get_mut(name)
            && (run.is_none() || entry.run.map(|(_, current)| current) == run)
        {
            entry.token = None;
        }
    }

    /// Whether `token` is the current token of `name`, compared in
    /// constant time.
    pub fn check(&self, name: &str, token: &[u8]) -> TokenCheck {
        match self.read().get(name).and_then(|entry| entry.token.as_ref()) {
            None => TokenCheck::Unknown,
            Some(current) if secrets_equal(current.as_bytes(), token) => TokenCheck::Valid,
            Some(_) => TokenCheck::Wrong,
        }
    }

    /// The agent id and run number of `name`'s current run.
    pub fn run_of(&self, name: &str) -> Option<(usize, u64)> {
        self.read().get(name).and_then(|entry| entry.run)
    }

    /// Records where `name`'s current run serves; false for an unknown name.
    pub fn advertise(&self, name: &str, endpoint: &str) -> bool {
        match self.write().get_mut(name) {
            Some(entry) => {
                entry.advertised = Some(endpoint.to_string());
                true
            }
            None => false,
        }
    }

    /// The entries, for lookups that need more than one (a poisoned lock
    /// is read as it is: every write leaves the table consistent).
    pub fn read(&self) -> RwLockReadGuard<'_, HashMap<String, TableEntry>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, TableEntry>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_run_replaces_the_token_and_forgets_the_advertised_endpoint() {
        let table = AgentTable::default();
        table.declare("db", Some("tcp://10.0.0.2:5432".into()));
        assert_eq!(table.check("db", b"one"), TokenCheck::Unknown);
        table.register_run("db", "one", 3, 1, Some("tcp://10.0.0.2:5432".into()));
        assert!(table.advertise("db", "tcp://10.0.0.2:6000"));
        table.register_run("db", "two", 3, 2, Some("tcp://10.0.0.2:5432".into()));
        assert_eq!(table.check("db", b"one"), TokenCheck::Wrong);
        assert_eq!(table.check("db", b"two"), TokenCheck::Valid);
        assert_eq!(table.run_of("db"), Some((3, 2)));
        assert_eq!(table.read()["db"].advertised, None);
        assert!(!table.advertise("nobody", "tcp://x:1"));
    }

    #[test]
    fn revoking_an_old_run_keeps_the_new_runs_token() {
        let table = AgentTable::default();
        table.register_run("db", "one", 0, 1, None);
        table.register_run("db", "two", 0, 2, None);
        table.revoke("db", Some(1));
        assert_eq!(table.check("db", b"two"), TokenCheck::Valid);
        table.revoke("db", Some(2));
        assert_eq!(table.check("db", b"two"), TokenCheck::Unknown);
    }
}
