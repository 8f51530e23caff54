//! `plugsconc logs [plugin]`: the daemon's log records, optionally one plugin's, at or above a
//! level, since a time, and `--follow` to keep printing new ones. They are read from the
//! persistent log queue when the daemon keeps one (`logging.log_enable_persistent_queue`, records
//! kept after writing), else from the log file (JSON lines; followed across rotations: the file
//! is reopened when it is replaced).

use std::io::{BufRead as _, BufReader, Seek as _};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use plugsconc_daemon::logqueue::rank;

/// Arguments of `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only the lines of this plugin.
    plugin: Option<String>,
    /// Only lines at this level or above (trace, debug, info, warn, error).
    #[arg(long, default_value = "trace", value_parser = ["trace", "debug", "info", "warn", "error"])]
    level: String,
    /// Keep printing new lines.
    #[arg(short, long)]
    follow: bool,
    /// Print the JSON lines as they are.
    #[arg(long)]
    json: bool,
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-22T10:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// The daemon's configuration (for the log folder and file name).
    #[command(flatten)]
    config: super::ConfigFlags,
}

/// Whether a log line passes the filters; returns the text to print.
fn render(line: &str, args: &LogsArgs) -> Option<String> {
    let value: Value = serde_json::from_str(line).ok()?;
    let fields = &value["fields"];
    if let Some(plugin) = &args.plugin
        && fields["plugin"].as_str() != Some(plugin)
    {
        return None;
    }
    let level = value["level"].as_str().unwrap_or("INFO");
    if rank(level) < rank(&args.level) {
        return None;
    }
    if args.json {
        return Some(line.to_owned());
    }
    let mut extra = String::new();
    for (key, v) in fields.as_object().into_iter().flatten() {
        if key != "message" {
            extra.push_str(&format!(
                " {key}={}",
                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
            ));
        }
    }
    Some(format!(
        "{} {:>5} {}{extra}",
        value["timestamp"].as_str().unwrap_or_default(),
        level,
        fields["message"].as_str().unwrap_or_default()
    ))
}

/// Prints the matching lines.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let loaded = args.config.load()?;
    let logging = &loaded.config.logging;
    let since = args
        .since
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.timestamp_micros())
                .with_context(|| format!("--since {t:?}: expected an RFC 3339 time"))
        })
        .transpose()?;
    let db = loaded
        .config
        .directories
        .data_dir
        .join(&logging.log_db_file);
    if logging.log_enable_persistent_queue && !logging.log_remove_on_complete && db.exists() {
        return from_queue(&db, &logging.log_queue, since, &args).await;
    }
    anyhow::ensure!(
        !logging.log_filename.is_empty(),
        "logging.log_filename is empty: the daemon writes no log file"
    );
    let path = loaded
        .config
        .directories
        .logs_dir
        .join(&logging.log_filename);
    tokio::task::spawn_blocking(move || follow(&path, &args)).await?
}

/// Reads (and follows) the records kept in the persistent queue.
async fn from_queue(
    db: &std::path::Path,
    queue: &str,
    since: Option<i64>,
    args: &LogsArgs,
) -> anyhow::Result<()> {
    let pool = plugsconc_daemon::logqueue::open(db, false).await?;
    let mut filter = plugsconc_daemon::logqueue::Filter {
        plugin: args.plugin.clone(),
        min_level: rank(&args.level),
        since,
        after: 0,
        limit: 1000,
    };
    loop {
        let records = plugsconc_daemon::logqueue::read(&pool, queue, &filter).await?;
        for (id, line) in &records {
            filter.after = *id;
            if let Some(text) = render(line, args) {
                println!("{text}");
            }
        }
        if records.len() < 1000 {
            if !args.follow {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn follow(path: &std::path::Path, args: &LogsArgs) -> anyhow::Result<()> {
    let open = || {
        std::fs::File::open(path)
            .with_context(|| format!("cannot read the log file {}", path.display()))
    };
    let mut reader = BufReader::new(open()?);
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line)?;
        if read > 0 && line.ends_with('\n') {
            if let Some(text) = render(line.trim_end(), args) {
                println!("{text}");
            }
            continue;
        }
        if !args.follow {
            return Ok(());
        }
        // A partial line: wait for the rest from where it started.
        if read > 0 {
            reader.seek_relative(-(read as i64))?;
        }
        std::thread::sleep(Duration::from_millis(200));
        // Rotated: the path now names a new, shorter file.
        let position = reader.stream_position()?;
        if std::fs::metadata(path).is_ok_and(|m| m.len() < position) {
            reader = BufReader::new(open()?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(plugin: Option<&str>, level: &str) -> LogsArgs {
        LogsArgs {
            plugin: plugin.map(str::to_owned),
            level: level.into(),
            follow: false,
            json: false,
            since: None,
            config: crate::cli::ConfigFlags::default(),
        }
    }

    #[test]
    fn filters_by_plugin_and_level() {
        let line = r#"{"timestamp":"t","level":"WARN","fields":{"message":"slow","plugin":"cat","ms":3},"target":"x"}"#;
        assert_eq!(
            render(line, &args(Some("cat"), "info")).as_deref(),
            Some("t  WARN slow ms=3 plugin=cat")
        );
        assert!(render(line, &args(Some("dog"), "trace")).is_none());
        assert!(render(line, &args(None, "error")).is_none());
        assert!(render("not json", &args(None, "trace")).is_none());
    }
}
