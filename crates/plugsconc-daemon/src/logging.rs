//! The daemon's log pipeline: one `tracing` subscriber with a console sink (text, coloured on a
//! terminal, or JSON) and a file sink in `directories.logs_dir` (JSON lines, rotated by size
//! with whole lines, a bounded number of backups, gzip of rotated files, and backups older than
//! `log_max_age` days removed). Plugin stderr lines arrive here as events with their plugin's
//! name and level, so they land in both sinks.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use file_rotate::compression::Compression;
use file_rotate::suffix::{AppendTimestamp, FileLimit};
use file_rotate::{ContentLimit, FileRotate};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, Logging, QueueFull};

/// Keeps the file writer's worker (or the persistent queue's writer) alive; dropping it flushes
/// what is buffered.
#[derive(Debug)]
pub struct LogGuard {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
    _queue: Option<crate::logqueue::QueueGuard>,
}

/// The persistent queue's settings from the configuration.
pub fn queue_config(config: &Logging, data_dir: &Path) -> crate::logqueue::QueueConfig {
    crate::logqueue::QueueConfig {
        db: data_dir.join(&config.log_db_file),
        queue: config.log_queue.clone(),
        remove_on_complete: config.log_remove_on_complete,
        max_pending: config.log_queue_max,
        block: match config.log_queue_full {
            QueueFull::Block => true,
            QueueFull::DropOldest => false,
        },
        keep: config.log_queue_keep,
        drain_interval: Duration::from_millis(config.log_drain_interval_ms),
    }
}

/// The level filter of the daemon's sinks: `log_level`, or `RUST_LOG` when set.
pub fn filter(config: &Logging) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{},h2=info,hyper=info,tower=info",
            config.log_level
        ))
    })
}

/// The log file sink the configuration describes (`None` without a file name): JSON lines in
/// `logs_dir`, rotated by size with whole lines, gzip of rotated files, a bounded number of
/// backups.
///
/// # Errors
///
/// When the log folder cannot be created.
pub fn rotating_file(
    config: &Logging,
    logs_dir: &Path,
) -> anyhow::Result<Option<FileRotate<AppendTimestamp>>> {
    Ok(if config.log_filename.is_empty() {
        None
    } else {
        std::fs::create_dir_all(logs_dir)
            .with_context(|| format!("cannot create the log folder {}", logs_dir.display()))?;
        let path = logs_dir.join(&config.log_filename);
        Some(FileRotate::new(
            &path,
            AppendTimestamp::default(FileLimit::MaxFiles(
                usize::try_from(config.log_max_backups).unwrap_or(usize::MAX),
            )),
            // Rotates after the write that crosses the limit, so lines stay whole.
            ContentLimit::BytesSurpassed(
                usize::try_from(config.log_max_size.saturating_mul(1024 * 1024))
                    .unwrap_or(usize::MAX),
            ),
            if config.log_compress {
                Compression::OnRotate(0)
            } else {
                Compression::None
            },
            None,
        ))
    })
}

/// Installs the subscriber the configuration describes. `RUST_LOG` overrides the level.
///
/// # Errors
///
/// When the log folder or file cannot be created.
pub fn init(config: &Logging, logs_dir: &Path, data_dir: &Path) -> anyhow::Result<LogGuard> {
    let filter = || filter(config);
    let location = config.log_include_location;
    let console = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_file(location)
            .with_line_number(location)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_file(location)
            .with_line_number(location)
            .boxed(),
    };
    let rotating = rotating_file(config, logs_dir)?;
    let (file, queue, guard, queue_guard) = if config.log_enable_persistent_queue {
        // The queue's writer owns the file: events reach it only through the queue.
        let sink = rotating.map(|r| Box::new(r) as crate::logqueue::Sink);
        let (layer, guard) = crate::logqueue::start(queue_config(config, data_dir), sink)?;
        (None, Some(layer.with_filter(filter())), None, Some(guard))
    } else if let Some(rotating) = rotating {
        // Not lossy: a full buffer slows logging down rather than dropping lines.
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(rotating);
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .with_ansi(false)
            .with_file(location)
            .with_line_number(location)
            .with_filter(filter());
        (Some(layer), None, Some(guard), None)
    } else {
        (None, None, None, None)
    };
    tracing_subscriber::registry()
        .with(console.with_filter(filter()))
        .with(file)
        .with(queue)
        .try_init()
        .context("a logger is already installed")?;
    Ok(LogGuard {
        _file: guard,
        _queue: queue_guard,
    })
}

/// Removes rotated files of `file_name` in `dir` older than `max_age`; returns how many.
pub fn prune(dir: &Path, file_name: &str, max_age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let prefix = format!("{file_name}.");
    let old: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age)
        })
        .map(|e| e.path())
        .collect();
    old.iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_older_than_the_limit_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "app.log",
            "app.log.20260101T000000.gz",
            "app.log.20260102T000000",
            "other.log.1",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(prune(dir.path(), "app.log", Duration::from_secs(3600)), 0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(prune(dir.path(), "app.log", Duration::from_millis(1)), 2);
        assert!(dir.path().join("app.log").exists(), "the live file stays");
        assert!(dir.path().join("other.log.1").exists());
    }
}
