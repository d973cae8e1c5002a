//! YAML text -> [`Node`] tree that remembers where every value was written,
//! and a serde `Deserializer` over that tree whose errors carry the line,
//! column and dotted path of the value at fault.
//!
//! Owns: parsing (from `saphyr-parser` events, the one YAML reader), alias expansion with a size limit
//! (billion-laughs), `<<` merge keys, duplicate-key detection, nesting
//! limits. Does not own variables or manifest semantics.

use std::fmt;
use std::ops::Range;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// Deeper nesting than this is rejected (keeps recursion in the deserializer bounded).
const MAX_DEPTH: usize = 64;
/// Total nodes allowed after alias expansion (billion-laughs guard).
const MAX_NODES: usize = 2_000_000;

/// A YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What was written (aliases already expanded).
    pub value: Value,
    /// 1-based line of the value's first character.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Character (not byte) range of the value in the text, as
    /// `saphyr-parser` reports it: a quoted scalar's runs on over the spaces
    /// and comment after it, a collection's ends where the next token starts.
    pub span: Range<usize>,
}

/// The three YAML shapes. Tags are not kept: manifests do not use them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar as written. `plain` scalars get their type from their text
    /// (`7200` is a number, `true` a boolean, `~` null); quoted ones are strings.
    Scalar {
        /// The scalar's value after YAML unescaping and folding.
        text: String,
        /// Written in plain style (no quotes, no `|`/`>` block), so its
        /// text decides its type.
        plain: bool,
    },
    /// Items in the order written.
    Sequence(Vec<Node>),
    /// Entries in the order written (duplicates removed: the last one wins).
    Mapping(Vec<(Node, Node)>),
}

/// A key written twice in the same mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateKey {
    /// The key's text.
    pub key: String,
    /// 1-based line of the later occurrence (the one that is used).
    pub line: usize,
    /// 1-based column of the later occurrence.
    pub column: usize,
    /// Line of the earlier occurrence.
    pub first_line: usize,
    /// The keys of the earlier occurrence's value when it was a mapping
    /// (what the last occurrence hid: the agents of a group written twice).
    pub hidden_keys: Vec<String>,
}

/// A parse or deserialization error, with the position of the value at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// What is wrong, without the position.
    pub message: String,
    /// 1-based line of the value at fault.
    pub line: usize,
    /// 1-based column of the value at fault.
    pub column: usize,
    /// Dotted path of the value (`agents.db.port`), empty at the top.
    pub path: String,
    /// Whether line/column/path were filled in (they are set by the
    /// innermost node that sees the error).
    located: bool,
}

impl Error {
    /// An error located at `node`, whose dotted path is `path`.
    fn new(message: impl Into<String>, node: &Node, path: &str) -> Error {
        Error {
            message: message.into(),
            line: node.line,
            column: node.column,
            path: path.to_string(),
            located: true,
        }
    }

