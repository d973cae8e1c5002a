//! Which manifests and which run directory a command means when the operator
//! does not say: the habits of `docker compose` and `process-compose`, where
//! commands work from the project's directory without repeating `--config`.
//!
//! Manifests: `--config`, else `SUPERVISOR_CONFIG` (comma-separated), else
//! the first of [`DEFAULT_NAMES`] found in the current directory.
//!
//! Run directory (control commands and `logs`): `--run-dir`, else
//! `SUPERVISOR_RUN_DIR`, else `.supervisor/` beside the first manifest named
//! by `--config` or `SUPERVISOR_CONFIG`, else the supervisor that `up`
//! started in this directory or one above it (the registry below), else the
//! first run directory found walking up from here (`.supervisor/`, or the one
//! beside a [`DEFAULT_NAMES`] manifest), else `./.supervisor`.
//!
//! The registry: `up` writes `<registry>/<pid>` holding the directory it was
//! started in and its run directory. A live supervisor's entry wins; the
//! entry of one that has ended still leads to its run directory (for `logs`
//! after `down`) until that directory is gone, when the entry is removed.
//! `<registry>` is `$XDG_RUNTIME_DIR/supervisor`, else
//! `$HOME/.local/state/supervisor/runs`, created with mode 0700.
//!
//! Owns these rules only; the run directory's files are
//! `crate::control::rundir`'s.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::control::RunDir;
use crate::control::rundir::default_run_dir;
use crate::manifest::ConfigArg;

/// The manifest names `up`, `check` and `plan` look for in the current
/// directory when no manifest is named.
pub const DEFAULT_NAMES: [&str; 3] = ["supervisor.yaml", "startup.yaml", "config/startup.yaml"];

/// No manifest was named and none of the default names exists here.
#[derive(Debug, thiserror::Error)]
#[error(
    "no manifest given and none found in {dir}: pass --config FILE, set SUPERVISOR_CONFIG, \
     or run from a directory with {}",
    DEFAULT_NAMES.join(", ")
)]
pub struct NoManifest {
    /// The directory that was searched (the current one), for the message.
    pub dir: String,
}

/// The manifests a command reads.
pub fn manifests(explicit: &[String]) -> Result<Vec<ConfigArg>, NoManifest> {
    if let Some(named) = named_manifests(explicit) {
        return Ok(named);
    }
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    DEFAULT_NAMES
        .iter()
        .find(|name| Path::new(name).is_file())
        .map(|name| vec![ConfigArg::from(Path::new(name))])
        .ok_or_else(|| NoManifest {
            dir: here.display().to_string(),
        })
}

/// `--config`, else `SUPERVISOR_CONFIG`; `None` when neither names one.
fn named_manifests(explicit: &[String]) -> Option<Vec<ConfigArg>> {
    if !explicit.is_empty() {
        return Some(explicit.iter().map(|text| ConfigArg::parse(text)).collect());
    }
    let variable = std::env::var("SUPERVISOR_CONFIG").ok()?;
    let named: Vec<ConfigArg> = variable
        .split(',')
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(ConfigArg::parse)
        .collect();
    (!named.is_empty()).then_some(named)
}

/// The run directory a control command means (see the module doc).
pub fn run_dir(explicit: Option<&Path>, configs: &[String]) -> RunDir {
    if let Some(named) = named_manifests(configs) {
        return up_run_dir(explicit, named.first().map(|config| config.path.as_path()));
    }
    if let Some(dir) = explicit_run_dir(explicit) {
        return dir;
    }
    let here = std::env::current_dir()
        .ok()
        .and_then(|dir| std::fs::canonicalize(dir).ok())
        .unwrap_or_else(|| PathBuf::from("."));
    if let Some(dir) = registered(&here) {
        return RunDir::new(dir);
    }
    for dir in here.ancestors() {
        let candidates = std::iter::once(dir.join(".supervisor")).chain(
            DEFAULT_NAMES
                .iter()
                .map(|name| dir.join(name))
                .filter(|manifest| manifest.is_file())
                .map(|manifest| default_run_dir(Some(&manifest))),
        );
        for candidate in candidates {
            if candidate.join("logs").is_dir() {
                return RunDir::new(candidate);
            }
        }
    }
    RunDir::new(".supervisor")
}

