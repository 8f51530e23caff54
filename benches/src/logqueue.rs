//! `plugsconc-bench-logs`: throughput of the persistent log queue, in log lines/s.
//!
//! The queue and its log file are set up as the daemon sets them up (`logging.*` defaults, the
//! same rotating file sink and level filter), in a fresh folder, with one difference: rotated
//! files are never deleted, so every line can be counted afterwards. N `tracing::info!` events
//! go through the queue's layer in a subscriber local to this thread; then the queue is stopped
//! through its guard. Prints one JSON object: the time until every line was acknowledged
//! (committed to the SQLite outbox), the time until every line was in the log file, the rates,
//! and the number of lines found in the log file and its rotated files, which must equal N.

use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

use plugsconc_daemon::config::Logging;

/// The acknowledged count may stand still this long before the run is given up.
const STALL: Duration = Duration::from_secs(10);

/// Arguments of `plugsconc-bench-logs`.
#[derive(Debug, Parser)]
#[command(name = "plugsconc-bench-logs", about)]
struct BenchLogsArgs {
    /// Log lines to send through the queue.
    #[arg(long, default_value_t = 200_000)]
    lines: u64,
    /// Folder for the queue's SQLite file and the log file: new or empty, and kept afterwards
    /// (default: a temporary folder, removed afterwards).
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// Delete records from the queue once written (`logging.log_remove_on_complete`).
    #[arg(long)]
    remove_on_complete: bool,
}

/// Removes the temporary folder when the run ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> anyhow::Result<()> {
    run_logs(&BenchLogsArgs::parse())
}

/// Runs the benchmark.
fn run_logs(args: &BenchLogsArgs) -> anyhow::Result<()> {
    let (dir, _temp) = match &args.dir {
        Some(dir) => {
            let empty = match std::fs::read_dir(dir) {
                Ok(mut entries) => entries.next().is_none(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
                Err(err) => {
                    return Err(err).with_context(|| format!("cannot read {}", dir.display()));
                }
            };
            anyhow::ensure!(
                empty,
                "{} is not empty: a queue left there would be drained into the count",
                dir.display()
            );
            (dir.clone(), None)
        }
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "plugsconc-bench-logs-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.clone(), Some(TempDir(dir)))
        }
    };
    let logs_dir = dir.join("logs");
    let data_dir = dir.join("data");
    let config = Logging {
        log_remove_on_complete: args.remove_on_complete,
        // Rotated files are kept, so that every line can be counted.
        log_max_backups: u64::MAX,
        ..Logging::default()
    };

    let sink = plugsconc_daemon::logging::rotating_file(&config, &logs_dir)?
        .map(|r| Box::new(r) as plugsconc_daemon::logqueue::Sink);
    let (layer, guard) = plugsconc_daemon::logqueue::start(
        plugsconc_daemon::logging::queue_config(&config, &data_dir),
        sink,
    )?;
    let subscriber = tracing_subscriber::registry()
        .with(layer.with_filter(plugsconc_daemon::logging::filter(&config)));

    let start = Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        for seq in 0..args.lines {
            tracing::info!(plugin = "bench", seq, bytes = 4096_u64, "request served");
        }
    });
    let emitted = start.elapsed();

    // Acknowledged: committed to the outbox, the point from which a line survives a crash.
    let mut last = (guard.acknowledged(), Instant::now());
    while guard.acknowledged() < args.lines {
        let now = guard.acknowledged();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            anyhow::bail!(
                "the queue acknowledged {now} of {} lines and then nothing for {} s",
                args.lines,
                STALL.as_secs()
            );
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let acknowledged = start.elapsed();
    // Stopping commits and drains what is left, and flushes the file.
    drop(guard);
    let written = start.elapsed();

    let (file_lines, log_files) = count_lines(&logs_dir, &config.log_filename)?;
    let rate = |d: Duration| (args.lines as f64 / d.as_secs_f64()).round();
    let report = serde_json::json!({
        "lines": args.lines,
        "emit_seconds": round(emitted.as_secs_f64()),
        "ack_seconds": round(acknowledged.as_secs_f64()),
        "ack_lines_per_s": rate(acknowledged),
        "file_seconds": round(written.as_secs_f64()),
        "file_lines_per_s": rate(written),
        "file_lines": file_lines,
        "log_files": log_files,
        "remove_on_complete": args.remove_on_complete,
    });
    println!("{report}");
    anyhow::ensure!(
        file_lines == args.lines,
        "the log files hold {file_lines} lines, {} were sent",
        args.lines
    );
    Ok(())
}

/// Seconds to the microsecond.
fn round(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e6
}

/// Lines in the log file and its rotated files (gzipped or not), and how many files.
fn count_lines(dir: &Path, file_name: &str) -> anyhow::Result<(u64, u64)> {
    let rotated = format!("{file_name}.");
    let mut lines = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != file_name && !name.starts_with(&rotated) {
            continue;
        }
        let path = entry.path();
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let reader: Box<dyn Read> = if name.ends_with(".gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        loop {
            let buffer = reader
                .fill_buf()
                .with_context(|| format!("cannot read {}", path.display()))?;
            if buffer.is_empty() {
                break;
            }
            let n = buffer.len();
            lines += u64::try_from(buffer.iter().filter(|b| **b == b'\n').count())?;
            reader.consume(n);
        }
        files += 1;
    }
    Ok((lines, files))
}
