//! Hot reload: a [`Reloader`] loads and checks the manifests again (built by
//! `cli::up`, which knows the files, the host and the options), and
//! [`reload_once`] hands the result to the supervisor: a configuration that
//! passes is applied (the supervisor restarts only what changed); one that
//! does not is refused, the old one keeps running and every problem is
//! logged and shown in the status. [`watch_files`] does the same when a
//! manifest or the env file changes on disk, but only for files that have
//! stopped changing: an editor or `cp` that writes a file in two steps must
//! not get its first half applied. After the debounced event the files are
//! read until two reads [`SETTLE`] apart are identical (size, mtime and
//! content), and a configuration that would remove agents is loaded a
//! second time after [`CONFIRM_REMOVAL`] and applied only if the files are
//! still the same. `supervisor reload` applies at once.
//!
//! Owns the file watcher and the settling rule. Does not own the difference between two
//! configurations (the supervisor's lifecycle computes and applies it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::supervisor::{Reload, ReloadSummary, SupervisorHandle};

/// Loads and checks the manifests; `Err` carries every problem, one line
/// each. Blocking (file reads, probes of nothing): run it off the runtime.
pub type Reloader = Arc<dyn Fn() -> Result<Reload, Vec<String>> + Send + Sync>;

/// How long file events are gathered before one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watched files must read the same twice this far apart to be applied.
pub const SETTLE: Duration = Duration::from_millis(500);

/// A file-triggered reload that would remove agents is read again this much
/// later and applied only if nothing changed (stopping an agent is the one
/// change a half-written manifest makes that cannot be taken back quietly).
pub const CONFIRM_REMOVAL: Duration = Duration::from_secs(2);

/// Reads past which a file that never stops changing is applied as it is.
const MAX_SETTLE_READS: u32 = 20;

/// What a watched file looked like: its size, mtime and content (`None`
/// when missing).
type Snapshot = Vec<Option<(u64, std::time::SystemTime, Vec<u8>)>>;

/// What `files` look like now, in order; a file that cannot be read (or
/// whose mtime cannot be) is `None`, like a missing one.
fn snapshot(files: &[PathBuf]) -> Snapshot {
    files
        .iter()
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            let content = std::fs::read(file).ok()?;
            Some((meta.len(), meta.modified().ok()?, content))
        })
        .collect()
}

/// Waits until `files` read the same twice [`SETTLE`] apart (at most
/// [`MAX_SETTLE_READS`] reads) and returns that state; `None` if `token`
/// was cancelled.
async fn settled(files: &[PathBuf], token: &CancellationToken) -> Option<Snapshot> {
    let mut last = snapshot(files);
    for _ in 0..MAX_SETTLE_READS {
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = tokio::time::sleep(SETTLE) => {}
        }
        let now = snapshot(files);
        if now == last {
            return Some(now);
        }
        last = now;
    }
    tracing::warn!(
        "the manifests kept changing for {:?}; reloading them as they are",
        SETTLE * MAX_SETTLE_READS
    );
    Some(last)
}

/// A file-triggered reload: waits for the files to settle; loads; when the
/// result would remove agents, waits [`CONFIRM_REMOVAL`] and starts over if
/// the files changed meanwhile. Applies (or reports the refusal) at the end
/// and returns the state of the files it read; `None` if cancelled.
async fn reload_settled(
    files: &[PathBuf],
    reloader: &Reloader,
    handle: &SupervisorHandle,
    token: &CancellationToken,
) -> Option<Snapshot> {
    loop {
        let before = settled(files, token).await?;
        let load = reloader.clone();
        let loaded = tokio::task::spawn_blocking(move || load())
            .await
            .unwrap_or_else(|error| Err(vec![format!("loading the manifests panicked: {error}")]));
        if let Ok(reload) = &loaded {
            let removed = removed_agents(reload, handle).await;
            if !removed.is_empty() {
                tracing::info!(
                    "the changed manifests remove {}; confirming in {:?}",
                    removed.join(", "),
                    CONFIRM_REMOVAL
                );
                tokio::select! {
                    _ = token.cancelled() => return None,
                    _ = tokio::time::sleep(CONFIRM_REMOVAL) => {}
                }
                if snapshot(files) != before {
                    tracing::info!("the manifests changed again; waiting for them to settle");
                    continue;
                }
            }
        }
        let _ = apply_loaded(loaded, handle, "file change").await;
        return Some(before);
    }
}

