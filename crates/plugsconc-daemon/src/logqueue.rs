//! The persistent log queue (`logging.log_enable_persistent_queue`). Every event the daemon
//! logs — its own and its plugins' stderr lines — goes to a writer thread that appends it to an
//! outbox table in a SQLite file (WAL), committed in batches: a committed record is
//! *acknowledged* and survives the daemon being killed. The same thread then drains committed
//! records, oldest first, into the log file, and marks them written (or deletes them with
//! `log_remove_on_complete`). After a crash it starts with what was left unwritten, so delivery
//! to the file is at least once: a batch written just before the crash may appear twice.
//!
//! Bounded: at most `log_queue_max` records wait for the file (they pile up only while the file
//! cannot be written). Past that, `drop_oldest` deletes the oldest waiting records and logs how
//! many in a warning record; `block` stops taking new events until the file catches up, so
//! logging slows down instead of losing anything.
//!
//! Written records are kept (newest `log_queue_keep`) for `plugsconc logs` and `GET /api/v1/logs`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions as _, Row as _, Sqlite, Transaction};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Events handed to the writer thread but not yet committed, at most (the hand-off blocks).
const HANDOFF: usize = 8192;
/// Records committed (or drained) per transaction.
const BATCH: usize = 512;
/// The writer thread's name.
const WRITER_THREAD: &str = "log-queue";

/// What the queue needs from the configuration.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The SQLite file.
    pub db: PathBuf,
    /// The queue's name.
    pub queue: String,
    /// Delete records once written.
    pub remove_on_complete: bool,
    /// Records waiting for the file, at most.
    pub max_pending: u64,
    /// Block rather than drop when that many wait.
    pub block: bool,
    /// Written records kept for reading.
    pub keep: u64,
    /// Pause between drains.
    pub drain_interval: Duration,
}

/// One event, ready to store: its level rank and plugin for filtering, and its JSON line.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Microseconds since the Unix epoch.
    pub ts: i64,
    /// 0 trace … 4 error.
    pub level: i64,
    /// The plugin the event is about, if any.
    pub plugin: Option<String>,
    /// The JSON line (the shape of the console's JSON format).
    pub line: String,
}

/// Where drained records go.
pub type Sink = Box<dyn Write + Send>;

enum Message {
    Record(Record),
    Stop,
}

/// The `tracing` layer feeding the queue.
#[derive(Debug, Clone)]
pub struct QueueLayer {
    handoff: SyncSender<Message>,
}

/// Keeps the writer thread running; dropping it commits and drains what is left (bounded).
#[derive(Debug)]
pub struct QueueGuard {
    handoff: SyncSender<Message>,
    thread: Option<std::thread::JoinHandle<()>>,
    acknowledged: Arc<AtomicU64>,
}

impl QueueGuard {
    /// Records acknowledged (committed to the SQLite file) since start, the queue's own
    /// warnings included.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::Acquire)
    }
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        let _ = self.handoff.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                eprintln!("the log queue did not finish within 5 s; the rest is in the queue");
            }
        }
    }
}

/// Starts the writer thread on `config` (creating the file and table) and returns the layer to
/// install and the guard that stops it.
///
/// # Errors
///
/// When the SQLite file cannot be created or opened.
pub fn start(config: QueueConfig, sink: Option<Sink>) -> anyhow::Result<(QueueLayer, QueueGuard)> {
    if let Some(parent) = config.db.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let (handoff, incoming) = mpsc::sync_channel(HANDOFF);
    let (opened, result) = mpsc::channel();
    let acknowledged = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&acknowledged);
    // The writer runs its own runtime on its own thread: it must outlive the daemon's runtime
    // (to write the last events) and cannot be started from inside it.
    let thread = std::thread::Builder::new()
        .name(WRITER_THREAD.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    let _ = opened.send(Err(anyhow::Error::from(err)));
                    return;
                }
            };
            let pool = match runtime.block_on(open(&config.db, true)) {
                Ok(pool) => {
                    let _ = opened.send(Ok(()));
                    pool
                }
                Err(err) => {
                    let _ = opened.send(Err(err));
                    return;
                }
            };
            let mut writer = Writer {
                config,
                pool,
                sink,
                sink_failed: false,
                dropped_total: 0,
                acknowledged: counter,
            };
            runtime.block_on(writer.run(&incoming));
        })?;
    // Once, at start-up: the file is open (or why not) within SQLite's busy timeout.
    result
        .recv()
        .context("the log queue's writer stopped while opening its file")??;
    Ok((
        QueueLayer {
            handoff: handoff.clone(),
        },
        QueueGuard {
            handoff,
            thread: Some(thread),
            acknowledged,
        },
    ))
}