    /// Gives an error raised by serde (which knows no positions) the
    /// position of `node`, unless a deeper node already did: errors bubble
    /// up through every enclosing node, and the innermost one is the value
    /// at fault.
    fn locate(mut self, node: &Node, path: &str) -> Error {
        if !self.located {
            self.line = node.line;
            self.column = node.column;
            self.path = path.to_string();
            self.located = true;
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    /// An error not located yet; `Error::locate` fills the position in.
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error {
            message: message.to_string(),
            line: 0,
            column: 0,
            path: String::new(),
            located: false,
        }
    }

    /// "unknown field", with the closest known field as a suggestion, or
    /// the list of known fields when none is close.
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut message = format!("unknown field `{field}`");
        if let Some(close) = did_you_mean(field, expected) {
            message.push_str(&format!(" (did you mean `{close}`?)"));
        } else if !expected.is_empty() {
            message.push_str(&format!("; expected one of: {}", expected.join(", ")));
        }
        de::Error::custom(message)
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely
/// typo (Jaro-Winkler similarity above 0.8).
///
/// ```
/// use supervisor::manifest::yaml::did_you_mean;
/// assert_eq!(did_you_mean("dependecies", &["dependencies", "depends_on"]), Some("dependencies"));
/// assert_eq!(did_you_mean("xyz", &["dependencies"]), None);
/// ```
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (strsim::jaro_winkler(word, candidate), *candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

impl Node {
    /// A node at a known position.
    fn new(value: Value, line: usize, column: usize, span: Range<usize>) -> Node {
        Node {
            value,
            line,
            column,
            span,
        }
    }

    /// An empty mapping at the start of the text (what an empty file reads as).
    pub fn empty_mapping() -> Node {
        Node::new(Value::Mapping(Vec::new()), 1, 1, 0..0)
    }

    /// A plain scalar at the position of `at` (for values made up by the loader).
    pub fn scalar_at(text: impl Into<String>, at: &Node) -> Node {
        Node::new(
            Value::Scalar {
                text: text.into(),
                plain: false,
            },
            at.line,
            at.column,
            at.span.clone(),
        )
    }

    /// A sequence or mapping made up by the loader, placed at `at`.
    pub fn with_value(value: Value, at: &Node) -> Node {
        Node::new(value, at.line, at.column, at.span.clone())
    }

    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for `~`, `null`, `Null`, `NULL` and empty plain scalars.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if is_null_text(text))
    }

    /// The entries when this is a mapping, else `None`.
    pub fn as_mapping(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Mapping(entries) => Some(entries),
            _ => None,
        }
    }

    /// The items when this is a sequence, else `None`.
    pub fn as_sequence(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Sequence(items) => Some(items),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.get_entry(key).map(|(_, value)| value)
    }

    /// The key node and value node under `key` in a mapping.
    pub fn get_entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_mapping()?
            .iter()
            .find(|(name, _)| name.as_str() == Some(key))
            .map(|(name, value)| (name, value))
    }

    /// A short word for error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
        }
    }

    /// Plain JSON for pass-through data (`config:`, legacy extras).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Scalar { text, plain: true } => match resolve_plain(text) {
                Plain::Null => serde_json::Value::Null,
                Plain::Bool(value) => value.into(),
                Plain::Int(value) => value.into(),
                Plain::Float(value) => serde_json::Number::from_f64(value)
                    .map(serde_json::Value::Number)
                    .unwrap_or_else(|| text.clone().into()),
                Plain::Str => text.clone().into(),
            },
            Value::Scalar { text, plain: false } => text.clone().into(),
            Value::Sequence(items) => items.iter().map(Node::to_json).collect(),
            Value::Mapping(entries) => entries
                .iter()
                .map(|(key, value)| {
                    (
                        key.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| key.to_json().to_string()),
                        value.to_json(),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
}

/// The plain-scalar spellings of null (YAML 1.2 core schema).
fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// The type a plain scalar has under the YAML 1.2 core schema (plus the
/// YAML 1.1 `yes`/`no`/`on`/`off` booleans that PyYAML-written legacy files use).
enum Plain {
    /// `~`, `null`, empty.
    Null,
    /// `true`/`false` and the YAML 1.1 spellings.
    Bool(bool),
    /// Decimal, `0x` hex or `0o` octal, with an optional sign.
    Int(i64),
    /// Anything else starting like a number that parses as one.
    Float(f64),
    /// Everything else: a string.
    Str,
}

/// The type of a plain scalar from its text (quoted scalars are strings
/// without asking).
fn resolve_plain(text: &str) -> Plain {
    if is_null_text(text) {
        return Plain::Null;
    }
    match text {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Plain::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Plain::Bool(false);
        }
        _ => {}
    }
    if let Some(value) = parse_int(text) {
        return Plain::Int(value);
    }
    let looks_numeric = text
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_digit() || matches!(byte, b'-' | b'+' | b'.'));
    if looks_numeric && let Ok(value) = text.parse::<f64>() {
        return Plain::Float(value);
    }
    Plain::Str
}

