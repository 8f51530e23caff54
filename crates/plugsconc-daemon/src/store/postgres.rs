//! The PostgreSQL store, shared by several daemons: its tables live in their own schema
//! (`store.schema`), and every state change is announced with `pg_notify` on a channel of that
//! schema, which each daemon's listener turns into [`Heard::Change`] (or [`Heard::Resync`] after
//! a lost connection, since notifications sent meanwhile are gone). Triggers on `plugin_state`
//! and `plugin_endpoints` announce on the same channel the changes made by anything but a
//! daemon — an `UPDATE` typed into `psql` — which the listener turns into [`Heard::Row`]. A
//! daemon's own connections set `plugsconc.writer`, which silences the triggers: its changes
//! are announced once, by its own notice. A payload that is neither is logged and skipped.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor as _};

use super::shared::{Backend, query_error};
use super::{Heard, Notice, RowChange, StoreError, migrator, redact};

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
        // `plugsconc.writer` marks the daemon's own writes, which the triggers leave to the
        // daemon's notice (set per session, so it holds on every pooled connection).
        let search_path =
            format!("SET search_path TO \"{schema}\"; SET plugsconc.writer = 'daemon'");
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
        migrator("id BIGSERIAL PRIMARY KEY", "BYTEA", true)
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
                        let heard = match parse_payload(notification.payload()) {
                            Ok(heard) => heard,
                            Err(err) => {
                                tracing::warn!(payload = %shown_payload(notification.payload()), error = %err, "ignoring a malformed catalog notification");
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

/// What a trigger sends; every field is checked, as anyone can `pg_notify` the channel.
#[derive(Debug, serde::Deserialize)]
struct RawRowChange {
    table: Option<String>,
    op: Option<String>,
    plugin: Option<String>,
}

/// Reads a notification: a daemon's [`Notice`], or a trigger's row change (told apart by its
/// `table` field).
///
/// # Errors
///
/// What is wrong with it, for the warning that skips it.
pub(super) fn parse_payload(payload: &str) -> Result<Heard, String> {
    let value: serde_json::Value =
        serde_json::from_str(payload).map_err(|err| format!("not JSON: {err}"))?;
    if value.get("table").is_none() {
        return serde_json::from_value::<Notice>(value)
            .map(Heard::Change)
            .map_err(|err| format!("not a catalog notice: {err}"));
    }
    let raw: RawRowChange =
        serde_json::from_value(value).map_err(|err| format!("not a row change: {err}"))?;
    let field = |value: Option<String>, name: &str| {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the row change has no {name} (null or empty)"))
    };
    let change = RowChange {
        table: field(raw.table, "table")?,
        op: field(raw.op, "op")?,
        plugin: field(raw.plugin, "plugin")?,
    };
    if !["INSERT", "UPDATE", "DELETE"].contains(&change.op.as_str()) {
        return Err(format!(
            "the row change's op is {:?}, expected INSERT, UPDATE or DELETE",
            change.op
        ));
    }
    Ok(Heard::Row(change))
}

/// A payload as a warning shows it: at most 200 characters.
fn shown_payload(payload: &str) -> String {
    const MAX: usize = 200;
    match payload.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &payload[..cut]),
        None => payload.to_owned(),
    }
}
