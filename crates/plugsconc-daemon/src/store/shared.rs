//! The [`super::Store`] both backends share, written once over [`Backend`]: a database
//! (`sqlx::Database`) with the column types the catalog uses, plus what differs per backend —
//! the audit log's order, how a job claim locks its row, `announce` (tell the other daemons,
//! inside the change's transaction) and `changes` (listen for what they announce). The queries
//! use `$N` placeholders, which SQLite accepts as well as PostgreSQL, so one text serves both.

use std::collections::BTreeMap;
use std::future::Future;

use sqlx::{AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::{Heard, Notice, Store, StoreError, now_ms};

pub(super) fn query_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |cause| StoreError::Query { what, cause }
}

/// What one backend adds to the shared SQL: its pool and what truly differs.
pub(super) trait Backend: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The driver.
    type Db: Database;
    /// `sqlite` or `postgres`.
    const KIND: &'static str;
    /// The audit log's `ORDER BY`: newest first, ties broken where the backend can.
    const AUDIT_ORDER: &'static str;
    /// What ends a job claim's choice of row (`FOR UPDATE SKIP LOCKED` where several daemons
    /// claim at once).
    const CLAIM_LOCK: &'static str;
    /// Whether other daemons use the same job queue.
    const SHARED_QUEUE: bool;

    /// The connection pool.
    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// Rows a statement changed (each driver has its own result type).
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    /// Tells the other daemons of a change, inside its transaction.
    fn announce(
        &self,
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        notice: &Notice,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What the other daemons announce; `None` when no one else shares the store.
    fn changes(
        &self,
    ) -> impl Future<Output = Result<Option<tokio::sync::mpsc::Receiver<Heard>>, StoreError>> + Send;
}

