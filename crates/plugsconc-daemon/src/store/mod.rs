//! The persistent catalog state: what must survive a restart of the daemon — each plugin's
//! enabled/disabled state, the versions installed with their hashes, and an audit log of every
//! change (who, what, when). Two implementations behind [`Store`]: SQLite in the data folder
//! (the default, one daemon) and PostgreSQL (`store.url`), where several daemons share one
//! catalog and each change is published with `NOTIFY` so every daemon applies it
//! ([`Store::listen`]); there, triggers also announce rows changed by hand ([`Heard::Row`]).
//! It records each plugin's HTTP endpoints ([`Store::endpoints`]) for the API to list. The
//! store also keeps the durable job queue ([`Store::jobs`]). The SQL is
//! written once (`shared`, `jobs`) over a [`shared::Backend`] each backend implements.

mod jobs;
mod postgres;
mod shared;
mod sqlite;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::config::StoreUrl;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Why the store cannot be used.
///
/// The driver's error is part of each message (these errors are logged with plain `{}`), not
/// its `source()`, so a chain printed with anyhow's `{:#}` names it once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or opened.
    #[error("cannot open the catalog store {url}: {cause}")]
    Open {
        /// Where (credentials removed).
        url: String,
        /// The driver's error.
        cause: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the catalog store {url}: {cause}")]
    Migrate {
        /// Where.
        url: String,
        /// The migrator's error.
        cause: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("catalog store query failed ({what}): {cause}")]
    Query {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        cause: sqlx::Error,
    },
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Who (`api@<daemon>`, `watcher@<daemon>`, ...).
    pub actor: String,
    /// What (`enable`, `disable`, `version`).
    pub action: String,
    /// Which plugin.
    pub plugin: String,
    /// Details (the version and hashes for `version`).
    pub detail: String,
}

/// A change another daemon made, received through the shared store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Notice {
    /// The daemon that made it.
    pub origin: String,
    /// The plugin.
    pub plugin: String,
    /// Its new state when it was announced; the daemons hearing it read the store's row
    /// instead, which may be newer.
    pub enabled: bool,
    /// The trusted publishers changed instead (`plugin` and `enabled` are then unused).
    #[serde(default)]
    pub publishers: bool,
    /// The plugin was installed (its bundle is in the store), uninstalled or reloaded instead of
    /// enabled or disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

impl Notice {
    /// `origin` did `action` to `plugin`.
    pub fn action(origin: &str, plugin: &str, action: Action) -> Self {
        Self {
            origin: origin.to_owned(),
            plugin: plugin.to_owned(),
            enabled: false,
            publishers: false,
            action: Some(action),
        }
    }
}

/// What a daemon did to a plugin, for the daemons sharing its catalog to do the same.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Installed or upgraded: [`Store::shared_bundle`] holds it.
    Install,
    /// Uninstalled.
    Uninstall,
    /// Reloaded from its folder.
    Reload,
}

/// A plugin bundle kept in a shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBundle {
    /// The plugin.
    pub plugin: String,
    /// SHA-256 of the bundle (hex).
    pub sha256: String,
    /// Uninstalled since: daemons that have it remove it.
    pub removed: bool,
}

/// One HTTP endpoint a plugin serves under `/plugins/{name}`, as the `plugin_endpoints` table
/// records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The plugin.
    pub plugin: String,
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path under `/plugins/{name}`, starting with `/`.
    pub path: String,
}

/// A row of a catalog table changed by someone other than a daemon (by hand with `psql`, a
/// script, ...), as the table's trigger announced it. Only a hint: the row is read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange {
    /// `plugin_state` or `plugin_endpoints`.
    pub table: String,
    /// `INSERT`, `UPDATE` or `DELETE`.
    pub op: String,
    /// The plugin the row is about.
    pub plugin: String,
}

/// What the listener reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A change made elsewhere.
    Change(Notice),
    /// A row changed in the store by something other than a daemon.
    Row(RowChange),
    /// The connection was lost and is back: changes may have been missed, read everything.
    Resync,
}

