//! `docs/manifest.schema.json` is generated from the manifest's Rust types
//! and must stay fresh. Regenerate with `UPDATE_SCHEMA=1 cargo test --test schema`.

use std::path::Path;

#[test]
fn manifest_schema_is_fresh() {
    let schema = schemars::schema_for!(supervisor::manifest::raw::RawManifest);
    let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/manifest.schema.json");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == text, "docs/manifest.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test --test schema`");
}

#[test]
fn example_manifests_validate_against_their_own_rules() {
    // Every manifest under config/ must pass `check` (warnings allowed).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "yaml") {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_supervisor"))
                .args(["check", "--no-bind-check", "-c"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
        }
    }
}
