//! hclog JSON log lines: what a plugin writes on stderr and how a host reads each line.
//!
//! A go-plugin host parses every stderr line of its plugin: a JSON object with string `@level`,
//! `@message` and a `@timestamp` in Go's `2006-01-02T15:04:05.000000Z07:00` layout (exactly six
//! fractional digits) keeps its level and fields; anything else is a plain line whose level comes
//! from a `[WARN]`-style prefix, or Debug. Since go-plugin 1.7 a line starting `panic: ` or
//! `fatal error: ` switches that line and every later plain line to Error, which
//! [`LineClassifier`] reproduces.

use std::fmt;

use serde_json::{Map, Value};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// hclog's levels (hclog has no "warning", "fatal" or "critical").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Most verbose.
    Trace,
    /// Debugging detail; also the level of unrecognised plain lines.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected the plugin recovered from.
    Warn,
    /// A failure.
    Error,
}

impl Level {
    /// Parses an hclog level name case-insensitively, as `hclog.LevelFromString`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "trace" => Some(Level::Trace),
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }

    /// The lower-case name hclog writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One structured log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When it happened.
    pub timestamp: OffsetDateTime,
    /// Its level.
    pub level: Level,
    /// The message.
    pub message: String,
    /// The logger name (`@module`), if any.
    pub module: Option<String>,
    /// Every other key, in the order found (`@caller` included).
    pub fields: Vec<(String, Value)>,
}

const DATE_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]");
const OFFSET: &[FormatItem<'static>] =
    format_description!("[offset_hour sign:mandatory]:[offset_minute]");

/// Formats a timestamp in Go's `2006-01-02T15:04:05.000000Z07:00` layout.
pub fn format_timestamp(at: OffsetDateTime) -> String {
    // Formatting these fixed descriptions cannot fail for years 0-9999.
    let mut out = at.format(DATE_TIME).unwrap_or_default();
    if at.offset().is_utc() {
        out.push('Z');
    } else {
        out.push_str(&at.offset().format(OFFSET).unwrap_or_default());
    }
    out
}

/// Parses Go's `2006-01-02T15:04:05.000000Z07:00` layout; anything else (other fraction widths
/// included) is `None`, as for a Go host.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    // 26 characters of date, time and six fractional digits, then `Z` or `+hh:mm`.
    let (date_time, offset) = (text.get(..26)?, text.get(26..)?);
    let local = PrimitiveDateTime::parse(date_time, DATE_TIME).ok()?;
    let offset = if offset == "Z" {
        UtcOffset::UTC
    } else if offset.len() == 6 {
        UtcOffset::parse(offset, OFFSET).ok()?
    } else {
        return None;
    };
    Some(local.assume_offset(offset))
}

impl Entry {
    /// A new entry at `level` with the current time.
    pub fn new(level: Level, message: impl Into<String>) -> Self {
        Self {
            timestamp: OffsetDateTime::now_utc(),
            level,
            message: message.into(),
            module: None,
            fields: Vec::new(),
        }
    }

    /// The entry as one hclog JSON line (no newline). Keys are sorted, as Go's encoder sorts map
    /// keys; a field named like a reserved key is kept under `@`-less `_name` to avoid duplicates.
    pub fn to_json(&self) -> String {
        let mut map = Map::new();
        for (key, value) in &self.fields {
            let key = if matches!(
                key.as_str(),
                "@level" | "@message" | "@timestamp" | "@module"
            ) {
                format!("_{}", key.trim_start_matches('@'))
            } else {
                key.clone()
            };
            map.insert(key, value.clone());
        }
        map.insert("@level".into(), Value::from(self.level.as_str()));
        map.insert("@message".into(), Value::from(self.message.as_str()));
        map.insert(
            "@timestamp".into(),
            Value::from(format_timestamp(self.timestamp)),
        );
        if let Some(module) = &self.module {
            map.insert("@module".into(), Value::from(module.as_str()));
        }
        // serde_json's default map is a BTreeMap: keys come out sorted.
        Value::Object(map).to_string()
    }

    /// Parses a JSON line with go-plugin's host rules; `None` when it is not an hclog JSON entry.
    pub fn from_json(line: &str) -> Option<Self> {
        let Value::Object(mut map) = serde_json::from_str::<Value>(line.trim()).ok()? else {
            return None;
        };
        let timestamp = parse_timestamp(map.remove("@timestamp")?.as_str()?)?;
        let level = Level::from_name(map.remove("@level")?.as_str()?)?;
        let message = match map.remove("@message")? {
            Value::String(s) => s,
            _ => return None,
        };
        let module = match map.remove("@module") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        Some(Self {
            timestamp,
            level,
            message,
            module,
            fields: map.into_iter().collect(),
        })
    }
}