/// A YAML 1.2 integer: decimal, `0x` hex or `0o` octal, optional sign;
/// `None` for anything else or out of `i64` range.
fn parse_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(octal) = digits.strip_prefix("0o") {
        i64::from_str_radix(octal, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) {
        digits.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

/// Reads the first YAML document of `text` with `saphyr-parser`. An empty
/// document reads as an empty mapping. Duplicate keys are returned, not
/// fatal (the last one wins).
pub fn parse(text: &str) -> Result<(Node, Vec<DuplicateKey>), Error> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let mut root = None;
    while let Some(result) = parser.next_event() {
        let (event, span) = result.map_err(|error| Error {
            message: error.info().to_string(),
            line: error.marker().line(),
            column: error.marker().col() + 1,
            path: String::new(),
            located: true,
        })?;
        let line = span.start.line();
        let column = span.start.col() + 1;
        let range = span.start.index()..span.end.index();
        let at = |message: String| Error {
            message,
            line,
            column,
            path: String::new(),
            located: true,
        };
        let done = match event {
            Event::StreamStart | Event::Nothing | Event::DocumentStart(_) => None,
            Event::DocumentEnd | Event::StreamEnd => {
                if root.is_some() || !builder.stack.is_empty() {
                    break;
                }
                None
            }
            Event::Alias(anchor) => {
                let node = builder
                    .anchors
                    .iter()
                    .rev()
                    .find(|(id, _)| *id == anchor)
                    .map(|(_, node)| node.clone());
                let Some(mut node) = node else {
                    return Err(at("alias to an unknown anchor".into()));
                };
                builder.count(&node).map_err(at)?;
                node.line = line;
                node.column = column;
                node.span = range;
                builder.push(node).map_err(at)?
            }
            Event::Scalar(value, style, anchor, _tag) => builder
                .scalar(
                    value.into_owned(),
                    style == ScalarStyle::Plain,
                    anchor,
                    line,
                    column,
                    range,
                )
                .map_err(at)?,
            Event::SequenceStart(anchor, _) => {
                builder
                    .open(Value::Sequence(Vec::new()), anchor, line, column, range)
                    .map_err(at)?;
                None
            }
            Event::MappingStart(anchor, _) => {
                builder
                    .open(Value::Mapping(Vec::new()), anchor, line, column, range)
                    .map_err(at)?;
                None
            }
            Event::SequenceEnd | Event::MappingEnd => builder.close(range.end).map_err(at)?,
        };
        if done.is_some() {
            root = done;
        }
    }
    Ok(builder.finish(root))
}

/// Turns the parser's event stream into a [`Node`] tree.
#[derive(Default)]
struct Builder {
    /// The collections opened and not yet closed, innermost last.
    stack: Vec<Open>,
    /// Finished anchored nodes by anchor id, for aliases to copy.
    anchors: Vec<(usize, Node)>,
    /// Keys written twice, reported as problems (the last one is kept).
    duplicates: Vec<DuplicateKey>,
    /// Nodes so far, aliases expanded: bounded by `MAX_NODES`.
    nodes: usize,
}

/// A collection being built.
struct Open {
    /// The sequence or mapping, with the items read so far.
    node: Node,
    /// Its anchor id (0: none), recorded when it closes.
    anchor: usize,
    /// For mappings: the key read, waiting for its value.
    pending_key: Option<Node>,
    /// For mappings longer than [`INDEXED_KEYS`]: the keys seen so far, to
    /// find duplicates without a quadratic scan of large mappings (a
    /// 1,000-agent `agents:`). Shorter mappings are scanned.
    index: Option<std::collections::HashSet<String>>,
    /// Keys that came from a `<<` merge: written again, they override quietly.
    merged: std::collections::HashSet<String>,
}

/// Past this many entries a mapping's keys are hashed; below it a scan of the
/// entries is cheaper than hashing (an agent has a handful of fields).
const INDEXED_KEYS: usize = 16;

impl Builder {
    /// Starts a sequence or mapping (`value` is the empty collection).
    fn open(
        &mut self,
        value: Value,
        anchor: usize,
        line: usize,
        column: usize,
        span: Range<usize>,
    ) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(Open {
            node: Node::new(value, line, column, span),
            anchor,
            pending_key: None,
            index: None,
            merged: Default::default(),
        });
        Ok(())
    }

    /// Ends the innermost sequence or mapping at `end`; returns it if it is
    /// the document root.
    fn close(&mut self, end: usize) -> Result<Option<Node>, String> {
        let open = self
            .stack
            .pop()
            .expect("start and end of collections are balanced");
        let mut node = open.node;
        node.span.end = end;
        if open.anchor > 0 {
            self.anchors.push((open.anchor, node.clone()));
        }
        self.nodes += 1;
        self.push(node)
    }

    /// Adds a scalar; returns it if it is the document root.
    fn scalar(
        &mut self,
        text: String,
        plain: bool,
        anchor: usize,
        line: usize,
        column: usize,
        span: Range<usize>,
    ) -> Result<Option<Node>, String> {
        let node = Node::new(Value::Scalar { text, plain }, line, column, span);
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
        self.nodes += 1;
        self.push(node)
    }

    /// The document's tree (a null or missing root reads as an empty mapping)
    /// and the duplicate keys found.
    fn finish(self, root: Option<Node>) -> (Node, Vec<DuplicateKey>) {
        let root = match root {
            Some(node) if !node.is_null() => node,
            _ => Node::empty_mapping(),
        };
        (root, self.duplicates)
    }

    /// Counts the nodes an alias expands to, failing past the limit.
    fn count(&mut self, node: &Node) -> Result<(), String> {
        fn size(node: &Node) -> usize {
            1 + match &node.value {
                Value::Scalar { .. } => 0,
                Value::Sequence(items) => items.iter().map(size).sum(),
                Value::Mapping(entries) => entries
                    .iter()
                    .map(|(key, value)| size(key) + size(value))
                    .sum(),
            }
        }
        self.nodes += size(node);
        if self.nodes > MAX_NODES {
            return Err(format!(
                "document expands to more than {MAX_NODES} values (alias bomb?)"
            ));
        }
        Ok(())
    }

    /// Adds a finished node to the innermost open collection; returns it if
    /// it is the document root.
    fn push(&mut self, node: Node) -> Result<Option<Node>, String> {
        let Some(open) = self.stack.last_mut() else {
            return Ok(Some(node));
        };
        match &mut open.node.value {
            Value::Sequence(items) => items.push(node),
            Value::Mapping(entries) => match open.pending_key.take() {
                None => {
                    if !matches!(node.value, Value::Scalar { .. }) {
                        return Err(
                            "mapping keys must be plain values, not lists or mappings".into()
                        );
                    }
                    open.pending_key = Some(node);
                }
                Some(key) => {
                    let key_text = key.as_str().unwrap_or_default();
                    if key_text == "<<" && matches!(key.value, Value::Scalar { plain: true, .. }) {
                        for merged in merge(entries, &node)? {
                            if let Some(index) = &mut open.index {
                                index.insert(merged.clone());
                            }
                            open.merged.insert(merged);
                        }
                    } else if !open.merged.is_empty() && open.merged.remove(key_text) {
                        entries.retain(|(name, _)| name.as_str() != Some(key_text));
                        entries.push((key, node));
                    } else if match &open.index {
                        Some(index) => index.contains(key_text),
                        None => entries
                            .iter()
                            .any(|(name, _)| name.as_str() == Some(key_text)),
                    } {
                        let position = entries
                            .iter()
                            .position(|(name, _)| name.as_str() == Some(key_text))
                            .expect("a key seen before is in the entries");
                        self.duplicates.push(DuplicateKey {
                            key: key_text.to_string(),
                            line: key.line,
                            column: key.column,
                            first_line: entries[position].0.line,
                            hidden_keys: entries[position]
                                .1
                                .as_mapping()
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|(name, _)| name.as_str().map(str::to_string))
                                .collect(),
                        });
                        entries.remove(position);
                        entries.push((key, node));
                    } else {
                        if let Some(index) = &mut open.index {
                            index.insert(key_text.to_string());
                        }
                        entries.push((key, node));
                    }
                    if open.index.is_none() && entries.len() > INDEXED_KEYS {
                        open.index = Some(
                            entries
                                .iter()
                                .filter_map(|(name, _)| name.as_str().map(str::to_string))
                                .collect(),
                        );
                    }
                }
            },
            Value::Scalar { .. } => unreachable!("scalars are never open"),
        }
        Ok(None)
    }
}

