//! `docs/manifest.schema.json` is generated from the manifest's Rust types
//! and must stay fresh. Regenerate with `UPDATE_SCHEMA=1 cargo test --test it schema::`.

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
    assert!(
        committed == text,
        "docs/manifest.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test --test it schema::`"
    );
}

#[test]
fn example_manifests_check_as_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let check = |name: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_supervisor"))
            // conflicts.yaml illustrates ports: its scripts do not exist.
            .args([
                "check",
                "--no-bind-check",
                "--no-file-check",
                "--json",
                "-c",
            ])
            .arg(dir.join(name))
            .env_remove("PORT_OFFSET")
            .output()
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        (
            output.status.code(),
            value["problems"].as_array().unwrap().clone(),
        )
    };
    let (code, problems) = check("startup.yaml");
    assert_eq!(
        code,
        Some(0),
        "the README's example must pass check: {problems:?}"
    );
    // The README's check-ports example: two real conflicts (and one legacy-http warning).
    let (code, problems) = check("conflicts.yaml");
    assert_eq!(code, Some(1));
    let errors: Vec<(i64, u64)> = problems
        .iter()
        .filter(|problem| problem["severity"] == "error")
        .map(|problem| {
            (
                problem["port"].as_i64().unwrap(),
                problem["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(errors, [(7211, 18), (7221, 23)], "{problems:?}");
}