/// How a host understood one stderr line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// An hclog JSON entry.
    Structured(Entry),
    /// Any other line, with the level its prefix gave it.
    Plain {
        /// Level from `[LEVEL]` prefix, panic detection, or Debug.
        level: Level,
        /// The line without its newline.
        text: String,
    },
}

/// Classifies a plugin's stderr lines one by one, remembering whether it panicked.
#[derive(Debug, Default, Clone)]
pub struct LineClassifier {
    panicked: bool,
}

impl LineClassifier {
    /// Classifies the next line.
    pub fn classify(&mut self, line: &str) -> Line {
        let text = line.trim_end_matches(['\n', '\r']);
        if text.starts_with('{')
            && let Some(entry) = Entry::from_json(text)
        {
            return Line::Structured(entry);
        }
        if text.starts_with("panic: ") || text.starts_with("fatal error: ") {
            self.panicked = true;
        }
        let level = if self.panicked {
            Level::Error
        } else {
            prefix_level(text).unwrap_or(Level::Debug)
        };
        Line::Plain {
            level,
            text: text.to_owned(),
        }
    }
}

fn prefix_level(text: &str) -> Option<Level> {
    [
        ("[TRACE]", Level::Trace),
        ("[DEBUG]", Level::Debug),
        ("[INFO]", Level::Info),
        ("[WARN]", Level::Warn),
        ("[ERROR]", Level::Error),
    ]
    .into_iter()
    .find(|(prefix, _)| text.starts_with(prefix))
    .map(|(_, level)| level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamp_uses_go_layout() {
        assert_eq!(
            format_timestamp(datetime!(2026-11-22 10:09:10.123456789 UTC)),
            "2026-11-22T10:09:10.123456Z"
        );
        assert_eq!(
            format_timestamp(datetime!(2026-01-02 03:04:05 +01:30)),
            "2026-01-02T03:04:05.000000+01:30"
        );
        assert_eq!(
            format_timestamp(datetime!(2026-01-02 03:04:05 -07:00)),
            "2026-01-02T03:04:05.000000-07:00"
        );
    }

    #[test]
    fn timestamp_parsing_is_as_strict_as_go() {
        let t = parse_timestamp("2026-11-22T10:09:10.123456Z").unwrap();
        assert_eq!(t, datetime!(2026-11-22 10:09:10.123456 UTC));
        let t = parse_timestamp("2026-11-22T10:09:10.000001+02:00").unwrap();
        assert_eq!(t.offset(), UtcOffset::from_hms(2, 0, 0).unwrap());
        for bad in [
            "2026-11-22T10:09:10.123Z",
            "2026-11-22T10:09:10.1234567Z",
            "2026-11-22T10:09:10Z",
            "2026-11-22 10:09:10.123456Z",
            "2026-11-22T10:09:10.123456",
            "2026-11-22T10:09:10.123456+0200",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn json_round_trip_keeps_fields() {
        let mut entry = Entry::new(Level::Warn, "disk \"almost\" full");
        entry.timestamp = datetime!(2026-11-22 10:00:00.5 UTC);
        entry.module = Some("kv".into());
        entry.fields = vec![
            ("free".into(), Value::from(3)),
            ("@level".into(), "x".into()),
        ];
        let json = entry.to_json();
        assert_eq!(
            json,
            r#"{"@level":"warn","@message":"disk \"almost\" full","@module":"kv","@timestamp":"2026-11-22T10:00:00.500000Z","_level":"x","free":3}"#
        );
        let parsed = Entry::from_json(&json).unwrap();
        assert_eq!(parsed.level, Level::Warn);
        assert_eq!(parsed.message, "disk \"almost\" full");
        assert_eq!(parsed.module.as_deref(), Some("kv"));
        assert_eq!(parsed.timestamp, entry.timestamp);
        assert!(parsed.fields.contains(&("free".into(), Value::from(3))));
    }

    #[test]
    fn reads_lines_a_go_plugin_writes() {
        let line = r#"{"@caller":"/src/main.go:42","@level":"debug","@message":"message from plugin","@module":"plugin","@timestamp":"2026-11-22T10:09:10.537180+01:00","foo":"bar"}"#;
        let mut c = LineClassifier::default();
        let Line::Structured(entry) = c.classify(line) else {
            panic!("not structured");
        };
        assert_eq!(entry.level, Level::Debug);
        assert_eq!(entry.module.as_deref(), Some("plugin"));
        assert_eq!(entry.fields.len(), 2);
    }

    #[test]
    fn json_that_go_would_not_accept_is_plain() {
        let mut c = LineClassifier::default();
        for line in [
            r#"{"@level":"warning","@message":"m","@timestamp":"2026-11-22T10:09:10.537180Z"}"#,
            r#"{"@level":"info","@message":3,"@timestamp":"2026-11-22T10:09:10.537180Z"}"#,
            r#"{"@level":"info","@message":"m","@timestamp":"2026-11-22T10:09:10Z"}"#,
            r#"{"@level":"info","@message":"m"}"#,
            r#"{"@level":"info""#,
            "[1,2]",
        ] {
            assert!(
                matches!(
                    c.classify(line),
                    Line::Plain {
                        level: Level::Debug,
                        ..
                    }
                ),
                "{line}"
            );
        }
    }

    #[test]
    fn plain_lines_take_level_from_prefix() {
        let mut c = LineClassifier::default();
        let cases = [
            ("[TRACE] t", Level::Trace),
            ("[DEBUG] d", Level::Debug),
            ("[INFO] i", Level::Info),
            ("[WARN] w\n", Level::Warn),
            ("[ERROR] e", Level::Error),
            ("no prefix", Level::Debug),
            ("[warn] lower case is not a prefix", Level::Debug),
        ];
        for (line, level) in cases {
            assert_eq!(
                c.classify(line),
                Line::Plain {
                    level,
                    text: line.trim_end().to_owned()
                }
            );
        }
    }

    #[test]
    fn panic_turns_the_rest_to_error() {
        let mut c = LineClassifier::default();
        assert!(matches!(
            c.classify("[INFO] ok"),
            Line::Plain {
                level: Level::Info,
                ..
            }
        ));
        assert!(matches!(
            c.classify("panic: runtime error"),
            Line::Plain {
                level: Level::Error,
                ..
            }
        ));
        assert!(matches!(
            c.classify("goroutine 1 [running]:"),
            Line::Plain {
                level: Level::Error,
                ..
            }
        ));
        let mut c = LineClassifier::default();
        assert!(matches!(
            c.classify("fatal error: all goroutines are asleep"),
            Line::Plain {
                level: Level::Error,
                ..
            }
        ));
    }

    #[test]
    fn level_names() {
        for level in [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ] {
            assert_eq!(Level::from_name(level.as_str()), Some(level));
            assert_eq!(
                Level::from_name(&level.as_str().to_uppercase()),
                Some(level)
            );
        }
        assert_eq!(Level::from_name("warning"), None);
        assert_eq!(Level::from_name("fatal"), None);
    }
}

/// Properties over generated lines: classifying never panics, and a JSON entry keeps its level
/// and message.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn level() -> impl Strategy<Value = Level> {
        prop_oneof![
            Just(Level::Trace),
            Just(Level::Debug),
            Just(Level::Info),
            Just(Level::Warn),
            Just(Level::Error),
        ]
    }

    /// Lines shaped like hclog JSON, often broken.
    fn jsonish() -> impl Strategy<Value = String> {
        (
            "[a-z@]{0,10}",
            "[A-Za-z0-9 \"\\\\{}:,.+-]{0,30}",
            "[0-9T:.Z+-]{0,32}",
        )
            .prop_map(|(key, value, timestamp)| {
                format!(r#"{{"@level":"{key}","@message":"{value}","@timestamp":"{timestamp}"}}"#)
            })
    }

    #[test]
    fn any_line_is_classified_without_panicking() {
        proptest!(|(line in any::<String>())| {
            let mut classifier = LineClassifier::default();
            let _ = classifier.classify(&line);
            let _ = Entry::from_json(&line);
        });
        proptest!(|(line in jsonish())| {
            let _ = LineClassifier::default().classify(&line);
        });
    }

    #[test]
    fn a_json_entry_keeps_its_level_and_message() {
        proptest!(|(
            level in level(),
            message in any::<String>(),
            module in proptest::option::of("[a-z.]{1,12}"),
            fields in proptest::collection::vec(("[a-z_@]{1,8}", any::<String>()), 0..4),
        )| {
            let mut entry = Entry::new(level, message.clone());
            entry.module = module;
            entry.fields = fields.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
            let line = entry.to_json();
            let Line::Structured(back) = LineClassifier::default().classify(&line) else {
                return Err(TestCaseError::fail(format!("{line} is not structured")));
            };
            prop_assert_eq!(back.level, level);
            prop_assert_eq!(&back.message, &message);
            prop_assert_eq!(&back.module, &entry.module);
        });
    }
}