/// `<<: *base` or `<<: [*a, *b]`: copy entries not already present; returns
/// the keys copied.
fn merge(entries: &mut Vec<(Node, Node)>, source: &Node) -> Result<Vec<String>, String> {
    let mut copied = Vec::new();
    let sources: Vec<&Node> = match &source.value {
        Value::Mapping(_) => vec![source],
        Value::Sequence(items) => items.iter().collect(),
        Value::Scalar { .. } => return Err("`<<` merges a mapping or a list of mappings".into()),
    };
    for source in sources {
        let Some(pairs) = source.as_mapping() else {
            return Err("`<<` merges a mapping or a list of mappings".into());
        };
        for (key, value) in pairs {
            if !entries
                .iter()
                .any(|(name, _)| name.as_str() == key.as_str())
            {
                entries.push((key.clone(), value.clone()));
                copied.push(key.as_str().unwrap_or_default().to_string());
            }
        }
    }
    Ok(copied)
}

/// Deserializes `T` from a node; errors carry the position of the value at fault.
pub fn from_node<'de, T: serde::Deserialize<'de>>(node: &'de Node) -> Result<T, Error> {
    T::deserialize(NodeDeserializer {
        node,
        path: Path::Root,
    })
}

/// Where a node sits, as a chain to the root; turned into text only when an
/// error needs it (building strings for every value would dominate loading).
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    /// The dotted form: `agents.db.port`, `agents[2].command`.
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(parent, key) => match parent.render() {
                text if text.is_empty() => key.to_string(),
                text => format!("{text}.{key}"),
            },
            Path::Index(parent, index) => format!("{}[{index}]", parent.render()),
        }
    }
}

