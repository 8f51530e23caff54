//! The PostgreSQL store, shared by several daemons: its tables live in their own schema
//! (`store.schema`), and every state change is announced with `pg_notify` on a channel of that
//! schema, which each daemon's listener turns into [`Heard::Change`] (or [`Heard::Resync`] after
//! a lost connection, since notifications sent meanwhile are gone).

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor as _};

use super::shared::{Backend, query_error};
use super::{Heard, Notice, StoreError, migrator, redact};

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
            cause: source,
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
        // Job ids from a sequence.
        migrator("id BIGSERIAL PRIMARY KEY", "BYTEA")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: shown.clone(),
                cause: source,
            })?;
        Ok(Self {
            pool,
            channel: format!("{schema}_catalog"),
            url: shown,
        })
    }
}

impl Backend for PgStore {
    type Db = sqlx::Postgres;
    const KIND: &'static str = "postgres";
    const AUDIT_ORDER: &'static str = "at_ms DESC";
    // Daemons claim from one queue: a row being claimed elsewhere is skipped, not waited for.
    const CLAIM_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";
    const SHARED_QUEUE: bool = true;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// Announces a change with `pg_notify`, delivered at commit, only if the change commits.
    async fn announce(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        notice: &Notice,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(serde_json::to_string(notice).unwrap_or_default())
            .execute(&mut **tx)
            .await
            .map_err(query_error("announce the change"))?;
        Ok(())
    }

    /// Changes the other daemons announce, from a `LISTEN` connection.
    async fn changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Heard>>, StoreError> {
        self.follow().await
    }
}

impl PgStore {
    /// A connection listening on the catalog channel.
    async fn listener(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(|source| StoreError::Open {
                url: self.url.clone(),
                cause: source,
            })?;
        listener
            .listen(&self.channel)
            .await
            .map_err(query_error("listen for changes"))?;
        Ok(listener)
    }

    /// Follows the catalog channel on a connection of its own, reconnecting as needed.
    async fn follow(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Heard>>, StoreError> {
        let mut listener = self.listener().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let store = self.clone();
        // Ends when the daemon drops the receiver.
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        let heard = match serde_json::from_str::<Notice>(notification.payload()) {
                            Ok(notice) => Heard::Change(notice),
                            Err(err) => {
                                tracing::warn!(error = %err, "ignoring a malformed catalog notification");
                                continue;
                            }
                        };
                        if tx.send(heard).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(None) => {
                        tracing::warn!("catalog listener lost its connection; reconnecting");
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "catalog listener lost its connection; reconnecting");
                    }
                }
                // Listening again before asking for a resync: a change committed between the
                // daemon's rereading and a later `LISTEN` would be missed for good.
                listener = loop {
                    if tx.is_closed() {
                        return;
                    }
                    match store.listener().await {
                        Ok(listener) => break listener,
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot listen for catalog changes; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                };
                if tx.send(Heard::Resync).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}
