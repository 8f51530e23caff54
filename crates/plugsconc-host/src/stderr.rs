//! A plugin's stderr: every line becomes a `tracing` event at the plugin's hclog level, with the
//! plugin's name; the last lines are kept for error messages, each cut to a bounded length.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use plugsconc_protocol::hclog::{Level, Line, LineClassifier};
use plugsconc_protocol::quote;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use crate::error::StderrTail;

/// Lines longer than this are split, as go-plugin's 64 KiB line buffer does.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Lines kept for error messages.
const TAIL_LINES: usize = 20;

/// The last stderr lines of a plugin.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: &str) {
        // Errors quote the tail: a bounded piece of each line, not 64 KiB of it.
        let kept = quote::cut(line).into_owned();
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(kept);
    }

    pub(crate) fn snapshot(&self) -> StderrTail {
        StderrTail(
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned()
                .collect(),
        )
    }
}

/// Reads `stderr` to its end, logging each line; the task ends at EOF.
pub(crate) fn forward(
    plugin: String,
    stderr: impl AsyncRead + Unpin + Send + 'static,
    tail: Tail,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr);
        let mut classifier = LineClassifier::default();
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            match read_line(&mut reader, &mut buf, MAX_LINE).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buf);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                continue;
            }
            tail.push(text);
            emit(&plugin, classifier.classify(text));
        }
    })
}

/// Reads up to a newline or `limit` bytes, whichever comes first.
pub(crate) async fn read_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<usize> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let room = limit.saturating_sub(buf.len());
        let (take, done) = match available.iter().take(room).position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => {
                let take = available.len().min(room);
                (take, buf.len() + take >= limit)
            }
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(buf.len());
        }
    }
}

macro_rules! at_level {
    ($level:expr, $($rest:tt)*) => {
        match $level {
            Level::Trace => tracing::trace!(target: "plugsconc::plugin", $($rest)*),
            Level::Debug => tracing::debug!(target: "plugsconc::plugin", $($rest)*),
            Level::Info => tracing::info!(target: "plugsconc::plugin", $($rest)*),
            Level::Warn => tracing::warn!(target: "plugsconc::plugin", $($rest)*),
            Level::Error => tracing::error!(target: "plugsconc::plugin", $($rest)*),
        }
    };
}

fn emit(plugin: &str, line: Line) {
    match line {
        Line::Structured(entry) => {
            let fields = entry
                .fields
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ");
            if fields.is_empty() {
                at_level!(entry.level, plugin, "{}", entry.message);
            } else {
                at_level!(entry.level, plugin, fields, "{}", entry.message);
            }
        }
        Line::Plain { level, text } => at_level!(level, plugin, "{}", text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_split_and_the_tail_is_bounded() {
        let mut input = Vec::new();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.push(b'\n');
        for i in 0..30 {
            input.extend(format!("line {i}\n").as_bytes());
        }
        let tail = Tail::default();
        forward("p".into(), std::io::Cursor::new(input), tail.clone())
            .await
            .unwrap();
        let lines = tail.snapshot().0;
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last().map(String::as_str), Some("line 29"));
        assert_eq!(lines.first().map(String::as_str), Some("line 10"));
    }

    #[tokio::test]
    async fn kept_lines_are_cut() {
        let mut input = vec![b'y'; 5000];
        input.push(b'\n');
        let tail = Tail::default();
        forward("p".into(), std::io::Cursor::new(input), tail.clone())
            .await
            .unwrap();
        let lines = tail.snapshot().0;
        assert_eq!(lines.len(), 1);
        assert!(lines[0].len() < 1100, "{}", lines[0].len());
        assert!(
            lines[0].ends_with("… (cut, 5000 bytes in all)"),
            "{}",
            lines[0]
        );
    }

    #[tokio::test]
    async fn split_line_pieces() {
        let mut reader = BufReader::new(std::io::Cursor::new(vec![b'a'; MAX_LINE * 2 + 5]));
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf, MAX_LINE).await.unwrap(),
            MAX_LINE
        );
        buf.clear();
        assert_eq!(
            read_line(&mut reader, &mut buf, MAX_LINE).await.unwrap(),
            MAX_LINE
        );
        buf.clear();
        assert_eq!(read_line(&mut reader, &mut buf, MAX_LINE).await.unwrap(), 5);
    }
}
