//! Property tests: the loader and the checker never panic, whatever the
//! input, and finish in bounded time. (A cargo-fuzz target over the same
//! entry point lives in fuzz/.)

use std::collections::HashMap;
use std::path::Path;

use proptest::prelude::*;
use supervisor::check::{CheckOptions, check_manifest};
use supervisor::manifest::{LoadOptions, load_str};

fn options() -> LoadOptions {
    LoadOptions {
        environment: Some(HashMap::from([("HOST".to_string(), "h".to_string())])),
        ..LoadOptions::default()
    }
}

fn load_and_check(text: &str) {
    if let Ok(loaded) = load_str(Path::new("fuzz.yaml"), text, &options()) {
        let report = check_manifest(
            loaded.manifest,
            loaded.problems,
            &CheckOptions {
                bind_check: false,
                this_host: "localhost".into(),
                files: false,
                compile: false,
                running: Default::default(),
            },
        );
        let _ = supervisor::plan::Plan::new(&report.manifest);
    }
}

/// Fragments of manifests, glued together at random, hit far more code than random bytes.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("version: 1\n".to_string()),
        Just("agents:\n".to_string()),
        Just("  a:\n    command: [x]\n".to_string()),
        Just("  - {name: b, command: \"y z\", dependencies: [a, b]}\n".to_string()),
        Just("    port: ${PORT_OFFSET}+7200\n".to_string()),
        Just("    readiness: { tcp: 1, zmq: 2 }\n".to_string()),
        Just("    restart: { policy: on-failure, backoff: { initial: 1ms } }\n".to_string()),
        Just("agent_groups:\n  g:\n    A: {script_path: a.py, port: 5}\n".to_string()),
        Just("pc2_services:\n- name: P\n  port: 1\n  dependencies: [A]\n".to_string()),
        Just("x: &a [*a]\n".to_string()),
        Just("<<: {a: 1}\n".to_string()),
        Just("    env: {K: ${HOST}}\n".to_string()),
        Just("    stop: {signal: SIGNOPE, grace: -1}\n".to_string()),
        "[ -~\n]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        load_and_check(&text);
    }

    #[test]
    fn glued_fragments_never_panic(parts in proptest::collection::vec(fragment(), 0..12)) {
        load_and_check(&parts.concat());
    }
}
