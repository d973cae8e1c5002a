//! A fast reader for the YAML manifests are written in. `saphyr-parser`
//! reads all of YAML; for a 1,000-agent manifest its events alone take
//! longer than everything `check` does with them. This reader builds the
//! same tree through the same [`Builder`] in about a quarter of the time
//! (`cargo bench --bench plan`).
//!
//! It reads block mappings and sequences (`- key: value` items, and a
//! sequence written at its key's indentation), flow collections (`[a, "b"]`,
//! `{k: v}`, also over several lines), plain and quoted scalars on one line,
//! comments (any text) and blank lines. On anything else it gives up:
//! anchors, aliases, tags, block scalars (`|`, `>`), a scalar over several
//! lines, quoted or `?` keys, `---` and directives, tabs, `\r`, control
//! characters, non-ASCII text outside comments, and every syntax error.
//! The caller then reads the text again with `saphyr-parser`, which also
//! words every error. The tests below check, on every corpus manifest and
//! on generated text, that whatever this reader accepts reads exactly as
//! `saphyr-parser` reads it; `fuzz/fuzz_targets/yaml.rs` checks it on any
//! text.

use super::{Builder, DuplicateKey, Node, Value};

/// The text needs the full parser.
struct GiveUp;

type Step<T = ()> = Result<T, GiveUp>;

/// Reads `text` if it is in the subset described in the module docs.
pub(super) fn parse(text: &str) -> Option<(Node, Vec<DuplicateKey>)> {
    // Printable ASCII and newlines; other characters only in comments, where
    // the reader counts them (spans count characters, not bytes).
    if !text
        .bytes()
        .all(|byte| byte == b'\n' || (b' '..=b'~').contains(&byte) || byte >= 0x80)
    {
        return None;
    }
    let mut reader = Reader {
        source: text,
        text: text.as_bytes(),
        extra_bytes: 0,
        pos: 0,
        line: 1,
        line_start: 0,
        line_start_index: 0,
        builder: Builder::default(),
        root: None,
    };
    reader.document().ok()?;
    let root = reader.root.take();
    Some(reader.builder.finish(root))
}

/// A position: 1-based line, 0-based column and character index.
#[derive(Clone, Copy)]
struct Mark {
    line: usize,
    column: usize,
    index: usize,
}

struct Reader<'t> {
    source: &'t str,
    text: &'t [u8],
    /// Bytes before `pos` beyond one per character (of non-ASCII characters
    /// in comments): a byte index minus this is a character index.
    extra_bytes: usize,
    pos: usize,
    /// The line of `pos` (1-based) and where it starts (byte and character index).
    line: usize,
    line_start: usize,
    line_start_index: usize,
    builder: Builder,
    root: Option<Node>,
}

