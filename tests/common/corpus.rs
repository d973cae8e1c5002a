//! Where the legacy corpus is, and how a test that needs it says it was
//! skipped. Owns: the lookup rule (`SUPERVISOR_CORPUS`, else
//! `../shared/corpus`) and the skip line and log. Does not own: what the
//! corpus contains (tests/it/corpus.rs reads INDEX.tsv).
//!
//! Shared by the integration tests (`tests/common/mod.rs` re-exports it) and
//! by `scripts/bench_check.rs`, which includes this file with `#[path]`. So
//! it uses `std` alone.

use std::io::Write;
use std::path::PathBuf;

/// The variable naming a directory that contains `legacy-startup-configs/`.
pub const CORPUS_VARIABLE: &str = "SUPERVISOR_CORPUS";

/// The variable naming a file each skip appends `<test_name>\t<reason>\n` to.
pub const SKIP_LOG_VARIABLE: &str = "SUPERVISOR_SKIP_LOG";

/// The corpus tried when `SUPERVISOR_CORPUS` is unset.
fn default_corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

/// The legacy corpus's `legacy-startup-configs/` directory, or `None` when
/// the corpus is missing:
///
/// - `SUPERVISOR_CORPUS=DIR` (not empty): `DIR/legacy-startup-configs`. If
///   that is not a directory, this panics: a variable pointing nowhere is a
///   misconfiguration, not a reason to skip.
/// - `SUPERVISOR_CORPUS=` (set, empty): explicitly no corpus, `None`. This is
///   how to run the suite as on a fresh clone while the corpus is present.
/// - unset: `<CARGO_MANIFEST_DIR>/../shared/corpus/legacy-startup-configs`
///   when `../shared/corpus` exists (panics if that folder lacks
///   `legacy-startup-configs/`), else `None`.
pub fn corpus() -> Option<PathBuf> {
    let root = match std::env::var_os(CORPUS_VARIABLE) {
        Some(value) if value.is_empty() => return None,
        Some(value) => PathBuf::from(value),
        None if default_corpus().is_dir() => default_corpus(),
        None => return None,
    };
    let dir = root.join("legacy-startup-configs");
    assert!(
        dir.is_dir(),
        "the legacy corpus is misconfigured: {} is not a directory \
         ({CORPUS_VARIABLE} must name a directory containing legacy-startup-configs/; \
         set it to the empty string to run without the corpus)",
        dir.display()
    );
    Some(dir)
}

/// Why a test that needs the corpus was skipped, and how to provide it.
pub fn corpus_missing() -> String {
    let why = match std::env::var_os(CORPUS_VARIABLE) {
        Some(_) => format!("{CORPUS_VARIABLE} is set to the empty string"),
        None => format!("tried {}", default_corpus().display()),
    };
    format!(
        "the legacy corpus is missing: set {CORPUS_VARIABLE} to a directory \
         containing legacy-startup-configs/ ({why})"
    )
}

/// The corpus directory, or `None` after reporting `test_name` as skipped.
pub fn corpus_or_skip(test_name: &str) -> Option<PathBuf> {
    let corpus = corpus();
    if corpus.is_none() {
        skip(test_name, &corpus_missing());
    }
    corpus
}

/// Reports that `test_name` did not run its checks, and why:
///
/// - writes `SKIPPED <test_name>: <reason>\n` straight to the process's
///   stderr (not `eprintln!`, which libtest captures and hides for passing
///   tests), so a plain `cargo test` shows it;
/// - when `SUPERVISOR_SKIP_LOG` is set, appends `<test_name>\t<reason>\n` to
///   that file (created if needed), which scripts/test.sh counts and lists.
///   A log that cannot be written panics.
///
/// The caller then returns without asserting anything.
pub fn skip(test_name: &str, reason: &str) {
    let line = format!("SKIPPED {test_name}: {reason}\n");
    // Nothing useful to do if stderr itself is gone.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_VARIABLE) {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap_or_else(|error| panic!("cannot open {SKIP_LOG_VARIABLE}={path:?}: {error}"));
        // One write per line: appends from parallel tests do not interleave.
        log.write_all(format!("{test_name}\t{reason}\n").as_bytes())
            .unwrap_or_else(|error| panic!("cannot write {SKIP_LOG_VARIABLE}={path:?}: {error}"));
    }
}