/// Opens (with `create`: creates and migrates) the queue's SQLite file.
///
/// # Errors
///
/// When the file cannot be opened.
pub async fn open(db: &Path, create: bool) -> anyhow::Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(create)
        .read_only(!create)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL with NORMAL: a commit survives the process being killed (not a power cut).
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        // Its statements would be log events feeding the queue itself.
        .disable_statement_logging();
    let pool = SqlitePoolOptions::new()
        .max_connections(if create { 1 } else { 2 })
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open the log queue {}", db.display()))?;
    if create {
        for statement in [
            "CREATE TABLE IF NOT EXISTS log_queue (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                queue TEXT NOT NULL,
                ts INTEGER NOT NULL,
                level INTEGER NOT NULL,
                plugin TEXT,
                line TEXT NOT NULL,
                written INTEGER NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS log_queue_pending ON log_queue (queue, written, id)",
            "CREATE INDEX IF NOT EXISTS log_queue_plugin ON log_queue (queue, plugin, id)",
        ] {
            sqlx::query(statement).execute(&pool).await?;
        }
    }
    Ok(pool)
}

struct Writer {
    config: QueueConfig,
    pool: SqlitePool,
    sink: Option<Sink>,
    sink_failed: bool,
    /// Records dropped since start (a warning may itself be dropped later: each one carries
    /// the running total).
    dropped_total: u64,
    /// Records committed since start (read through the guard).
    acknowledged: Arc<AtomicU64>,
}