impl Reader<'_> {
    /// The byte at `index`, or 0 past the end (the text holds no 0 byte).
    fn byte(&self, index: usize) -> u8 {
        self.text.get(index).copied().unwrap_or(0)
    }

    fn peek(&self) -> u8 {
        self.byte(self.pos)
    }

    fn mark(&self) -> Mark {
        let index = self.pos - self.extra_bytes;
        Mark {
            line: self.line,
            column: index - self.line_start_index,
            index,
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek() == b' ' {
            self.pos += 1;
        }
    }

    /// After spaces: the end of the line, or a comment running to it.
    fn at_line_end(&self) -> bool {
        match self.peek() {
            b'\n' | 0 => true,
            b'#' => self.pos == self.line_start || self.byte(self.pos - 1) == b' ',
            _ => false,
        }
    }

    /// Skips spaces and a comment; the line must end there. Leaves `pos` at
    /// the newline (or the end of the text).
    fn end_of_line(&mut self) -> Step {
        self.skip_spaces();
        if !self.at_line_end() {
            return Err(GiveUp);
        }
        let end = self.comment_end(self.pos)?;
        self.extra_bytes += end.1;
        self.pos = end.0;
        Ok(())
    }

    /// The end of the line (its newline or the end of the text) from `from`
    /// inside a comment, and how many bytes beyond one per character the
    /// comment's non-ASCII characters take. Gives up on characters that
    /// some YAML readers take as line breaks or a byte order mark.
    fn comment_end(&self, from: usize) -> Step<(usize, usize)> {
        let mut at = from;
        let mut extra = 0;
        while !matches!(self.byte(at), b'\n' | 0) {
            if self.byte(at) < 0x80 {
                at += 1;
                continue;
            }
            let character = self.source[at..].chars().next().ok_or(GiveUp)?;
            if matches!(character, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}') {
                return Err(GiveUp);
            }
            at += character.len_utf8();
            extra += character.len_utf8() - 1;
        }
        Ok((at, extra))
    }

    /// From the end of a line to the start of the next.
    fn next_line(&mut self) {
        if self.peek() == b'\n' {
            self.pos += 1;
            self.line += 1;
            self.line_start = self.pos;
            self.line_start_index = self.pos - self.extra_bytes;
        }
    }

    /// Skips blank and comment lines from the start of a line. Returns the
    /// indentation of the next line with content and leaves `pos` at that
    /// content, or `None` at the end of the text.
    fn content_line(&mut self) -> Step<Option<usize>> {
        loop {
            self.skip_spaces();
            match self.peek() {
                0 => return Ok(None),
                b'\n' => self.next_line(),
                b'#' => {
                    self.end_of_line()?;
                    self.next_line();
                }
                _ => {
                    let indent = self.pos - self.line_start;
                    let rest = &self.text[self.pos..];
                    if indent == 0 && (rest.starts_with(b"---") || rest.starts_with(b"...")) {
                        return Err(GiveUp);
                    }
                    return Ok(Some(indent));
                }
            }
        }
    }

    /// A `-` sequence indicator at `pos`.
    fn at_dash(&self) -> bool {
        self.peek() == b'-' && matches!(self.byte(self.pos + 1), b' ' | b'\n' | 0)
    }

    fn found(&mut self, done: Option<Node>) {
        if done.is_some() {
            self.root = done;
        }
    }

    fn open(&mut self, value: Value, at: Mark) -> Step {
        self.builder
            .open(value, 0, at.line, at.column + 1, at.index..at.index)
            .map_err(|_| GiveUp)
    }

    fn close(&mut self, end: usize) -> Step {
        let done = self.builder.close(end).map_err(|_| GiveUp)?;
        self.found(done);
        Ok(())
    }

    /// Adds the scalar written from `start` to `end` on the current line.
    fn scalar(&mut self, start: usize, end: usize, text: String, plain: bool) -> Step {
        let column = start - self.line_start + 1;
        let done = self
            .builder
            .scalar(
                text,
                plain,
                0,
                self.line,
                column,
                start - self.extra_bytes..end - self.extra_bytes,
            )
            .map_err(|_| GiveUp)?;
        self.found(done);
        Ok(())
    }

    /// An empty value (null) at `at`.
    fn null(&mut self, at: Mark) -> Step {
        let done = self
            .builder
            .scalar(
                String::new(),
                true,
                0,
                at.line,
                at.column + 1,
                at.index..at.index,
            )
            .map_err(|_| GiveUp)?;
        self.found(done);
        Ok(())
    }

    /// The whole text: one block mapping starting at column 0.
    fn document(&mut self) -> Step {
        if self.content_line()? != Some(0) {
            return Err(GiveUp);
        }
        match self.block_mapping(0)? {
            None => Ok(()),
            Some(_) => Err(GiveUp),
        }
    }

    /// A block mapping whose first key is at `pos`, in column `indent`.
    /// Every block reader returns the indentation of the next line with
    /// content, with `pos` at that content (`None` at the end of the text).
    fn block_mapping(&mut self, indent: usize) -> Step<Option<usize>> {
        self.open(Value::Mapping(Vec::new()), self.mark())?;
        loop {
            let colon = self.key()?;
            let next = self.mapping_value(indent, colon)?;
            match next {
                Some(next) if next == indent && !self.at_dash() => continue,
                Some(next) if next > indent => return Err(GiveUp),
                _ => {
                    self.close(self.pos)?;
                    return Ok(next);
                }
            }
        }
    }

    /// A plain key at `pos` up to `: ` (or `:` at the end of the line).
    /// Returns the position of the colon, with `pos` after it.
    fn key(&mut self) -> Step<Mark> {
        let start = self.pos;
        if !plain_start(self.peek(), self.byte(start + 1), false) {
            return Err(GiveUp);
        }
        let mut at = start;
        loop {
            match self.byte(at) {
                b':' if matches!(self.byte(at + 1), b' ' | b'\n' | 0) => break,
                b'#' if self.byte(at - 1) == b' ' => return Err(GiveUp),
                b'\n' | 0 => return Err(GiveUp),
                byte if byte >= 0x80 => return Err(GiveUp),
                _ => at += 1,
            }
        }
        let end = trim_end(self.text, start, at);
        if end - start > 1024 {
            return Err(GiveUp);
        }
        self.scalar(start, end, self.slice(start, end), true)?;
        self.pos = at;
        let colon = self.mark();
        self.pos += 1;
        Ok(colon)
    }

    /// What follows `key:`: a value on the same line, or a block collection
    /// on the lines below, or nothing (null).
    fn mapping_value(&mut self, indent: usize, colon: Mark) -> Step<Option<usize>> {
        self.skip_spaces();
        if !self.at_line_end() {
            self.inline_value(indent)?;
            self.end_of_line()?;
            self.next_line();
            return self.content_line();
        }
        self.end_of_line()?;
        self.next_line();
        match self.content_line()? {
            Some(next) if next > indent => self.nested_block(next),
            // A sequence may sit at its key's indentation.
            Some(next) if next == indent && self.at_dash() => self.block_sequence(next, true),
            next => {
                self.null(colon)?;
                Ok(next)
            }
        }
    }

    /// A block collection starting at `pos`, in column `indent`.
    fn nested_block(&mut self, indent: usize) -> Step<Option<usize>> {
        if self.at_dash() {
            self.block_sequence(indent, false)
        } else {
            self.block_mapping(indent)
        }
    }

    /// A block sequence whose first `-` is at `pos`, in column `indent`.
    /// `indentless`: written at its key's indentation (saphyr then places
    /// the start at the first item, not at the `-`).
    fn block_sequence(&mut self, indent: usize, indentless: bool) -> Step<Option<usize>> {
        let mut first = true;
        loop {
            // At a `-`.
            let dash = self.mark();
            self.pos += 1;
            self.skip_spaces();
            let inline = !self.at_line_end();
            if first {
                let start = if !indentless {
                    dash
                } else if inline {
                    self.mark()
                } else {
                    self.end_of_line()?;
                    self.mark()
                };
                self.open(Value::Sequence(Vec::new()), start)?;
                first = false;
            }
            let next = if inline {
                if self.at_dash() {
                    return Err(GiveUp);
                }
                if self.compact_mapping_ahead() {
                    let column = self.pos - self.line_start;
                    self.block_mapping(column)?
                } else {
                    self.inline_value(indent)?;
                    self.end_of_line()?;
                    self.next_line();
                    self.content_line()?
                }
            } else {
                self.end_of_line()?;
                let end = self.mark();
                self.next_line();
                match self.content_line()? {
                    Some(next) if next > indent => self.nested_block(next)?,
                    next => {
                        self.null(end)?;
                        next
                    }
                }
            };
            match next {
                Some(next) if next == indent && self.at_dash() => continue,
                Some(next) if next > indent => return Err(GiveUp),
                _ => {
                    self.close(self.pos)?;
                    return Ok(next);
                }
            }
        }
    }

    /// Whether the item at `pos` is `key: ...` (a mapping starting on the
    /// line of its `-`).
    fn compact_mapping_ahead(&self) -> bool {
        if !plain_start(self.peek(), self.byte(self.pos + 1), false) {
            return false;
        }
        let mut at = self.pos;
        loop {
            match self.byte(at) {
                b':' if matches!(self.byte(at + 1), b' ' | b'\n' | 0) => return true,
                b'#' if self.byte(at - 1) == b' ' => return false,
                b'\n' | 0 => return false,
                byte if byte >= 0x80 => return false,
                _ => at += 1,
            }
        }
    }

    /// A value that starts on the line of its key or `-` (in block context,
    /// at `pos`; `indent` is the column of that key or `-`).
    fn inline_value(&mut self, indent: usize) -> Step {
        match self.peek() {
            b'[' => self.flow_sequence(indent),
            b'{' => self.flow_mapping(indent),
            b'"' | b'\'' => self.quoted_scalar(),
            _ => self.plain(false),
        }
    }

    /// A plain scalar; in flow context it ends at `,`, `]` or `}`.
    fn plain(&mut self, flow: bool) -> Step {
        let start = self.pos;
        if !plain_start(self.peek(), self.byte(start + 1), flow) {
            return Err(GiveUp);
        }
        let mut at = start;
        loop {
            match self.byte(at) {
                b':' if ends_plain(self.byte(at + 1), flow) => return Err(GiveUp),
                b'#' if self.byte(at - 1) == b' ' => break,
                b'\n' | 0 => break,
                b',' | b']' | b'}' if flow => break,
                b'[' | b'{' if flow => return Err(GiveUp),
                byte if byte >= 0x80 => return Err(GiveUp),
                _ => at += 1,
            }
        }
        let end = trim_end(self.text, start, at);
        if end == start {
            return Err(GiveUp);
        }
        self.scalar(start, end, self.slice(start, end), true)?;
        self.pos = end;
        Ok(())
    }

    /// `"..."` (with the common escapes) or `'...'` (`''` is a quote), on
    /// one line.
    fn quoted_scalar(&mut self) -> Step {
        let quote = self.peek();
        let start = self.pos;
        let mut text = String::new();
        let mut from = start + 1;
        let mut at = from;
        loop {
            let byte = self.byte(at);
            if byte == quote && quote == b'\'' && self.byte(at + 1) == b'\'' {
                text.push_str(self.str(from, at + 1));
                at += 2;
                from = at;
            } else if byte == quote {
                break;
            } else if byte == b'\\' && quote == b'"' {
                let escaped = match self.byte(at + 1) {
                    b'\\' => '\\',
                    b'"' => '"',
                    b'/' => '/',
                    b'n' => '\n',
                    b't' => '\t',
                    b'r' => '\r',
                    b'0' => '\0',
                    _ => return Err(GiveUp),
                };
                text.push_str(self.str(from, at));
                text.push(escaped);
                at += 2;
                from = at;
            } else if matches!(byte, b'\n' | 0 | 0x80..) {
                return Err(GiveUp);
            } else {
                at += 1;
            }
        }
        text.push_str(self.str(from, at));
        self.pos = at + 1;
        self.quoted(start, text)
    }

    /// Adds a quoted scalar that started at `start` and whose closing quote
    /// is just before `pos`. Its span runs on over the spaces and comment
    /// after it, as saphyr's does.
    fn quoted(&mut self, start: usize, text: String) -> Step {
        let mut end = self.pos;
        while self.byte(end) == b' ' {
            end += 1;
        }
        if self.byte(end) == b'#' && end > self.pos {
            let (line_end, extra) = self.comment_end(end)?;
            end = line_end - extra;
        }
        self.scalar(start, end, text, false)
    }

    /// A value inside a flow collection.
    fn flow_node(&mut self, indent: usize) -> Step {
        match self.peek() {
            b'[' => self.flow_sequence(indent),
            b'{' => self.flow_mapping(indent),
            b'"' | b'\'' => self.quoted_scalar(),
            _ => self.plain(true),
        }
    }

    /// After an entry of a flow collection: `,` and the next entry, or the
    /// closing bracket. Returns true at the end.
    fn flow_separator(&mut self, close: u8, indent: usize) -> Step<bool> {
        self.flow_space(indent)?;
        if self.peek() == b',' {
            self.pos += 1;
            self.flow_space(indent)?;
            match self.peek() {
                // An empty entry.
                b',' => return Err(GiveUp),
                // A trailing comma.
                byte if byte == close => {}
                _ => return Ok(false),
            }
        }
        match self.peek() {
            byte if byte == close => {
                self.pos += 1;
                self.close(self.pos)?;
                Ok(true)
            }
            _ => Err(GiveUp),
        }
    }

    /// Spaces, line breaks and comments between the parts of a flow
    /// collection. Its lines must be indented past `indent`, the column of
    /// the key or `-` it is the value of.
    fn flow_space(&mut self, indent: usize) -> Step {
        loop {
            self.skip_spaces();
            match self.peek() {
                b'\n' => {
                    self.next_line();
                    self.skip_spaces();
                    if !matches!(self.peek(), b'\n' | b'#') && self.pos - self.line_start <= indent
                    {
                        return Err(GiveUp);
                    }
                }
                b'#' if self.at_line_end() => self.end_of_line()?,
                _ => return Ok(()),
            }
        }
    }

    /// Opens a flow collection at its bracket; returns true when it is
    /// empty (and so already closed).
    fn flow_start(&mut self, value: Value, close: u8, indent: usize) -> Step<bool> {
        self.open(value, self.mark())?;
        self.pos += 1;
        self.flow_space(indent)?;
        if self.peek() != close {
            return Ok(false);
        }
        self.pos += 1;
        self.close(self.pos)?;
        Ok(true)
    }

    /// `[a, b]`, on one line or several.
    fn flow_sequence(&mut self, indent: usize) -> Step {
        if self.flow_start(Value::Sequence(Vec::new()), b']', indent)? {
            return Ok(());
        }
        loop {
            self.flow_node(indent)?;
            if self.flow_separator(b']', indent)? {
                return Ok(());
            }
        }
    }

    /// `{k: v, ...}`, on one line or several, with plain keys.
    fn flow_mapping(&mut self, indent: usize) -> Step {
        if self.flow_start(Value::Mapping(Vec::new()), b'}', indent)? {
            return Ok(());
        }
        loop {
            let start = self.pos;
            if !plain_start(self.peek(), self.byte(start + 1), true) {
                return Err(GiveUp);
            }
            let mut at = start;
            while !(self.byte(at) == b':' && self.byte(at + 1) == b' ') {
                if matches!(
                    self.byte(at),
                    b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'\n' | 0 | 0x80..
                ) {
                    return Err(GiveUp);
                }
                at += 1;
            }
            let end = trim_end(self.text, start, at);
            self.scalar(start, end, self.slice(start, end), true)?;
            self.pos = at + 1;
            self.skip_spaces();
            self.flow_node(indent)?;
            if self.flow_separator(b'}', indent)? {
                return Ok(());
            }
        }
    }

    fn str(&self, start: usize, end: usize) -> &str {
        &self.source[start..end]
    }

    fn slice(&self, start: usize, end: usize) -> String {
        self.str(start, end).to_string()
    }
}