#[tonic::async_trait]
impl<B> Store for B
where
    B: Backend,
    // What the driver must read and write (the same list as the job queue's).
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
    for<'a> &'a str: ColumnIndex<<B::Db as Database>::Row> + Encode<'a, B::Db> + Type<B::Db>,
    for<'a> &'a [u8]: Encode<'a, B::Db> + Type<B::Db>,
    for<'r> String: Decode<'r, B::Db> + Encode<'r, B::Db> + Type<B::Db>,
    for<'r> Vec<u8>: Decode<'r, B::Db> + Encode<'r, B::Db> + Type<B::Db>,
    for<'r> bool: Decode<'r, B::Db> + Encode<'r, B::Db> + Type<B::Db>,
    for<'r> i64: Decode<'r, B::Db> + Encode<'r, B::Db> + Type<B::Db>,
    for<'a> Option<&'a str>: Encode<'a, B::Db> + Type<B::Db>,
    for<'r> Option<String>: Encode<'r, B::Db> + Type<B::Db>,
    for<'r> Option<i64>: Encode<'r, B::Db> + Type<B::Db>,
    B: crate::jobs::queue::JobQueue,
{
    fn kind(&self) -> &'static str {
        B::KIND
    }

    async fn states(&self) -> Result<BTreeMap<String, bool>, StoreError> {
        use sqlx::Row as _;
        let what = "read plugin states";
        let rows = sqlx::query("SELECT name, enabled FROM plugin_state")
            .fetch_all(self.pool())
            .await
            .map_err(query_error(what))?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, row.try_get("enabled")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error(what))
    }

    async fn state(&self, plugin: &str) -> Result<Option<bool>, StoreError> {
        use sqlx::Row as _;
        let what = "read a plugin's state";
        let row = sqlx::query("SELECT enabled FROM plugin_state WHERE name = $1")
            .bind(plugin)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error(what))?;
        row.map(|row| row.try_get("enabled"))
            .transpose()
            .map_err(query_error(what))
    }

    async fn set_enabled(
        &self,
        plugin: &str,
        enabled: bool,
        actor: &str,
        origin: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool().begin().await.map_err(query_error("begin"))?;
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
        sqlx::query(AUDIT_INSERT)
            .bind(now)
            .bind(actor)
            .bind(if enabled { "enable" } else { "disable" })
            .bind(plugin)
            .bind("")
            .execute(&mut *tx)
            .await
            .map_err(query_error("append to the audit log"))?;
        let notice = super::Notice {
            origin: origin.to_owned(),
            plugin: plugin.to_owned(),
            enabled,
            publishers: false,
            action: None,
        };
        self.announce(&mut tx, &notice).await?;
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
        let mut tx = self.pool().begin().await.map_err(query_error("begin"))?;
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
        .map_err(query_error("record a plugin version"))
        .map(|done| B::rows_affected(&done))?;
        if inserted > 0 {
            sqlx::query(AUDIT_INSERT)
                .bind(now)
                .bind(actor)
                .bind("version")
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
        sqlx::query(AUDIT_INSERT)
            .bind(now_ms())
            .bind(actor)
            .bind(action)
            .bind(plugin)
            .bind(detail)
            .execute(self.pool())
            .await
            .map_err(query_error("append to the audit log"))?;
        Ok(())
    }

    async fn publishers(&self) -> Result<Vec<(String, String)>, StoreError> {
        use sqlx::Row as _;
        let what = "read trusted publishers";
        let rows = sqlx::query("SELECT name, public_key FROM trusted_publisher ORDER BY name")
            .fetch_all(self.pool())
            .await
            .map_err(query_error(what))?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, row.try_get("public_key")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error(what))
    }

    async fn set_publisher(
        &self,
        name: &str,
        key: Option<&str>,
        actor: &str,
        origin: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool().begin().await.map_err(query_error("begin"))?;
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
        sqlx::query(AUDIT_INSERT)
            .bind(now)
            .bind(actor)
            .bind(if key.is_some() { "trust" } else { "distrust" })
            .bind(format!("publisher:{name}"))
            .bind("")
            .execute(&mut *tx)
            .await
            .map_err(query_error("append to the audit log"))?;
        let notice = super::Notice {
            origin: origin.to_owned(),
            plugin: String::new(),
            enabled: false,
            publishers: true,
            action: None,
        };
        self.announce(&mut tx, &notice).await?;
        tx.commit().await.map_err(query_error("commit"))
    }

    async fn audit(&self, limit: i64) -> Result<Vec<super::AuditEntry>, StoreError> {
        use sqlx::Row as _;
        let what = "read the audit log";
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT at_ms, actor, action, plugin, detail FROM audit_log ORDER BY {} LIMIT $1",
            B::AUDIT_ORDER
        )))
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(query_error(what))?;
        rows.iter()
            .map(|row| {
                Ok(super::AuditEntry {
                    at_ms: row.try_get("at_ms")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    plugin: row.try_get("plugin")?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error(what))
    }

    async fn listen(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<super::Heard>>, StoreError> {
        self.changes().await
    }

    fn jobs(&self) -> std::sync::Arc<dyn crate::jobs::queue::JobQueue> {
        std::sync::Arc::new(self.clone())
    }

    async fn share_install(
        &self,
        plugin: &str,
        bundle: &[u8],
        actor: &str,
        origin: &str,
    ) -> Result<(), StoreError> {
        let sha256 = super::bundle_sha256(bundle);
        let now = now_ms();
        let mut tx = self.pool().begin().await.map_err(query_error("begin"))?;
        // A plugin installed anew (not an upgrade of one installed) starts enabled on
        // every daemon, whatever was recorded before it was uninstalled or by a daemon
        // that had not applied the uninstall yet; an upgrade keeps its state.
        sqlx::query(
            "INSERT INTO plugin_state (name, enabled, updated_ms, updated_by)
             SELECT $1, TRUE, $2, $3
             WHERE NOT EXISTS (SELECT 1 FROM plugin_bundle WHERE name = $1 AND removed = FALSE)
             ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled,
                 updated_ms = excluded.updated_ms, updated_by = excluded.updated_by",
        )
        .bind(plugin)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(query_error("record a new plugin's state"))?;
        sqlx::query(
            "INSERT INTO plugin_bundle (name, sha256, bundle, removed, updated_ms, updated_by)
             VALUES ($1, $2, $3, FALSE, $4, $5)
             ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, bundle = excluded.bundle,
                 removed = FALSE, updated_ms = excluded.updated_ms, updated_by = excluded.updated_by",
        )
        .bind(plugin)
        .bind(sha256)
        .bind(bundle)
        .bind(now)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(query_error("keep the plugin's bundle"))?;
        self.announce(
            &mut tx,
            &super::Notice::action(origin, plugin, super::Action::Install),
        )
        .await?;
        tx.commit().await.map_err(query_error("commit"))
    }

    async fn share_uninstall(
        &self,
        plugin: &str,
        actor: &str,
        origin: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(query_error("begin"))?;
        // Kept as a tombstone, so a daemon that missed the notice removes it at resync.
        sqlx::query(
            "INSERT INTO plugin_bundle (name, sha256, bundle, removed, updated_ms, updated_by)
             VALUES ($1, '', $2, TRUE, $3, $4)
             ON CONFLICT (name) DO UPDATE SET sha256 = '', bundle = excluded.bundle,
                 removed = TRUE, updated_ms = excluded.updated_ms, updated_by = excluded.updated_by",
        )
        .bind(plugin)
        .bind(Vec::<u8>::new())
        .bind(now_ms())
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(query_error("mark the plugin's bundle uninstalled"))?;
        // Its state goes with it: a plugin installed again starts enabled.
        sqlx::query("DELETE FROM plugin_state WHERE name = $1")
            .bind(plugin)
            .execute(&mut *tx)
            .await
            .map_err(query_error("forget the plugin's state"))?;
        // And its endpoints: no daemon serves them any more.
        sqlx::query("DELETE FROM plugin_endpoints WHERE plugin = $1")
            .bind(plugin)
            .execute(&mut *tx)
            .await
            .map_err(query_error("forget the plugin's endpoints"))?;
        self.announce(
            &mut tx,
            &super::Notice::action(origin, plugin, super::Action::Uninstall),
        )
        .await?;
        tx.commit().await.map_err(query_error("commit"))
    }

    async fn share_reload(&self, plugin: &str, origin: &str) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.map_err(query_error("begin"))?;
        self.announce(
            &mut tx,
            &super::Notice::action(origin, plugin, super::Action::Reload),
        )
        .await?;
        tx.commit().await.map_err(query_error("commit"))
    }

    async fn shared_bundles(&self) -> Result<Vec<super::SharedBundle>, StoreError> {
        use sqlx::Row as _;
        let what = "read the shared bundles";
        let rows = sqlx::query("SELECT name, sha256, removed FROM plugin_bundle ORDER BY name")
            .fetch_all(self.pool())
            .await
            .map_err(query_error(what))?;
        rows.iter()
            .map(|row| {
                Ok(super::SharedBundle {
                    plugin: row.try_get("name")?,
                    sha256: row.try_get("sha256")?,
                    removed: row.try_get("removed")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error(what))
    }

    async fn shared_bundle(&self, plugin: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use sqlx::Row as _;
        let what = "read a shared bundle";
        let row =
            sqlx::query("SELECT bundle FROM plugin_bundle WHERE name = $1 AND removed = FALSE")
                .bind(plugin)
                .fetch_optional(self.pool())
                .await
                .map_err(query_error(what))?;
        row.map(|row| row.try_get("bundle"))
            .transpose()
            .map_err(query_error(what))
    }

    async fn set_endpoints(
        &self,
        plugin: &str,
        endpoints: &[(String, String)],
    ) -> Result<(), StoreError> {
        use sqlx::Row as _;
        let mut tx = self.pool().begin().await.map_err(query_error("begin"))?;
        let what = "read a plugin's endpoints";
        let rows = sqlx::query("SELECT method, path FROM plugin_endpoints WHERE plugin = $1")
            .bind(plugin)
            .fetch_all(&mut *tx)
            .await
            .map_err(query_error(what))?;
        let recorded = rows
            .iter()
            .map(|row| Ok((row.try_get("method")?, row.try_get("path")?)))
            .collect::<Result<std::collections::BTreeSet<(String, String)>, sqlx::Error>>()
            .map_err(query_error(what))?;
        let wanted: std::collections::BTreeSet<(String, String)> =
            endpoints.iter().cloned().collect();
        for (method, path) in recorded.difference(&wanted) {
            sqlx::query(
                "DELETE FROM plugin_endpoints WHERE plugin = $1 AND method = $2 AND path = $3",
            )
            .bind(plugin)
            .bind(method.as_str())
            .bind(path.as_str())
            .execute(&mut *tx)
            .await
            .map_err(query_error("remove a plugin endpoint"))?;
        }
        for (method, path) in wanted.difference(&recorded) {
            // Another daemon sharing the store may record the same plugin at the same moment.
            sqlx::query(
                "INSERT INTO plugin_endpoints (plugin, method, path) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(plugin)
            .bind(method.as_str())
            .bind(path.as_str())
            .execute(&mut *tx)
            .await
            .map_err(query_error("record a plugin endpoint"))?;
        }
        tx.commit().await.map_err(query_error("commit"))
    }

    async fn endpoints(&self) -> Result<Vec<super::Endpoint>, StoreError> {
        use sqlx::Row as _;
        let what = "read the plugins' endpoints";
        let rows = sqlx::query(
            "SELECT plugin, method, path FROM plugin_endpoints ORDER BY plugin, method, path",
        )
        .fetch_all(self.pool())
        .await
        .map_err(query_error(what))?;
        rows.iter()
            .map(|row| {
                Ok(super::Endpoint {
                    plugin: row.try_get("plugin")?,
                    method: row.try_get("method")?,
                    path: row.try_get("path")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error(what))
    }
}

/// One audit entry: at, actor, action, plugin, detail.
pub(super) const AUDIT_INSERT: &str =
    "INSERT INTO audit_log (at_ms, actor, action, plugin, detail) VALUES ($1, $2, $3, $4, $5)";
