//! Fuzz target: any bytes through the manifest loader, the checks and the
//! planner must never panic. Run (stable toolchain, no sanitizer):
//! `cargo fuzz run manifest -s none -- -max_total_time=60` from the repository root.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use supervisor::check::{check_manifest, CheckOptions};
use supervisor::manifest::{load_str, LoadOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let options = LoadOptions { environment: Some(HashMap::from([("HOST".to_string(), "h".to_string())])), ..LoadOptions::default() };
    if let Ok(loaded) = load_str(Path::new("fuzz.yaml"), text, &options) {
        let report = check_manifest(loaded.manifest, loaded.problems, &CheckOptions { bind_check: false, this_host: "localhost".into(), files: false, ..CheckOptions::default() });
        let _ = supervisor::plan::Plan::new(&report.manifest);
    }
});
