//! Fuzz target: `yaml::parse` (the fast reader, falling back to
//! saphyr-parser) must read any text exactly as `yaml::parse_any`
//! (saphyr-parser alone) does: the same tree, the same duplicate keys, and
//! an error where it fails. Run (stable toolchain, no sanitizer):
//! `cargo fuzz run yaml -s none -- -max_total_time=60` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervisor::manifest::yaml::{self, Node, Value};

/// `node` with the ends of collections cleared (saphyr ends a collection at
/// the token after it; nothing reads that end).
fn normalized(mut node: Node) -> Node {
    node.value = match node.value {
        Value::Sequence(items) => {
            node.span.end = node.span.start;
            Value::Sequence(items.into_iter().map(normalized).collect())
        }
        Value::Mapping(entries) => {
            node.span.end = node.span.start;
            Value::Mapping(entries.into_iter().map(|(key, value)| (normalized(key), normalized(value))).collect())
        }
        scalar => scalar,
    };
    node
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match (yaml::parse(text), yaml::parse_any(text)) {
        (Ok((tree, duplicates)), Ok((full_tree, full_duplicates))) => {
            assert_eq!(normalized(tree), normalized(full_tree), "trees differ for {text:?}");
            assert_eq!(duplicates, full_duplicates, "duplicate keys differ for {text:?}");
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(error)) => panic!("read {text:?}, which saphyr-parser rejects: {error}"),
        (Err(error), Ok(_)) => panic!("rejected {text:?} ({error}), which saphyr-parser reads"),
    }
});
