//! `logs` across hosts: what one host asks another for ([`LogQuery`]) and
//! what comes back ([`LogPage`]), carried by the peer link as
//! [`super::LinkEvent::LogsAsked`] and [`super::LinkEvent::LogsAnswered`].
//!
//! Owns the shape of a remote log read and the cursor that lets `logs -f`
//! follow another host's files (a file identity and an offset, so a line is
//! handed out once even across rotation).
//!
//! Does not own reading the files (`crate::cli::logs::serve`, handed to the
//! link as a [`LogReader`] by `up`, so the link does not depend on the CLI)
//! nor printing them (`crate::cli::logs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One `logs` read of a peer's agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogQuery {
    /// One agent (the peer's own name for it); every agent when `None`.
    pub agent: Option<String>,
    /// The newest this many lines (a first read; ignored when following).
    pub lines: usize,
    /// Only lines written within this many milliseconds before the peer's now.
    pub since_ms: Option<u64>,
    /// Only lines whose text contains this (plain, case-sensitive).
    pub grep: Option<String>,
    /// Following: where each agent's file was left by the previous page
    /// (an agent not listed is read from its start: it began writing
    /// since). `None`: the end of the logs, as `lines` says.
    pub after: Option<BTreeMap<String, LogCursor>>,
}

/// Where a read of one agent's current log file stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    /// The file's inode (`None` before it existed): another one means it
    /// was rotated.
    pub inode: Option<u64>,
    /// Bytes of it handed out (complete lines only).
    pub offset: u64,
    /// The newest timestamp seen (Unix ms), for lines written without one.
    pub last_time_ms: Option<u64>,
}

/// One line of a peer agent's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The agent, as the peer names it.
    pub agent: String,
    /// Its timestamp (Unix ms, the peer's clock), or the one before it;
    /// `None` before every timestamp.
    pub time_ms: Option<u64>,
    /// The line as written (timestamp included), UTF-8 (lossy).
    pub text: String,
}

/// The answer to a [`LogQuery`]: lines in time order, and where to go on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// Every agent read, with where its file was left: the next
    /// [`LogQuery::after`].
    pub cursors: BTreeMap<String, LogCursor>,
}

/// Reads this host's logs for a peer (runs on a blocking thread). `Err` is
/// one line for the asking operator (an unknown agent, an unreadable file).
pub type LogReader = Arc<dyn Fn(&LogQuery) -> Result<LogPage, String> + Send + Sync>;
