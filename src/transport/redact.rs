//! Redaction of secret-looking values before they are written anywhere
//! (the error journal, logs, the error bus, status): values whose key looks
//! like a secret (`*_KEY`, `*_TOKEN`, `*PASSWORD*`, `*SECRET*`, ...) are
//! replaced with `"[redacted]"`.
//!
//! Owns the naming rule only; callers decide what to pass through it.

use serde_json::{Map, Value};

/// What a redacted value becomes.
pub const REDACTED: &str = "[redacted]";

/// Whether a variable or field name looks like it holds a secret.
///
/// ```
/// use supervisor::transport::redact::is_secret_name;
/// assert!(is_secret_name("OPENAI_API_KEY"));
/// assert!(is_secret_name("agent_token"));
/// assert!(is_secret_name("DB_PASSWORD"));
/// assert!(!is_secret_name("KEYBOARD_LAYOUT"));
/// ```
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.ends_with("_KEY")
        || upper == "KEY"
        || upper.ends_with("_TOKEN")
        || upper == "TOKEN"
        || upper.contains("PASSWORD")
        || upper.contains("PASSWD")
        || upper.contains("SECRET")
        || upper.contains("CREDENTIAL")
        || upper.ends_with("_APIKEY")
        || upper == "APIKEY"
}

/// Replaces, in place and at any depth, every value whose key looks secret.
/// Returns how many values were replaced.
pub fn redact_map(map: &mut Map<String, Value>) -> usize {
    let mut replaced = 0;
    for (key, value) in map.iter_mut() {
        if is_secret_name(key) {
            if *value != Value::String(REDACTED.into()) {
                *value = Value::String(REDACTED.into());
                replaced += 1;
            }
        } else {
            replaced += redact_value(value);
        }
    }
    replaced
}

fn redact_value(value: &mut Value) -> usize {
    match value {
        Value::Object(map) => redact_map(map),
        Value::Array(items) => items.iter_mut().map(redact_value).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_replaced_at_any_depth() {
        let mut map = serde_json::json!({
            "user": "ana",
            "API_KEY": "sk-123",
            "nested": {"db_password": "hunter2", "list": [{"auth_token": "t"}, 1]},
        })
        .as_object()
        .cloned()
        .unwrap();
        assert_eq!(redact_map(&mut map), 3);
        assert_eq!(
            Value::Object(map),
            serde_json::json!({
                "user": "ana",
                "API_KEY": "[redacted]",
                "nested": {"db_password": "[redacted]", "list": [{"auth_token": "[redacted]"}, 1]},
            })
        );
    }
}
