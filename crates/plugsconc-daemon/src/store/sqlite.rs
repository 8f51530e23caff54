//! The SQLite store: one file in the data folder (WAL mode), for a single daemon.

use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::shared::Backend;
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
        // SQLite's ever-growing row ids.
        migrator("id INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB", false)
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url, cause: source })?;
        Ok(Self { pool })
    }
}

impl Backend for SqliteStore {
    type Db = sqlx::Sqlite;
    const KIND: &'static str = "sqlite";
    const AUDIT_ORDER: &'static str = "at_ms DESC, rowid DESC";
    // Every statement runs under the single writer lock.
    const CLAIM_LOCK: &'static str = "";
    // One daemon per file: a job left running at start is an orphan of the previous daemon.
    const SHARED_QUEUE: bool = false;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// A SQLite file belongs to one daemon: there is no one else to tell.
    async fn announce(
        &self,
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        _notice: &Notice,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Nor anyone to hear from.
    async fn changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Heard>>, StoreError> {
        Ok(None)
    }
}