/// The persistent catalog.
#[tonic::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;

    /// Every plugin with a recorded state: name → enabled.
    async fn states(&self) -> Result<BTreeMap<String, bool>, StoreError>;

    /// One plugin's recorded state (enabled?); `None` when none is recorded.
    async fn state(&self, plugin: &str) -> Result<Option<bool>, StoreError>;

    /// Records a plugin's state and the audit entry; with PostgreSQL, announces it to the other
    /// daemons (as `origin`).
    async fn set_enabled(
        &self,
        plugin: &str,
        enabled: bool,
        actor: &str,
        origin: &str,
    ) -> Result<(), StoreError>;

    /// Records the version of a plugin now in use, with its manifest hash.
    async fn record_version(
        &self,
        plugin: &str,
        version: &str,
        manifest_sha256: &str,
        actor: &str,
    ) -> Result<(), StoreError>;

    /// Appends an audit entry (install, uninstall, ...).
    async fn record_action(
        &self,
        plugin: &str,
        action: &str,
        detail: &str,
        actor: &str,
    ) -> Result<(), StoreError>;

    /// Trusted publishers kept in the store: (name, public key text).
    async fn publishers(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Adds or replaces (`Some` key) or removes (`None`) a trusted publisher, with an audit
    /// entry; with PostgreSQL, announces it to the other daemons.
    async fn set_publisher(
        &self,
        name: &str,
        key: Option<&str>,
        actor: &str,
        origin: &str,
    ) -> Result<(), StoreError>;

    /// The newest audit entries, newest first.
    async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;

    /// Changes made by other daemons (PostgreSQL); `None` for a store no one else shares.
    async fn listen(&self) -> Result<Option<tokio::sync::mpsc::Receiver<Heard>>, StoreError>;

    /// The durable job queue kept in this store.
    fn jobs(&self) -> std::sync::Arc<dyn crate::jobs::queue::JobQueue>;

    /// Whether other daemons share this store (then installs, uninstalls and reloads are
    /// shared through it).
    fn shared(&self) -> bool {
        self.kind() == "postgres"
    }

    /// Keeps the bundle of a plugin just installed (or upgraded) for the daemons sharing the
    /// store, and announces it (as `origin`). A plugin installed anew (no bundle kept, or an
    /// uninstalled one) is recorded enabled; an upgrade keeps its state.
    async fn share_install(
        &self,
        plugin: &str,
        bundle: &[u8],
        actor: &str,
        origin: &str,
    ) -> Result<(), StoreError>;

    /// Marks a plugin's bundle uninstalled and forgets its state, and announces it.
    async fn share_uninstall(
        &self,
        plugin: &str,
        actor: &str,
        origin: &str,
    ) -> Result<(), StoreError>;

    /// Announces that a plugin was reloaded.
    async fn share_reload(&self, plugin: &str, origin: &str) -> Result<(), StoreError>;

    /// The bundles kept, without their bytes.
    async fn shared_bundles(&self) -> Result<Vec<SharedBundle>, StoreError>;

    /// The bytes of a plugin's bundle, unless it was uninstalled.
    async fn shared_bundle(&self, plugin: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Makes `plugin`'s recorded HTTP endpoints (method, path) exactly `endpoints`; rows already
    /// as they should be are left alone, so a daemon that catalogs an unchanged plugin writes
    /// nothing.
    async fn set_endpoints(
        &self,
        plugin: &str,
        endpoints: &[(String, String)],
    ) -> Result<(), StoreError>;

    /// Every recorded endpoint, by plugin, method and path.
    async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError>;
}

/// Opens the store `url` names (`sqlite://<file>`, `postgres://...`), or SQLite in `data_dir`
/// when it names none, and migrates it.
///
/// # Errors
///
/// [`StoreError`] naming the store.
pub async fn open(
    url: &StoreUrl,
    schema: &str,
    data_dir: &std::path::Path,
) -> Result<Box<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Postgres(url) => Box::new(PgStore::open(url, schema).await?),
        StoreUrl::Sqlite(path) => Box::new(SqliteStore::open(path).await?),
        StoreUrl::DataDir => Box::new(SqliteStore::open(&data_dir.join("catalog.db")).await?),
    })
}