impl Writer {
    async fn run(&mut self, incoming: &Receiver<Message>) {
        // First what a previous run acknowledged but did not write.
        self.drain().await;
        let mut last_drain = Instant::now();
        let mut stopping = false;
        while !stopping {
            let mut batch = Vec::new();
            let wait = if self.config.block && self.pending().await >= self.config.max_pending {
                // Full: take nothing until the file catches up (the hand-off fills, and so
                // logging blocks).
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.drain().await;
                continue;
            } else {
                Duration::from_millis(100)
            };
            match incoming.recv_timeout(wait) {
                Ok(Message::Record(record)) => batch.push(record),
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => stopping = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            while !stopping && batch.len() < BATCH {
                match incoming.try_recv() {
                    Ok(Message::Record(record)) => batch.push(record),
                    Ok(Message::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                if let Err(err) = self.commit(&batch).await {
                    eprintln!("log queue: cannot commit {} records: {err}", batch.len());
                }
                self.bound().await;
            }
            if stopping || last_drain.elapsed() >= self.config.drain_interval {
                self.drain().await;
                last_drain = Instant::now();
            }
        }
        if let Some(sink) = &mut self.sink {
            let _ = sink.flush();
        }
    }

    async fn commit(&self, batch: &[Record]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for record in batch {
            insert(&mut tx, &self.config.queue, record).await?;
        }
        tx.commit().await?;
        self.acknowledged.fetch_add(
            u64::try_from(batch.len()).unwrap_or(u64::MAX),
            Ordering::Release,
        );
        Ok(())
    }

    async fn pending(&self) -> u64 {
        sqlx::query("SELECT COUNT(*) FROM log_queue WHERE queue = $1 AND written = 0")
            .bind(&self.config.queue)
            .fetch_one(&self.pool)
            .await
            .ok()
            .and_then(|row| row.try_get::<i64, _>(0).ok())
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Drops the oldest waiting records beyond the limit (policy `drop_oldest`).
    async fn bound(&mut self) {
        if self.config.block {
            return;
        }
        let pending = self.pending().await;
        let Some(excess) = pending
            .checked_sub(self.config.max_pending)
            .filter(|n| *n > 0)
        else {
            return;
        };
        let dropped = sqlx::query(
            "DELETE FROM log_queue WHERE id IN (SELECT id FROM log_queue WHERE queue = $1 AND written = 0 ORDER BY id LIMIT $2)",
        )
        .bind(&self.config.queue)
        .bind(i64::try_from(excess).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
        .unwrap_or(0);
        if dropped > 0 {
            self.dropped_total += dropped;
            let warning = record_from(
                3,
                "WARN",
                "plugsconc::logqueue",
                None,
                Map::from_iter([
                    (
                        "message".to_owned(),
                        Value::from(format!(
                            "log queue full ({} records wait for the log file): dropped the {dropped} oldest",
                            self.config.max_pending
                        )),
                    ),
                    ("dropped".to_owned(), Value::from(dropped)),
                    ("dropped_total".to_owned(), Value::from(self.dropped_total)),
                ]),
            );
            let _ = self.commit(&[warning]).await;
        }
    }

    /// Writes waiting records to the sink, oldest first, and marks (or deletes) them.
    async fn drain(&mut self) {
        loop {
            let rows = sqlx::query(
                "SELECT id, line FROM log_queue WHERE queue = $1 AND written = 0 ORDER BY id LIMIT $2",
            )
            .bind(&self.config.queue)
            .bind(i64::try_from(BATCH).unwrap_or(512))
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
            let Some(last) = rows.last().and_then(|row| row.try_get::<i64, _>(0).ok()) else {
                break;
            };
            if let Some(sink) = &mut self.sink {
                let mut text = String::new();
                for row in &rows {
                    text.push_str(row.try_get::<&str, _>(1).unwrap_or_default());
                    text.push('\n');
                }
                if let Err(err) = sink.write_all(text.as_bytes()).and_then(|()| sink.flush()) {
                    // Left waiting: retried at the next drain, bounded by the queue limit.
                    if !self.sink_failed {
                        eprintln!("log queue: cannot write the log file: {err}");
                    }
                    self.sink_failed = true;
                    return;
                }
                self.sink_failed = false;
            }
            let done = if self.config.remove_on_complete {
                "DELETE FROM log_queue WHERE queue = $1 AND written = 0 AND id <= $2"
            } else {
                "UPDATE log_queue SET written = 1 WHERE queue = $1 AND written = 0 AND id <= $2"
            };
            if sqlx::query(done)
                .bind(&self.config.queue)
                .bind(last)
                .execute(&self.pool)
                .await
                .is_err()
            {
                return;
            }
            if rows.len() < BATCH {
                break;
            }
        }
        if !self.config.remove_on_complete {
            let _ = sqlx::query(
                "DELETE FROM log_queue WHERE queue = $1 AND written = 1 AND id <= (SELECT id FROM log_queue WHERE queue = $1 AND written = 1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&self.config.queue)
            .bind(i64::try_from(self.config.keep).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await;
        }
    }
}

async fn insert(
    tx: &mut Transaction<'_, Sqlite>,
    queue: &str,
    record: &Record,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO log_queue (queue, ts, level, plugin, line) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(queue)
    .bind(record.ts)
    .bind(record.level)
    .bind(&record.plugin)
    .bind(&record.line)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// The rank of a level name (case-insensitive): trace 0 … error 4. Callers check what users
/// type (the API and the CLI accept the five names only); a record's level the queue does not
/// know ranks as an error, so a level filter never hides it.
pub fn rank(level: &str) -> i64 {
    match level.to_ascii_lowercase().as_str() {
        "trace" => 0,
        "debug" => 1,
        "info" => 2,
        "warn" | "warning" => 3,
        _ => 4,
    }
}

fn record_from(
    level: i64,
    level_name: &str,
    target: &str,
    plugin: Option<String>,
    fields: Map<String, Value>,
) -> Record {
    let now = chrono::Utc::now();
    let line = serde_json::json!({
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": level_name,
        "fields": fields,
        "target": target,
    });
    Record {
        ts: now.timestamp_micros(),
        level,
        plugin,
        line: line.to_string(),
    }
}

/// Collects an event's fields as JSON.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for QueueLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        // The writer's own events (its database driver's) would feed back into the queue.
        if std::thread::current().name() == Some(WRITER_THREAD) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let plugin = fields
            .0
            .get("plugin")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let level = *meta.level();
        let record = record_from(
            rank(level.as_str()),
            level.as_str(),
            meta.target(),
            plugin,
            fields.0,
        );
        // Blocks when the writer is behind by HANDOFF events: never drops here.
        let _ = self.handoff.send(Message::Record(record));
    }
}

/// A filter for reading records back.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this plugin's records.
    pub plugin: Option<String>,
    /// At or above this rank.
    pub min_level: i64,
    /// At or after this time (microseconds since the epoch).
    pub since: Option<i64>,
    /// After this record id (for following).
    pub after: i64,
    /// At most this many.
    pub limit: i64,
}

/// Records of `queue` matching `filter`, oldest first: (id, JSON line).
///
/// # Errors
///
/// When the file cannot be queried.
pub async fn read(
    pool: &SqlitePool,
    queue: &str,
    filter: &Filter,
) -> anyhow::Result<Vec<(i64, String)>> {
    let rows = sqlx::query(
        "SELECT id, line FROM log_queue WHERE queue = $1 AND id > $2 AND level >= $3
           AND ($4 IS NULL OR plugin = $4) AND ($5 IS NULL OR ts >= $5)
         ORDER BY id LIMIT $6",
    )
    .bind(queue)
    .bind(filter.after)
    .bind(filter.min_level)
    .bind(&filter.plugin)
    .bind(filter.since)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|row| Some((row.try_get(0).ok()?, row.try_get::<String, _>(1).ok()?)))
        .collect())
}

#[cfg(test)]
mod tests;