/// The run directory `up` uses: `--run-dir`, else `SUPERVISOR_RUN_DIR`, else
/// `.supervisor/` beside its first manifest.
pub fn up_run_dir(explicit: Option<&Path>, first_manifest: Option<&Path>) -> RunDir {
    explicit_run_dir(explicit).unwrap_or_else(|| RunDir::new(default_run_dir(first_manifest)))
}

/// `--run-dir`, else `SUPERVISOR_RUN_DIR`.
fn explicit_run_dir(explicit: Option<&Path>) -> Option<RunDir> {
    if let Some(dir) = explicit {
        return Some(RunDir::new(dir));
    }
    std::env::var_os("SUPERVISOR_RUN_DIR")
        .filter(|dir| !dir.is_empty())
        .map(|dir| RunDir::new(PathBuf::from(dir)))
}

/// The registry directory, if this user has a place for one.
fn registry() -> Option<PathBuf> {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(runtime).join("supervisor"));
    }
    let home = std::env::var_os("HOME").filter(|dir| !dir.is_empty())?;
    Some(PathBuf::from(home).join(".local/state/supervisor/runs"))
}

/// The run directory of the supervisor started in `here` or the nearest
/// directory above it: a live one first, else the latest that has ended
/// and left its run directory.
fn registered(here: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(registry()?).ok()?;
    // (live, depth, when written) orders the candidates.
    let mut best: Option<((bool, usize, std::time::SystemTime), PathBuf)> = None;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut lines = text.lines();
        let (Some(started_in), Some(run_dir)) = (lines.next(), lines.next()) else {
            continue;
        };
        let live = alive(pid);
        if !live && !Path::new(run_dir).join("logs").is_dir() {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let started_in = Path::new(started_in);
        if here.starts_with(started_in) {
            let written = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            let rank = (live, started_in.components().count(), written);
            if best.as_ref().is_none_or(|(best_rank, _)| rank > *best_rank) {
                best = Some((rank, PathBuf::from(run_dir)));
            }
        }
    }
    best.map(|(_, dir)| dir)
}

fn alive(pid: i32) -> bool {
    // EPERM: alive, owned by someone else.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// `up`'s entry in the registry (kept after it ends: see the module doc).
#[derive(Debug)]
pub struct Registration;

impl Registration {
    /// Records that this process, started in the current directory, runs
    /// `run_dir`. Best effort: without a registry, commands still find the
    /// run directory by the other rules.
    pub fn new(run_dir: &RunDir) -> Option<Registration> {
        let registry = registry()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&registry)
            .ok()?;
        let here = std::fs::canonicalize(std::env::current_dir().ok()?).ok()?;
        let path = registry.join(std::process::id().to_string());
        let text = format!("{}\n{}\n", here.display(), run_dir.path.display());
        std::fs::write(&path, text).ok()?;
        Some(Registration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_live_registration_above_here_wins() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let runtime = scratch.path().join("runtime");
        // SAFETY: this is the only test in this binary that sets XDG_RUNTIME_DIR.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &runtime) };
        let project = scratch.path().join("project");
        let nested = project.join("sub");
        std::fs::create_dir_all(nested.join("deeper")).expect("dirs");
        let registry = runtime.join("supervisor");
        std::fs::create_dir_all(&registry).expect("registry");
        let me = std::process::id();
        std::fs::write(
            registry.join(me.to_string()),
            format!("{}\n/run/a\n", project.display()),
        )
        .expect("entry");
        // pid 1 is alive too: a second, deeper registration.
        std::fs::write(
            registry.join("1"),
            format!("{}\n/run/b\n", nested.display()),
        )
        .expect("entry");
        // A dead pid whose run directory is gone is ignored and removed.
        std::fs::write(
            registry.join("999999999"),
            format!("{}\n/run/c\n", nested.display()),
        )
        .expect("entry");
        assert_eq!(
            registered(&nested.join("deeper")),
            Some(PathBuf::from("/run/b"))
        );
        assert_eq!(registered(&project), Some(PathBuf::from("/run/a")));
        assert_eq!(registered(scratch.path()), None);
        assert!(!registry.join("999999999").exists());
        // An ended one whose run directory is still there leads to it when
        // no live one does (logs after `down`).
        let other = scratch.path().join("other");
        let ended_run = other.join(".supervisor");
        std::fs::create_dir_all(ended_run.join("logs")).expect("dirs");
        std::fs::write(
            registry.join("999999998"),
            format!("{}\n{}\n", other.display(), ended_run.display()),
        )
        .expect("entry");
        assert_eq!(registered(&other), Some(ended_run));
    }
}