/// SHA-256 of a plugin bundle, in hex, as [`SharedBundle::sha256`] holds it.
pub fn bundle_sha256(bundle: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bundle)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// The schema, shared by both backends (plain SQL both understand).
const MIGRATION_1: &str = "
CREATE TABLE IF NOT EXISTS plugin_state (
    name TEXT PRIMARY KEY,
    enabled BOOLEAN NOT NULL,
    updated_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plugin_version (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (name, version, manifest_sha256)
);
CREATE TABLE IF NOT EXISTS audit_log (
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    plugin TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at_ms);
";

/// Trusted publishers kept with the catalog, so daemons sharing it trust the same keys.
const MIGRATION_2: &str = "
CREATE TABLE IF NOT EXISTS trusted_publisher (
    name TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    added_ms BIGINT NOT NULL,
    added_by TEXT NOT NULL
);
";

/// Plugin bundles shared by the daemons of one catalog; `bytes` is the backend's binary type.
fn bundle_table(bytes: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS plugin_bundle (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    bundle {bytes} NOT NULL,
    removed BOOLEAN NOT NULL,
    updated_ms BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
"
    )
}

/// The HTTP endpoints each plugin's manifest declares, recorded when a daemon catalogs it.
const MIGRATION_5: &str = "
CREATE TABLE IF NOT EXISTS plugin_endpoints (
    plugin TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (plugin, method, path)
);
";

/// PostgreSQL only: a change to `plugin_state` or `plugin_endpoints` made by anything but a
/// daemon (whose connections set `plugsconc.writer`, and which announce their own changes with a
/// richer notice) is announced on the schema's catalog channel as
/// `{"table", "op", "plugin"}`. A row renamed by an UPDATE announces both names.
const PG_TRIGGERS: &str = r#"
CREATE OR REPLACE FUNCTION notify_plugin_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    channel TEXT := TG_TABLE_SCHEMA || '_catalog';
    old_name TEXT;
    new_name TEXT;
BEGIN
    IF COALESCE(current_setting('plugsconc.writer', TRUE), '') <> '' THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_name := to_jsonb(OLD) ->> TG_ARGV[0];
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_name := to_jsonb(NEW) ->> TG_ARGV[0];
        PERFORM pg_notify(channel, json_build_object(
            'table', TG_TABLE_NAME, 'op', TG_OP, 'plugin', new_name)::text);
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_name IS DISTINCT FROM new_name) THEN
        PERFORM pg_notify(channel, json_build_object(
            'table', TG_TABLE_NAME, 'op', TG_OP, 'plugin', old_name)::text);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER plugin_state_notify AFTER INSERT OR UPDATE OR DELETE ON plugin_state
    FOR EACH ROW EXECUTE FUNCTION notify_plugin_change('name');
CREATE TRIGGER plugin_endpoints_notify AFTER INSERT OR UPDATE OR DELETE ON plugin_endpoints
    FOR EACH ROW EXECUTE FUNCTION notify_plugin_change('plugin');
"#;

/// The migrations of a backend, whose DDL differs in the `job` id column and the bundle's
/// binary type; PostgreSQL adds its triggers (`triggers`). Their text must not change once
/// released: the migrator compares checksums.
fn migrator(job_id_column: &str, bundle_bytes: &str, triggers: bool) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr as _;
    let migration = |version, description: &'static str, sql: String| {
        sqlx::migrate::Migration::new(
            version,
            description.into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::AssertSqlSafe(sql).into_sql_str(),
            false,
        )
    };
    let mut migrations = vec![
        migration(1, "catalog", MIGRATION_1.to_owned()),
        migration(2, "trusted publishers", MIGRATION_2.to_owned()),
        migration(3, "jobs", jobs::job_table(job_id_column)),
        migration(4, "shared plugin bundles", bundle_table(bundle_bytes)),
        migration(5, "plugin endpoints", MIGRATION_5.to_owned()),
    ];
    if triggers {
        migrations.push(migration(6, "change triggers", PG_TRIGGERS.to_owned()));
    }
    sqlx::migrate::Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests;