/// serde's view of one node: deserializes the `Raw*` types straight from
/// the tree, so every error knows the node's line and dotted path.
struct NodeDeserializer<'a, 'p> {
    /// The node being read.
    node: &'a Node,
    /// How it was reached from the root, for error messages.
    path: Path<'p>,
}

impl<'a, 'p> NodeDeserializer<'a, 'p> {
    /// An error at this node.
    fn error(&self, message: impl Into<String>) -> Error {
        Error::new(message, self.node, &self.path.render())
    }

    /// The scalar's text and whether it is plain; an error for a
    /// collection.
    fn scalar(&self) -> Result<(&'a str, bool), Error> {
        match &self.node.value {
            Value::Scalar { text, plain } => Ok((text, *plain)),
            _ => Err(self.error(format!(
                "expected a single value, found {}",
                self.node.kind_name()
            ))),
        }
    }

    /// The scalar as an integer (quoted or not: `"7200"` is a port too).
    fn integer(&self) -> Result<i64, Error> {
        let (text, _) = self.scalar()?;
        parse_int(text.trim())
            .ok_or_else(|| self.error(format!("expected an integer, found `{text}`")))
    }
}

macro_rules! deserialize_integer {
    ($($method:ident => $visit:ident as $type:ty),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let value = self.integer()?;
            let converted = <$type>::try_from(value)
                .map_err(|_| self.error(format!("{value} is out of range (expected {})", stringify!($type))))?;
            visitor.$visit(converted).map_err(|error: Error| error.locate(self.node, &self.path.render()))
        })*
    };
}

