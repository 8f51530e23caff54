//! The configuration keys that take one of a fixed set of words (`application.app_mode`,
//! `logging.log_level`, `logging.log_format`, `logging.log_queue_full`,
//! `worker_pool.wp_stop_mode`, `security.signatures`) as Rust enums, and `store.url` as the kind
//! of store it names. Each keeps the spelling the file, the environment and `config show` use,
//! and lists its allowed words for the errors of values outside them.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A key's value among fixed words: every value in order, and each one's spelling.
pub trait Choice: Sized + Copy + 'static {
    /// Every value, in the order errors list them.
    const ALL: &'static [Self];

    /// The word in the file, the environment and `config show`.
    fn as_str(self) -> &'static str;

    /// The allowed words.
    fn words() -> Vec<&'static str> {
        Self::ALL.iter().map(|c| c.as_str()).collect()
    }
}

/// Implements [`Choice`] and `Display` from one table of value ↔ word.
macro_rules! words {
    ($ty:ty { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl Choice for $ty {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// `application.app_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppMode {
    /// Development: unsigned plugins allowed unless `security.signatures` says otherwise.
    #[default]
    Dev,
    /// Production: signatures required unless `security.signatures` says otherwise.
    Prod,
}
words!(AppMode { Dev => "dev", Prod => "prod" });

/// `logging.log_level`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// The default.
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
}
words!(LogLevel { Trace => "trace", Debug => "debug", Info => "info", Warn => "warn", Error => "error" });

/// `logging.log_format`: of the console sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// JSON lines.
    Json,
}
words!(LogFormat { Text => "text", Json => "json" });

/// `logging.log_queue_full`: what logging does when the persistent queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueFull {
    /// Drop the oldest waiting record, with a counted warning.
    #[default]
    DropOldest,
    /// Slow logging down to the queue's pace.
    Block,
}
words!(QueueFull { DropOldest => "drop_oldest", Block => "block" });

/// `worker_pool.wp_stop_mode`: how the job pool stops with the daemon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopMode {
    /// Finish the running jobs, leave the queued ones for the next start.
    #[default]
    Shutdown,
    /// Also run the queued jobs submitted here first.
    Stop,
    /// Cancel them all now.
    Terminate,
}
words!(StopMode { Shutdown => "shutdown", Stop => "stop", Terminate => "terminate" });

/// `security.signatures`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signatures {
    /// Empty: as the application mode says (`require` in prod, `allow-unsigned` in dev).
    #[default]
    #[serde(rename = "")]
    ByMode,
    /// A signature from a trusted publisher is required.
    #[serde(rename = "require")]
    Require,
    /// Unsigned plugins run, with a warning.
    #[serde(rename = "allow-unsigned")]
    AllowUnsigned,
}
words!(Signatures { ByMode => "", Require => "require", AllowUnsigned => "allow-unsigned" });

/// `store.url`: which store keeps the catalog. Read and shown as the URL text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreUrl {
    /// Empty: SQLite in the data folder (`catalog.db`).
    #[default]
    DataDir,
    /// `sqlite://<file>` (or `sqlite:<file>`).
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`, kept as written.
    Postgres(String),
}

/// What a `store.url` may look like, for its errors.
pub const STORE_URL_EXPECTED: &str =
    "expected sqlite://<file> or postgres://<user>@<host>/<database>";

impl StoreUrl {
    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DataDir | Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

impl TryFrom<String> for StoreUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        if url.is_empty() {
            return Ok(Self::DataDir);
        }
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            return Ok(Self::Postgres(url));
        }
        match url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            // `sqlite:` alone names no file: the data folder's, as before.
            Some("") => Ok(Self::DataDir),
            Some(path) => Ok(Self::Sqlite(PathBuf::from(path))),
            None => Err(STORE_URL_EXPECTED.to_owned()),
        }
    }
}

impl From<StoreUrl> for String {
    fn from(url: StoreUrl) -> Self {
        match url {
            StoreUrl::DataDir => String::new(),
            StoreUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => url,
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

/// Every key of fixed words with its allowed words, checked at load before the typed parse so
/// the error names the key, its layer and the words.
pub(super) fn keys() -> [(&'static str, Vec<&'static str>); 6] {
    [
        ("application.app_mode", AppMode::words()),
        ("logging.log_level", LogLevel::words()),
        ("logging.log_format", LogFormat::words()),
        ("logging.log_queue_full", QueueFull::words()),
        ("worker_pool.wp_stop_mode", StopMode::words()),
        ("security.signatures", Signatures::words()),
    ]
}

/// The allowed words as an error lists them (the empty word shown as `""`).
pub(super) fn listed(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| if w.is_empty() { "\"\"" } else { w })
        .collect::<Vec<_>>()
        .join(", ")
}
