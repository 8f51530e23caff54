//! The SQLite store: one file in the data folder (WAL mode), for a single daemon.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::jobs::{job_queue, job_table};
use super::shared::{AUDIT_INSERT, query_error, shared_store};
use super::{Heard, Notice, StoreError, migrator};

/// The catalog in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it and its folder when missing) and migrates `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] naming the file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Open {
                url: url.clone(),
                cause: sqlx::Error::Io(err),
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                url: url.clone(),
                cause: source,
            })?;
        migrator(JOB_TABLE, BUNDLE_TABLE)
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url, cause: source })?;
        Ok(Self { pool })
    }
}

impl SqliteStore {
    /// A SQLite file belongs to one daemon: there is no one else to tell.
    #[allow(clippy::unused_async)]
    async fn announce(
        &self,
        _tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        _notice: &Notice,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Nor anyone to hear from.
    #[allow(clippy::unused_async)]
    async fn changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Heard>>, StoreError> {
        Ok(None)
    }
}

/// The job table, with SQLite's ever-growing row ids.
const JOB_TABLE: &str = job_table!("id INTEGER PRIMARY KEY AUTOINCREMENT");

/// Shared plugin bundles.
const BUNDLE_TABLE: &str = super::bundle_table!("BLOB");

shared_store!(SqliteStore, "sqlite", "at_ms DESC, rowid DESC");
// One daemon per file: a job left running at start is an orphan of the previous daemon.
job_queue!(SqliteStore, sqlx::sqlite::SqliteRow, "", false);