/// Whether a plain scalar may start with `byte` (followed by `next`): not
/// with an indicator, and `-` only when it is not one.
fn plain_start(byte: u8, next: u8, flow: bool) -> bool {
    match byte {
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => true,
        b'_' | b'.' | b'/' | b'~' | b'$' | b'(' | b')' | b'+' | b'=' | b'^' | b';' | b'<' => true,
        b'-' => !ends_plain(next, flow),
        _ => false,
    }
}

/// Whether a `:` followed by `next` ends a plain scalar (a mapping
/// indicator): before a space or the end of the line, and in flow context
/// also before a flow indicator.
fn ends_plain(next: u8, flow: bool) -> bool {
    matches!(next, b' ' | b'\n' | 0) || (flow && is_flow_indicator(next))
}

fn is_flow_indicator(byte: u8) -> bool {
    matches!(byte, b',' | b'[' | b']' | b'{' | b'}')
}

/// `end` moved back over trailing spaces, not before `start`.
fn trim_end(text: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && text[end - 1] == b' ' {
        end -= 1;
    }
    end
}

/// Where the legacy corpus is and how a test says it skipped it: the
/// integration tests' helper, included because unit tests cannot reach
/// `tests/common`.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../tests/common/corpus.rs"]
mod corpus;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yaml::parse_any;

    /// The first node that differs (fast, then saphyr), shown without its children.
    fn first_difference(fast: &Node, full: &Node) -> Option<String> {
        let shallow = |node: &Node| {
            let value = match &node.value {
                Value::Sequence(items) => format!("sequence of {}", items.len()),
                Value::Mapping(entries) => format!("mapping of {}", entries.len()),
                scalar => format!("{scalar:?}"),
            };
            format!("{value} at {}:{} {:?}", node.line, node.column, node.span)
        };
        let children = |node: &Node| -> Vec<Node> {
            match &node.value {
                Value::Sequence(items) => items.clone(),
                Value::Mapping(entries) => entries
                    .iter()
                    .flat_map(|(key, value)| [key.clone(), value.clone()])
                    .collect(),
                _ => Vec::new(),
            }
        };
        if shallow(fast) != shallow(full) {
            return Some(format!("fast: {}\nfull: {}", shallow(fast), shallow(full)));
        }
        children(fast)
            .iter()
            .zip(children(full).iter())
            .find_map(|(fast, full)| first_difference(fast, full))
    }

    /// Whether the fast reader accepts `text`; when it does, its tree and
    /// duplicate keys must be saphyr's.
    fn accepted(text: &str) -> bool {
        let Some((fast, fast_duplicates)) = parse(text) else {
            return false;
        };
        let (full, full_duplicates) = parse_any(text).unwrap_or_else(|error| {
            panic!("saphyr fails ({error}) on what the fast reader took:\n{text}")
        });
        if let Some(difference) = first_difference(
            &fast.without_collection_ends(),
            &full.without_collection_ends(),
        ) {
            panic!("the trees differ for:\n{text}\n--- {difference}");
        }
        assert_eq!(
            fast_duplicates, full_duplicates,
            "duplicates differ for:\n{text}"
        );
        true
    }

    #[test]
    fn reads_block_style_as_saphyr_does() {
        let texts = [
            "a: 1",
            "a: 1\n",
            "# comment\n\nversion: 1\nagents:\n  a:   # trailing\n    command: [\"python3\", 'x.py', --port, 7200]\n    env: { A: \"1\", B: x y }\n    deps:\n      - b\n      -  c d  \n    empty:\n    q: \"a\\tb\\\\c\\\"d\"\n  b: {}\n",
            "a:\nb:   # c\n\nc:\n  - \n  -\n  - # x\nd:\n- x\n-   y: 1\n    z:\ne: [ a , \"b\" ]  # c\nf: {}\ng:\n",
            "d:\n-   x\ne:\n- a: 1\n  b: 2\nf:\n-\n  - y\nh: [http://x, a:b, -1]\ni: { a: [1, {b: c}] }\n",
            "a: 'it''s'\nb: ''\nc: \"\"\nd: ~\ne: a#b\nf: x  y   \ng: [--port, -1, .5]\n",
            "a: 1\na: 2\nb:\n  c: 1\n  c: 2\n",
            "<<: {a: 1, b: 2}\nb: 3\n",
            "agents:\n- name: x\n  port: ${PORT_OFFSET}+7200\n  depends_on: []\n- name: y\n",
            "a:\n  - - x\n",
            "a: b\n    # indented comment\nc: d\n",
            "key   : value\n",
            "a: [1,\n  2]\nb: [1, 2,]\nc: {x: 1, }\nd:\n  - {\n      name: A, # the name\n      port: 7100,\n\n      deps: [B,\n        C],\n    }\n  - { name: B ,\n      port: \"1\" }\n",
            "# ✅ done “x”\na: 1 # ⊗ note\nb:\n  - # ❌\n  - \"q\"  # ■ after\n  - 'r' # □\nc: [x] # ✅\n",
        ];
        let accepted_count = texts.iter().filter(|text| accepted(text)).count();
        // All but the nested compact sequence (`- - x`) are in the subset.
        assert_eq!(accepted_count, texts.len() - 1);
    }

    #[test]
    fn gives_up_outside_the_subset() {
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: |\n  text\n",
            "a: >\n  text\n",
            "a: one\n  two\n",
            "a: \"one\n  two\"\n",
            "\"a\": 1\n",
            "? a\n: 1\n",
            "---\na: 1\n",
            "a: 1\n---\nb: 2\n",
            "a:\tb\n",
            "a: b\r\n",
            "a: é\n",
            "- a\n- b\n",
            "  a: 1\n",
            "",
            "# only a comment\n",
            "a: b: c\n",
            "a: {b}\n",
            "a: \"\\x41\"\n",
            "a: 1\n b: 2\n",
            "a: x✅\n",
            "✅: 1\n",
            "a: [\"✅\"]\n",
            "a: [1,\n2]\n",
            "a: {b: one\n  two}\n",
            "- {\n  a: 1\n}\n",
            "a: 1 # \u{2028} line separator\n",
        ] {
            assert!(parse(text).is_none(), "the fast reader took:\n{text}");
            // The full parser still decides: it reads or rejects each of them.
            let _ = parse_any(text);
        }
    }

    /// Every `.yaml`/`.yml` file under `dir`, recursively.
    fn collect_manifests(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("the directory exists") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                collect_manifests(&path, files);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                files.push(path);
            }
        }
    }

    /// The in-repo manifests (config/, tests/fixtures/, including one per
    /// legacy format) always; the legacy corpus when it is there, else a
    /// visible skip line for that part.
    #[test]
    fn reads_every_corpus_manifest_as_saphyr_does() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["config", "tests/fixtures"] {
            collect_manifests(&root.join(dir), &mut files);
        }
        let in_repo = files.len();
        // tests/fixtures/legacy alone holds ten (one per legacy format).
        assert!(
            in_repo >= 10,
            "only {in_repo} manifests in config/ and tests/fixtures/"
        );
        match super::corpus::corpus() {
            Some(dir) => {
                collect_manifests(&dir, &mut files);
                assert!(
                    files.len() > 100,
                    "only {} manifests found with the corpus",
                    files.len()
                );
            }
            // The in-repo part still runs; only the corpus part is skipped.
            None => super::corpus::skip(
                "manifest::yaml::fast::tests::reads_every_corpus_manifest_as_saphyr_does (corpus part)",
                &super::corpus::corpus_missing(),
            ),
        }
        let mut taken = 0;
        for path in &files {
            let text = std::fs::read_to_string(path).expect("a readable manifest");
            if accepted(&text) {
                taken += 1;
            }
        }
        eprintln!("fast reader took {taken} of {} manifests", files.len());
        assert!(
            taken * 2 > files.len(),
            "the fast reader took only {taken} of {} manifests",
            files.len()
        );
    }

    /// Random documents in the shapes manifests have (nested block mappings
    /// and sequences, `- key:` items, flow values, comments), some lines
    /// mutated (indentation off by one, values outside the subset, a missing
    /// newline), so that both the readings and the refusals are exercised.
    #[test]
    fn reads_generated_text_as_saphyr_does() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let cases = 20_000;
        let mut taken = 0;
        for _ in 0..cases {
            let mut lines = Vec::new();
            generate_mapping(&mut random, &mut lines, 0, 0);
            let mut text = String::new();
            for line in lines {
                let line = if random(12) == 0 {
                    mutate(&mut random, &line)
                } else {
                    line
                };
                text.push_str(&line);
                if random(40) > 0 {
                    text.push('\n');
                }
            }
            if accepted(&text) {
                taken += 1;
            }
        }
        eprintln!("fast reader took {taken} of {cases} generated texts");
        // The generator must exercise the fast reader, not only its refusals.
        assert!(
            taken > cases / 5,
            "the fast reader took only {taken} of {cases}"
        );
    }

    const KEYS: [&str; 8] = ["a", "name", "port", "b c", "x.y", "-k", "a#b", "k_1 "];
    const VALUES: [&str; 26] = [
        "1",
        "x",
        "x y",
        "\"q\"",
        "'q'",
        "\"a\\\"b\"",
        "'it''s'",
        "[]",
        "{}",
        "[a, b]",
        "[ \"a\" , 'b' ]",
        "{a: 1, b: [2]}",
        "{a: {b: c}}",
        "[--p, -1]",
        "${X:-1}+2",
        "~",
        "x # c",
        "x#y",
        "http://h:1/p",
        "\"\"",
        "[a, b, ]",
        "{a: 1,}",
        "[a,\n      b]",
        "{\n      a: \"x\",  # c\n      b: [1,\n        2]\n    }",
        "[\n  x ,\n\n   'y'\n   ]",
        "{ a: 1 # c\n      , b: 2 }",
    ];
    const ODD: [&str; 19] = [
        "a: b",
        "[a,",
        "{a}",
        "&x 1",
        "*x",
        "|",
        "- x",
        "a:b",
        "[a, b]x",
        "\"x\" y",
        "[a:b]",
        "{a: }",
        "[a, , b]",
        "-",
        "?x",
        "!t x",
        "\"\\x41\"",
        "'a",
        "é",
    ];

    fn generate_mapping(
        random: &mut impl FnMut(usize) -> usize,
        lines: &mut Vec<String>,
        indent: usize,
        depth: usize,
    ) {
        for index in 0..1 + random(4) {
            let pad = " ".repeat(indent);
            match random(16) {
                0 => lines.push(format!("{pad}# comment")),
                1 => lines.push(format!("{pad}# ✅ “done”")),
                _ => {}
            }
            if random(10) == 0 {
                lines.push(String::new());
            }
            let key = KEYS[random(KEYS.len())];
            // A compact mapping's first key shares the line of its `-`.
            let lead = if index == 0 && lines.last().is_some_and(|line| line.ends_with("- ")) {
                lines.pop().unwrap_or_default()
            } else {
                pad.clone()
            };
            match random(6) {
                0 if depth < 4 => {
                    lines.push(format!("{lead}{key}:"));
                    generate_mapping(random, lines, indent + 2, depth + 1);
                }
                1 if depth < 4 => {
                    lines.push(format!("{lead}{key}:"));
                    let items = if random(2) == 0 { indent + 2 } else { indent };
                    generate_sequence(random, lines, items, depth + 1);
                }
                2 => lines.push(format!("{lead}{key}:")),
                _ => lines.push(format!("{lead}{key}: {}", VALUES[random(VALUES.len())])),
            }
        }
    }

    fn generate_sequence(
        random: &mut impl FnMut(usize) -> usize,
        lines: &mut Vec<String>,
        indent: usize,
        depth: usize,
    ) {
        let pad = " ".repeat(indent);
        for _ in 0..1 + random(4) {
            match random(5) {
                0 if depth < 4 => {
                    lines.push(format!("{pad}- "));
                    generate_mapping(random, lines, indent + 2, depth + 1);
                }
                1 if depth < 4 => {
                    lines.push(format!("{pad}-"));
                    generate_mapping(random, lines, indent + 2, depth + 1);
                }
                2 => lines.push(format!("{pad}-")),
                _ => lines.push(format!("{pad}- {}", VALUES[random(VALUES.len())])),
            }
        }
    }

    fn mutate(random: &mut impl FnMut(usize) -> usize, line: &str) -> String {
        match random(4) {
            0 => format!(" {line}"),
            1 => line.strip_prefix(' ').unwrap_or(line).to_string(),
            2 if random(2) == 0 => format!("{line}   # note"),
            2 => format!("{line} # ⊗ “note”"),
            _ => match line.rfind(": ") {
                Some(at) => format!("{}: {}", &line[..at], ODD[random(ODD.len())]),
                None => format!("{line} {}", ODD[random(ODD.len())]),
            },
        }
    }
}
