//! `check-ports --fix`: changes only the conflicting port values in the
//! manifest text, in place, so comments, order and layout stay as written.
//!
//! Owns text editing; which value to change and to what is decided by the
//! port check (`PortFix`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::PortFix;
use crate::manifest::Manifest;
use crate::manifest::yaml::byte_offset;

/// One file's corrected text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedFile {
    /// The manifest file.
    pub path: PathBuf,
    /// Its whole new text: only the port values changed, comments and
    /// layout kept.
    pub text: String,
    /// `agent.field: old -> new` for each change made.
    pub changes: Vec<String>,
    /// Values that could not be changed in place, with why.
    pub skipped: Vec<String>,
}

/// Applies the fixes to the texts the manifest was read from and returns
/// one [`FixedFile`] per file that has a fix, in path order; writing them is
/// the caller's job (`cli`).
///
/// A fix whose file is not among `manifest.files` is ignored. A value that
/// is not a plain number, a quoted number or `${VAR}+N` is left as written
/// and listed in [`FixedFile::skipped`]. Changes are applied from the end of
/// the text backwards, so each fix's span stays valid; `changes` and
/// `skipped` are listed in text order.
pub fn apply(manifest: &Manifest, fixes: &[PortFix]) -> Vec<FixedFile> {
    let mut by_file: BTreeMap<&PathBuf, Vec<&PortFix>> = BTreeMap::new();
    for fix in fixes {
        by_file.entry(&fix.file).or_default().push(fix);
    }
    let mut fixed = Vec::new();
    for (path, mut fixes) in by_file {
        let Some(source) = manifest.files.iter().find(|file| &file.path == path) else {
            continue;
        };
        let mut text = source.text.clone();
        let mut changes = Vec::new();
        let mut skipped = Vec::new();
        // From the end backwards so earlier offsets stay valid.
        fixes.sort_by_key(|fix| std::cmp::Reverse(fix.span.start));
        for fix in fixes {
            let start = byte_offset(&source.text, fix.span.start);
            let end = byte_offset(&source.text, fix.span.end);
            match replace_port(&text[start..end], fix.old, fix.new) {
                Some(value) => {
                    text.replace_range(start..end, &value);
                    changes.push(format!(
                        "{}.{}: {} -> {}",
                        fix.agent, fix.field, fix.old, fix.new
                    ));
                }
                None => skipped.push(format!(
                    "{}.{}: `{}` is not a plain number or `${{VAR}}+N`; change it by hand to {}",
                    fix.agent,
                    fix.field,
                    &text[start..end],
                    fix.new
                )),
            }
        }
        changes.reverse();
        skipped.reverse();
        fixed.push(FixedFile {
            path: path.clone(),
            text,
            changes,
            skipped,
        });
    }
    fixed
}

/// `7200`, `"7200"` or `${PORT_OFFSET}+7200` with the port moved from `old`
/// to `new` (for the arithmetic form the literal moves by the same amount).
/// The span of a quoted value runs on over the spaces and comment after it
/// (as the YAML parser reports it); that tail is kept as it was.
fn replace_port(value: &str, old: u16, new: u16) -> Option<String> {
    if let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'')
        && let Some(close) = value[1..].find(quote)
    {
        let (quoted, tail) = value.split_at(close + 2);
        return replace_port(quoted.trim_matches(quote), old, new)
            .map(|moved| format!("{quote}{moved}{quote}{tail}"));
    }
    let inner = value.trim().trim_matches(|c| c == '"' || c == '\'');
    let is_number = !inner.is_empty() && inner.bytes().all(|byte| byte.is_ascii_digit());
    let is_arithmetic = inner.starts_with("${")
        && inner.rsplit_once("}+").is_some_and(|(_, digits)| {
            !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit())
        });
    if !is_number && !is_arithmetic {
        return None;
    }
    let digits_end = value.rfind(|c: char| c.is_ascii_digit())? + 1;
    let digits_start = value[..digits_end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map(|index| index + 1)
        .unwrap_or(0);
    let written: i64 = value[digits_start..digits_end].parse().ok()?;
    let moved = written + i64::from(new) - i64::from(old);
    (moved >= 0).then(|| format!("{}{moved}{}", &value[..digits_start], &value[digits_end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_quoted_and_arithmetic_values_are_moved() {
        assert_eq!(replace_port("7200", 7200, 7205).as_deref(), Some("7205"));
        assert_eq!(
            replace_port("\"7200\"", 7200, 7205).as_deref(),
            Some("\"7205\"")
        );
        assert_eq!(
            replace_port("${PORT_OFFSET}+7200", 7300, 7305).as_deref(),
            Some("${PORT_OFFSET}+7205")
        );
        assert_eq!(replace_port("${PORT}", 7200, 7205), None);
        assert_eq!(
            replace_port("'7200'   # the API port", 7200, 7205).as_deref(),
            Some("'7205'   # the API port")
        );
        assert_eq!(replace_port("\"\"  # empty", 7200, 7205), None);
    }
}
