//! Fuzz target: `yaml::parse` (the fast reader, falling back to
//! saphyr-parser) must read any text exactly as `yaml::parse_any`
//! (saphyr-parser alone) does: the same tree, the same duplicate keys, and
//! an error where it fails. Run (stable toolchain, no sanitizer):
//! `cargo fuzz run yaml -s none -- -max_total_time=60` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervisor::manifest::yaml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match (yaml::parse(text), yaml::parse_any(text)) {
        (Ok((tree, duplicates)), Ok((full_tree, full_duplicates))) => {
            assert_eq!(
                tree.without_collection_ends(),
                full_tree.without_collection_ends(),
                "trees differ for {text:?}"
            );
            assert_eq!(duplicates, full_duplicates, "duplicate keys differ for {text:?}");
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(error)) => panic!("read {text:?}, which saphyr-parser rejects: {error}"),
        (Err(error), Ok(_)) => panic!("rejected {text:?} ({error}), which saphyr-parser reads"),
    }
});