impl<'de, 'a: 'de> de::Deserializer<'de> for NodeDeserializer<'a, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.node.value {
            Value::Scalar { text, plain: true } => match resolve_plain(text) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(value) => visitor.visit_bool(value),
                Plain::Int(value) => visitor.visit_i64(value),
                Plain::Float(value) => visitor.visit_f64(value),
                Plain::Str => visitor.visit_str(text),
            },
            Value::Scalar { text, plain: false } => visitor.visit_str(text),
            Value::Sequence(items) => visitor.visit_seq(Sequence {
                parent: &self,
                items: items.iter().enumerate(),
            }),
            Value::Mapping(entries) => visitor.visit_map(Mapping {
                parent: &self,
                entries: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|error: Error| error.locate(self.node, &self.path.render()))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (text, _) = self.scalar()?;
        let value = match resolve_plain(text.trim()) {
            Plain::Bool(value) => value,
            _ => return Err(self.error(format!("expected true or false, found `{text}`"))),
        };
        visitor
            .visit_bool(value)
            .map_err(|error: Error| error.locate(self.node, &self.path.render()))
    }

    deserialize_integer! {
        deserialize_i8 => visit_i8 as i8,
        deserialize_i16 => visit_i16 as i16,
        deserialize_i32 => visit_i32 as i32,
        deserialize_i64 => visit_i64 as i64,
        deserialize_u8 => visit_u8 as u8,
        deserialize_u16 => visit_u16 as u16,
        deserialize_u32 => visit_u32 as u32,
        deserialize_u64 => visit_u64 as u64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (text, _) = self.scalar()?;
        let value: f64 = text
            .trim()
            .parse()
            .map_err(|_| self.error(format!("expected a number, found `{text}`")))?;
        visitor
            .visit_f64(value)
            .map_err(|error: Error| error.locate(self.node, &self.path.render()))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let (text, _) = self.scalar()?;
        visitor
            .visit_str(text)
            .map_err(|error: Error| error.locate(self.node, &self.path.render()))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            visitor
                .visit_none()
                .map_err(|error: Error| error.locate(self.node, &self.path.render()))
        } else {
            let node = self.node;
            let path = self.path;
            visitor
                .visit_some(self)
                .map_err(|error: Error| error.locate(node, &path.render()))
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            visitor.visit_unit()
        } else {
            Err(self.error(format!(
                "expected nothing (null), found {}",
                self.node.kind_name()
            )))
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Sequence(items) => visitor
                .visit_seq(Sequence {
                    parent: &self,
                    items: items.iter().enumerate(),
                })
                .map_err(|error: Error| error.locate(self.node, &self.path.render())),
            // An empty value (`dependencies:`) reads as an empty list.
            _ if self.node.is_null() => visitor.visit_seq(Sequence {
                parent: &self,
                items: [].iter().enumerate(),
            }),
            _ => Err(self.error(format!("expected a list, found {}", self.node.kind_name()))),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Mapping(entries) => visitor
                .visit_map(Mapping {
                    parent: &self,
                    entries: entries.iter(),
                    value: None,
                })
                .map_err(|error: Error| error.locate(self.node, &self.path.render())),
            _ if self.node.is_null() => visitor
                .visit_map(Mapping {
                    parent: &self,
                    entries: [].iter(),
                    value: None,
                })
                .map_err(|error: Error| error.locate(self.node, &self.path.render())),
            _ => Err(self.error(format!(
                "expected a mapping, found {}",
                self.node.kind_name()
            ))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (text, _) = self
            .scalar()
            .map_err(|_| self.error(format!("expected one of: {}", variants.join(", "))))?;
        visitor
            .visit_enum(text.into_deserializer())
            .map_err(|error: Error| error.locate(self.node, &self.path.render()))
    }

    serde::forward_to_deserialize_any! {
        i128 u128 bytes byte_buf unit_struct newtype_struct tuple tuple_struct ignored_any
    }
}

/// serde's access to a sequence's items, each with its `[index]` path.
struct Sequence<'p, 'a> {
    parent: &'p NodeDeserializer<'a, 'p>,
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'de, 'a: 'de> SeqAccess<'de> for Sequence<'_, 'a> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((index, item)) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Index(&self.parent.path, index);
        seed.deserialize(NodeDeserializer { node: item, path })
            .map(Some)
            .map_err(|error: Error| error.locate(item, &path.render()))
    }
}