/// The agents running now that `reload` would remove.
async fn removed_agents(reload: &Reload, handle: &SupervisorHandle) -> Vec<String> {
    let snapshot = match handle.status().await {
        Some(snapshot) => snapshot,
        None => handle.subscribe().borrow().clone(),
    };
    let kept: BTreeSet<&str> = reload
        .agents
        .iter()
        .map(|spec| spec.agent.name.as_str())
        .collect();
    snapshot
        .agents
        .iter()
        .map(|agent| agent.name.clone())
        .filter(|name| !kept.contains(name.as_str()))
        .collect()
}

/// Loads with `reloader` (in `spawn_blocking`) and applies or refuses; the
/// errors are also logged and recorded in the supervisor's status.
pub async fn reload_once(
    reloader: &Reloader,
    handle: &SupervisorHandle,
    why: &str,
) -> Result<ReloadSummary, Vec<String>> {
    let load = reloader.clone();
    let loaded = tokio::task::spawn_blocking(move || load())
        .await
        .unwrap_or_else(|error| Err(vec![format!("loading the manifests panicked: {error}")]));
    apply_loaded(loaded, handle, why).await
}

/// Applies a loaded configuration, or records and logs why it was refused.
async fn apply_loaded(
    loaded: Result<Reload, Vec<String>>,
    handle: &SupervisorHandle,
    why: &str,
) -> Result<ReloadSummary, Vec<String>> {
    match loaded {
        Ok(reload) => match handle.reload(reload).await {
            Ok(summary) => {
                tracing::info!(trigger = why, "configuration reloaded: {summary}");
                Ok(summary)
            }
            Err(error) => Err(vec![error.to_string()]),
        },
        Err(errors) => {
            tracing::error!(
                trigger = why,
                problems = errors.len(),
                "the new configuration was refused; the old one keeps running"
            );
            for error in &errors {
                tracing::error!("  {error}");
            }
            handle.reload_failed(errors.clone()).await;
            Err(errors)
        }
    }
}

/// Watches `files` (their parent directories, since editors replace files
/// by renaming) and reloads after each debounced change, once the files
/// have settled (see the module doc). Ends with `token`.
/// A watcher that cannot start is logged and the task ends (reload by
/// command still works).
pub async fn watch_files(
    files: Vec<PathBuf>,
    reloader: Reloader,
    handle: SupervisorHandle,
    token: CancellationToken,
) {
    let wanted: BTreeSet<PathBuf> = files.iter().map(|file| absolute(file)).collect();
    // The debouncer's thread sends here; a full channel already means "reload".
    let (changed, mut changes) = mpsc::channel::<()>(1);
    let filter = wanted.clone();
    let debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| {
        if let Ok(events) = result
            && events.iter().any(|event| {
                !event.kind.is_access()
                    && event
                        .paths
                        .iter()
                        .any(|path| filter.contains(&absolute(path)))
            })
        {
            let _ = changed.try_send(());
        }
    });
    let mut debouncer = match debouncer {
        Ok(debouncer) => debouncer,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the manifests; `supervisor reload` still works");
            return;
        }
    };
    let directories: BTreeSet<PathBuf> = wanted
        .iter()
        .filter_map(|file| file.parent().map(Path::to_path_buf))
        .collect();
    for directory in &directories {
        if let Err(error) = debouncer.watch(directory, RecursiveMode::NonRecursive) {
            tracing::warn!(directory = %directory.display(), %error, "cannot watch");
        }
    }
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            received = changes.recv() => {
                if received.is_none() {
                    return;
                }
                // Events queued meanwhile are of writes already read, unless
                // the files differ from what was applied: then go again.
                while let Some(applied) = reload_settled(&files, &reloader, &handle, &token).await {
                    while changes.try_recv().is_ok() {}
                    if snapshot(&files) == applied {
                        break;
                    }
                }
            }
        }
    }
}

/// The absolute, normalised form used to compare event paths with the
/// watched files (canonical when the file exists).
fn absolute(path: &Path) -> PathBuf {
    if let Ok(canonical) = path.canonicalize() {
        return canonical;
    }
    // A file being replaced may not exist right now: canonicalise its directory.
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent
                .canonicalize()
                .map(|dir| dir.join(name))
                .unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}
