//! The SQLite store: one file in the data folder (WAL mode), for a single daemon.

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::{AuditEntry, Heard, Store, StoreError, migrator, now_ms};

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
                source: sqlx::Error::Io(err),
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
                source,
            })?;
        migrator()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url, source })?;
        Ok(Self { pool })
    }
}

fn query_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

#[tonic::async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn states(&self) -> Result<BTreeMap<String, bool>, StoreError> {
        let rows = sqlx::query("SELECT name, enabled FROM plugin_state")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read plugin states"))?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, row.try_get("enabled")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("read plugin states"))
    }

    async fn set_enabled(
        &self,
        plugin: &str,
        enabled: bool,
        actor: &str,
        _origin: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(query_error("begin"))?;
        sqlx::query(
            "INSERT INTO plugin_state (name, enabled, updated_ms, updated_by) VALUES (?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled,
                 updated_ms = excluded.updated_ms, updated_by = excluded.updated_by",
        )
        .bind(plugin)
        .bind(enabled)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(query_error("record plugin state"))?;
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, action, plugin, detail) VALUES (?, ?, ?, ?, '')",
        )
        .bind(now)
        .bind(actor)
        .bind(if enabled { "enable" } else { "disable" })
        .bind(plugin)
        .execute(&mut *tx)
        .await
        .map_err(query_error("append to the audit log"))?;
        tx.commit().await.map_err(query_error("commit"))
    }

    async fn record_version(
        &self,
        plugin: &str,
        version: &str,
        manifest_sha256: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(query_error("begin"))?;
        let inserted = sqlx::query(
            "INSERT INTO plugin_version (name, version, manifest_sha256, first_seen_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(plugin)
        .bind(version)
        .bind(manifest_sha256)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(query_error("record a plugin version"))?
        .rows_affected();
        if inserted > 0 {
            sqlx::query("INSERT INTO audit_log (at_ms, actor, action, plugin, detail) VALUES (?, ?, 'version', ?, ?)")
                .bind(now)
                .bind(actor)
                .bind(plugin)
                .bind(format!("{version} manifest sha256 {manifest_sha256}"))
                .execute(&mut *tx)
                .await
                .map_err(query_error("append to the audit log"))?;
        }
        tx.commit().await.map_err(query_error("commit"))
    }

    async fn record_action(
        &self,
        plugin: &str,
        action: &str,
        detail: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, action, plugin, detail) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(now_ms())
        .bind(actor)
        .bind(action)
        .bind(plugin)
        .bind(detail)
        .execute(&self.pool)
        .await
        .map_err(query_error("append to the audit log"))?;
        Ok(())
    }

    async fn publishers(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT name, public_key FROM trusted_publisher ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("read trusted publishers"))?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, row.try_get("public_key")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("read trusted publishers"))
    }

    async fn set_publisher(
        &self,
        name: &str,
        key: Option<&str>,
        actor: &str,
        _origin: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(query_error("begin"))?;
        match key {
            Some(key) => {
                sqlx::query(
                    "INSERT INTO trusted_publisher (name, public_key, added_ms, added_by) VALUES (?, ?, ?, ?)
                     ON CONFLICT (name) DO UPDATE SET public_key = excluded.public_key,
                         added_ms = excluded.added_ms, added_by = excluded.added_by",
                )
                .bind(name)
                .bind(key)
                .bind(now)
                .bind(actor)
                .execute(&mut *tx)
                .await
                .map_err(query_error("record a trusted publisher"))?;
            }
            None => {
                sqlx::query("DELETE FROM trusted_publisher WHERE name = ?")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("remove a trusted publisher"))?;
            }
        }
        sqlx::query(
            "INSERT INTO audit_log (at_ms, actor, action, plugin, detail) VALUES (?, ?, ?, ?, '')",
        )
        .bind(now)
        .bind(actor)
        .bind(if key.is_some() { "trust" } else { "distrust" })
        .bind(format!("publisher:{name}"))
        .execute(&mut *tx)
        .await
        .map_err(query_error("append to the audit log"))?;
        tx.commit().await.map_err(query_error("commit"))
    }

    async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, actor, action, plugin, detail FROM audit_log ORDER BY at_ms DESC, rowid DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("read the audit log"))?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    at_ms: row.try_get("at_ms")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    plugin: row.try_get("plugin")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("read the audit log"))
    }

    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Heard>>, StoreError> {
        // A SQLite file belongs to one daemon: there is no one else to hear from.
        Ok(None)
    }
}