/// serde's access to a mapping's entries, each value with its `.key` path.
struct Mapping<'p, 'a> {
    parent: &'p NodeDeserializer<'a, 'p>,
    entries: std::slice::Iter<'a, (Node, Node)>,
    /// The value of the key just read, with that key's text.
    value: Option<(&'a Node, &'a str)>,
}

impl<'de, 'a: 'de> MapAccess<'de> for Mapping<'_, 'a> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let name = key.as_str().unwrap_or_default();
        let path = Path::Key(&self.parent.path, name);
        self.value = Some((value, name));
        seed.deserialize(NodeDeserializer { node: key, path })
            .map(Some)
            .map_err(|error: Error| error.locate(key, &path.render()))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (value, name) = self
            .value
            .take()
            .expect("serde reads a key before its value");
        let path = Path::Key(&self.parent.path, name);
        seed.deserialize(NodeDeserializer { node: value, path })
            .map_err(|error: Error| error.locate(value, &path.render()))
    }
}

/// Byte offset of the character at `char_index` in `text` (spans are in characters).
pub fn byte_offset(text: &str, char_index: usize) -> usize {
    text.char_indices()
        .nth(char_index)
        .map(|(offset, _)| offset)
        .unwrap_or(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        port: u16,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn errors_name_line_and_path() {
        let (node, _) = parse("items:\n  a:\n    port: 7200\n  b:\n    port: seventy\n").unwrap();
        let error = from_node::<
            std::collections::BTreeMap<String, std::collections::BTreeMap<String, Item>>,
        >(&node)
        .unwrap_err();
        assert_eq!((error.line, error.path.as_str()), (5, "items.b.port"));
        assert!(error.message.contains("expected an integer"), "{error}");
    }

    #[test]
    fn unknown_fields_suggest_the_closest_name() {
        let (node, _) = parse("port: 1\ntagz: []\n").unwrap();
        let error = from_node::<Item>(&node).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.message.contains("did you mean `tags`"), "{error}");
    }

    #[test]
    fn duplicate_keys_are_reported_and_the_last_wins() {
        let (node, duplicates) = parse("a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(
            duplicates,
            vec![DuplicateKey {
                key: "a".into(),
                line: 3,
                column: 1,
                first_line: 1,
                hidden_keys: Vec::new(),
            }]
        );
        assert_eq!(node.get("a").and_then(Node::as_str), Some("3"));
    }

    #[test]
    fn merge_keys_and_aliases_expand() {
        let (node, duplicates) =
            parse("base: &b {port: 1, tags: [x]}\nitem:\n  <<: *b\n  port: 2\n").unwrap();
        assert!(
            duplicates.is_empty(),
            "overriding a merged key is not a duplicate: {duplicates:?}"
        );
        let item: Item = from_node(node.get("item").unwrap()).unwrap();
        assert_eq!((item.port, item.tags), (2, vec!["x".to_string()]));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let previous = level - 1;
            text.push_str(&format!("a{level}: &a{level} [*a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}]\n"));
        }
        let error = parse(&text).unwrap_err();
        assert!(error.message.contains("alias bomb"), "{error}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(500) + &"]".repeat(500);
        let error = parse(&text).unwrap_err();
        assert!(
            error.message.contains("nesting") || error.message.contains("recursion"),
            "{error:?}"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let error = parse("a: 1\nb: [unclosed\nc: 2\n").unwrap_err();
        assert!(error.line >= 2, "{error:?}");
    }

    #[test]
    fn empty_text_is_an_empty_mapping() {
        assert_eq!(parse("").unwrap().0, Node::empty_mapping());
        assert_eq!(
            parse("# only a comment\n").unwrap().0,
            Node::empty_mapping()
        );
    }

    #[test]
    fn spans_cover_the_scalar() {
        let text = "port: \"7200\"\nother: 7300\n";
        let (node, _) = parse(text).unwrap();
        let span = &node.get("other").unwrap().span;
        assert_eq!(
            &text[byte_offset(text, span.start)..byte_offset(text, span.end)],
            "7300"
        );
    }
}
