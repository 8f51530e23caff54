//! The PostgreSQL store, shared by several daemons: its tables live in their own schema
//! (`store.schema`), and every state change is announced with `pg_notify` on a channel of that
//! schema, which each daemon's listener turns into [`Heard::Change`] (or [`Heard::Resync`] after
//! a lost connection, since notifications sent meanwhile are gone).

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor as _, Row as _};

use super::{AuditEntry, Heard, Notice, Store, StoreError, migrator, now_ms, redact};

/// The catalog in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    channel: String,
    url: String,
}

impl PgStore {
    /// Connects, creates the schema when missing, and migrates. `schema` must be a plain
    /// identifier (the configuration checks it).
    ///
    /// # Errors
    ///
    /// [`StoreError`] naming the database (without its password).
    pub async fn open(url: &str, schema: &str) -> Result<Self, StoreError> {
        let shown = redact(url);
        let open_error = |source| StoreError::Open {
            url: shown.clone(),
            source,
        };
        // Create the schema on a first connection, then have every pooled connection use it.
        let bootstrap = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(open_error)?;
        bootstrap
            .execute(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .await
            .map_err(open_error)?;
        bootstrap.close().await;
        let search_path = format!("SET search_path TO \"{schema}\"");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    conn.execute(AssertSqlSafe(search_path)).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(open_error)?;
        migrator()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Self {
            pool,
            channel: format!("{schema}_catalog"),
            url: shown,
        })
    }
}

fn query_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

#[tonic::async_trait]
impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
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
        origin: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(query_error("begin"))?;
        sqlx::query(
            "INSERT INTO plugin_state (name, enabled, updated_ms, updated_by) VALUES ($1, $2, $3, $4)
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
        sqlx::query("INSERT INTO audit_log (at_ms, actor, action, plugin, detail) VALUES ($1, $2, $3, $4, '')")
            .bind(now)
            .bind(actor)
            .bind(if enabled { "enable" } else { "disable" })
            .bind(plugin)
            .execute(&mut *tx)
            .await
            .map_err(query_error("append to the audit log"))?;
        let notice = Notice {
            origin: origin.to_owned(),
            plugin: plugin.to_owned(),
            enabled,
            publishers: false,
        };
        // Delivered at commit, only if the change commits.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(serde_json::to_string(&notice).unwrap_or_default())
            .execute(&mut *tx)
            .await
            .map_err(query_error("announce the change"))?;
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
            "INSERT INTO plugin_version (name, version, manifest_sha256, first_seen_ms) VALUES ($1, $2, $3, $4)
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
            sqlx::query("INSERT INTO audit_log (at_ms, actor, action, plugin, detail) VALUES ($1, $2, 'version', $3, $4)")
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
        sqlx::query("INSERT INTO audit_log (at_ms, actor, action, plugin, detail) VALUES ($1, $2, $3, $4, $5)")
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
        origin: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(query_error("begin"))?;
        match key {
            Some(key) => {
                sqlx::query(
                    "INSERT INTO trusted_publisher (name, public_key, added_ms, added_by) VALUES ($1, $2, $3, $4)
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
                sqlx::query("DELETE FROM trusted_publisher WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_error("remove a trusted publisher"))?;
            }
        }
        sqlx::query("INSERT INTO audit_log (at_ms, actor, action, plugin, detail) VALUES ($1, $2, $3, $4, '')")
            .bind(now)
            .bind(actor)
            .bind(if key.is_some() { "trust" } else { "distrust" })
            .bind(format!("publisher:{name}"))
            .execute(&mut *tx)
            .await
            .map_err(query_error("append to the audit log"))?;
        let notice = Notice {
            origin: origin.to_owned(),
            plugin: String::new(),
            enabled: false,
            publishers: true,
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(serde_json::to_string(&notice).unwrap_or_default())
            .execute(&mut *tx)
            .await
            .map_err(query_error("announce the change"))?;
        tx.commit().await.map_err(query_error("commit"))
    }

    async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, actor, action, plugin, detail FROM audit_log ORDER BY at_ms DESC LIMIT $1",
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
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(|source| StoreError::Open {
                url: self.url.clone(),
                source,
            })?;
        listener
            .listen(&self.channel)
            .await
            .map_err(query_error("listen for changes"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        // Ends when the daemon drops the receiver.
        tokio::spawn(async move {
            loop {
                let heard = match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        match serde_json::from_str::<Notice>(notification.payload()) {
                            Ok(notice) => Heard::Change(notice),
                            Err(err) => {
                                tracing::warn!(error = %err, "ignoring a malformed catalog notification");
                                continue;
                            }
                        }
                    }
                    // The connection was lost; the next call reconnects. Whatever was sent
                    // meanwhile is lost, so the daemon rereads everything.
                    Ok(None) => Heard::Resync,
                    Err(err) => {
                        tracing::warn!(error = %err, "catalog listener lost its connection; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Heard::Resync
                    }
                };
                if tx.send(heard).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}
