//! The YAML layer of a manifest (JSON manifests included: JSON is checked as JSON, then read as
//! the YAML it also is): text into a tree of nodes that each know where they are, and
//! the parser's errors reworded for the person editing the manifest. The parser's own messages
//! sometimes give advice to the Rust program that calls it (which option to set, which type to
//! use); that advice means nothing to a manifest's author, so each such message is replaced.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{DefaultMessageFormatter, Error, Location, MessageFormatter, Spanned};

/// One YAML node and where it starts (for an alias, where the alias is written).
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub at: Location,
    /// Where the value is written: for an alias, at its anchor.
    pub defined: Location,
    pub value: Value,
}

/// What a node holds. Scalars come typed as YAML resolves them; the text they were written as is
/// still in the source (see [`Node::span_text`]).
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    UInt(u64),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The text of a scalar exactly as written in `source` (for a typed scalar such as `1.10`,
    /// which YAML would read as the number 1.1).
    pub(crate) fn span_text<'s>(&self, source: &'s str) -> Option<&'s str> {
        let span = self.defined.span();
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        source.get(start..start.checked_add(len)?)
    }

    /// A short description of what the node is, for "found ..." in messages.
    pub(crate) fn describe(&self, source: &str) -> String {
        match &self.value {
            Value::Null => "nothing".to_owned(),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
            Value::Str(s) => format!("{s:?}"),
            Value::Bool(_) | Value::UInt(_) | Value::Int(_) | Value::Float(_) => self
                .span_text(source)
                .map_or_else(|| "a scalar".to_owned(), |t| format!("`{t}`")),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        Ok(Node {
            at: spanned.referenced,
            defined: spanned.defined,
            value: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::UInt(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
}

/// A YAML error: where, and what is wrong in words about the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// 1-based line and column; 0 when the parser could not say.
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// Parses YAML text into a node tree.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    serde_saphyr::from_str::<Node>(text).map_err(|err| {
        let (mut line, mut column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        let message = message(&err);
        // The scanner reports a tab where the scalar it was reading began or ended, which can
        // be the line before; the tab itself is what the author must fix.
        let mut message = message;
        if message.contains("tab")
            && let Some(tab) = next_tab(text, line, column)
        {
            (line, column) = tab;
        }
        // An indented first line makes the parser read everything down to the first key in
        // column 1 as one block, and complain only there: the indentation is the mistake.
        if message.contains("document start")
            && let Some((first, content)) = (1u64..)
                .zip(text.lines())
                .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            && content.starts_with([' ', '\t'])
            && first < line
        {
            message = format!(
                "line {first} is indented, so the lines down to line {line} were read as one block; top-level keys start in column 1"
            );
            (line, column) = (first, 1);
        }
        SyntaxError {
            line,
            column,
            message,
        }
    })
}

/// Parses JSON text into the same node tree as [`parse`]. The text is checked as JSON first, so
/// what JSON does not allow (comments, unquoted text, a trailing comma) is an error at its
/// position rather than YAML read leniently; valid JSON is then read by the YAML parser, of
/// which it is a subset, for the positions of its nodes.
pub(crate) fn parse_json(text: &str) -> Result<Node, SyntaxError> {
    if let Err(err) = serde_json::from_str::<de::IgnoredAny>(text) {
        // serde_json's message ends with the position, which is reported separately.
        let full = err.to_string();
        let message = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(message, _)| message);
        return Err(SyntaxError {
            line: u64::try_from(err.line()).unwrap_or(0),
            column: u64::try_from(err.column()).unwrap_or(0),
            message: format!("not valid JSON: {message}"),
        });
    }
    // JSON allows tabs wherever it allows spaces, YAML not in indentation. In valid JSON a tab
    // is whitespace (inside a string it must be escaped), so it becomes a space, which keeps
    // every line and column.
    parse(&text.replace('\t', " "))
}

/// The position of the first tab at or after `line`:`column` (1-based).
fn next_tab(text: &str, line: u64, column: u64) -> Option<(u64, u64)> {
    for (number, content) in (1u64..)
        .zip(text.split('\n'))
        .skip_while(|(n, _)| *n < line)
    {
        let skip = if number == line {
            column.saturating_sub(1)
        } else {
            0
        };
        let found = (1u64..)
            .zip(content.chars())
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .find(|(_, ch)| *ch == '\t');
        if let Some((at, _)) = found {
            return Some((number, at));
        }
    }
    None
}

/// The message of a parser error, without its position (reported separately) and with any
/// advice to the calling program replaced by words about the manifest.
pub(crate) fn message(err: &Error) -> String {
    let mut inner = err;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = inner {
        inner = error;
    }
    // The parser may quote user text with control characters in it; keep messages one line.
    ManifestWording
        .format_message(inner)
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The parser's messages, with each piece of advice to the calling program translated.
struct ManifestWording;

impl MessageFormatter for ManifestWording {
    fn format_message<'a>(&self, err: &'a Error) -> Cow<'a, str> {
        match err {
            Error::DuplicateMappingKey { key: Some(key), .. } => Cow::Owned(format!(
                "duplicate key `{key}`: each key may appear once in a mapping"
            )),
            Error::DuplicateMappingKey { key: None, .. } => {
                Cow::Borrowed("duplicate key: each key may appear once in a mapping")
            }
            Error::MultipleDocuments { .. } => Cow::Borrowed(
                "a second YAML document starts here (after `---`); a manifest is one document",
            ),
            Error::MergeKeyNotAllowed { .. } => Cow::Borrowed(
                "merge keys (`<<`) are not accepted here; write the fields out instead",
            ),
            Error::TaggedStructFieldName { tag, .. } => Cow::Owned(format!(
                "a key cannot carry the tag `{tag}`; remove the tag"
            )),
            Error::BinaryNotUtf8 { .. } => Cow::Borrowed(
                "this !!binary value is not UTF-8 text; manifest values are text (remove the !!binary tag and write the text)",
            ),
            Error::InvalidCharNull { .. } | Error::NullIntoString { .. } => {
                Cow::Borrowed("a value is required here, found nothing (null)")
            }
            Error::NonFiniteFloat { value, .. } => Cow::Owned(format!(
                "`{value}` is not a finite number; write a number, or quote it to mean text"
            )),
            Error::CannotBorrowTransformedString { .. } => Cow::Borrowed(
                "this text uses escapes or folding that cannot be read here; write it plainly",
            ),
            Error::RecursiveReferencesRequireWeakTypes { .. } => Cow::Borrowed(
                "this alias refers to a node that contains it; a manifest cannot be recursive",
            ),
            Error::UnknownAnchor { .. } => Cow::Borrowed(
                "this alias (`*name`) refers to no anchor (`&name`) defined before it",
            ),
            Error::InvalidBooleanStrict { .. } => Cow::Borrowed("expected true or false"),
            Error::AliasReplayCounterOverflow { .. }
            | Error::AliasReplayLimitExceeded { .. }
            | Error::AliasExpansionLimitExceeded { .. }
            | Error::AliasReplayStackDepthExceeded { .. } => Cow::Borrowed(
                "aliases (`*name`) expand to too much here; write the values out instead",
            ),
            Error::Budget { breach, .. } => Cow::Owned(budget(breach)),
            Error::InvalidOptions { .. } | Error::IOError { .. } => {
                Cow::Borrowed("the manifest could not be read as YAML")
            }
            other => DefaultMessageFormatter.format_message(other),
        }
    }
}

/// A size or nesting limit the parser keeps, in words about the manifest.
fn budget(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Depth { depth } => {
            format!("nested {depth} levels deep; a manifest needs only a few levels")
        }
        BudgetBreach::Aliases { .. }
        | BudgetBreach::AliasAnchorRatio { .. }
        | BudgetBreach::Anchors { .. } => {
            "too many anchors or aliases (`&name`, `*name`); write the values out instead".into()
        }
        BudgetBreach::Documents { .. } => "more than one YAML document; a manifest is one".into(),
        BudgetBreach::MergeKeys { .. } => "too many merge keys (`<<`)".into(),
        BudgetBreach::SequenceUnbalanced => {
            "a list or mapping is closed that was never opened".into()
        }
        _ => "the manifest is too large to read".into(),
    }
}
