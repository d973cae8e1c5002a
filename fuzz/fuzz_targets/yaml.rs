//! Fuzz target: `yaml::parse` reads any text without panicking, and every
//! position it reports lies inside the text. Run (stable toolchain, no
//! sanitizer): `cargo fuzz run yaml -s none -- -max_total_time=60` from the
//! repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supervisor::manifest::yaml::{self, Node, Value};

fn check_positions(node: &Node, text: &str) {
    assert!(node.line >= 1 && node.column >= 1, "position 0 in {text:?}");
    assert!(node.span.end <= text.len(), "span past the end of {text:?}");
    match &node.value {
        Value::Sequence(items) => items.iter().for_each(|item| check_positions(item, text)),
        Value::Mapping(entries) => entries.iter().for_each(|(key, value)| {
            check_positions(key, text);
            check_positions(value, text);
        }),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok((tree, _duplicates)) = yaml::parse(text) {
        check_positions(&tree, text);
    }
});
