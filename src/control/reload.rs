//! Hot reload: a [`Reloader`] loads and checks the manifests again (built by
//! `cli::up`, which knows the files, the host and the options), and
//! [`reload_once`] hands the result to the supervisor: a configuration that
//! passes is applied (the supervisor restarts only what changed); one that
//! does not is refused, the old one keeps running and every problem is
//! logged and shown in the status. [`watch_files`] does the same when a
//! manifest or the env file changes on disk (debounced).
//!
//! Owns the file watcher. Does not own the difference between two
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
/// by renaming) and reloads after each debounced change. Ends with `token`.
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
                let _ = reload_once(&reloader, &handle, "file change").await;
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
