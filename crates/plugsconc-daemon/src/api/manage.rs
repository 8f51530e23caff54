//! State changes: enable, disable, reload one plugin or the whole folder, and the audit log.
//! Enable and disable are recorded in the store (which survives restarts and, with PostgreSQL,
//! reaches every daemon sharing it) and in the plugin's `.disabled` marker (what
//! `plugsconc plugins enable|disable` reads without a daemon). `POST` records every request;
//! `PUT` (the older plugin manager's verb) is idempotent: a plugin already in the asked state
//! is answered as it is, with nothing recorded or announced.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plugsconc_host::registry::Status;
use plugsconc_host::{DISABLED_MARKER, HostError};
use serde::Deserialize;

use super::extract::Params;
use super::types::{AuditEntry, AuditLog, Change, ChangeList, ChangedPlugin, ErrorBody, Plugin};
use super::{ApiError, ApiState};

pub(super) fn host_error(err: HostError) -> ApiError {
    match err {
        HostError::UnknownPlugin { plugin, .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            "plugin_not_found",
            format!("no plugin named {plugin:?}"),
        ),
        HostError::NotAvailable { .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_available", err.to_string())
        }
        other => {
            tracing::warn!(error = %other, "API request failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the daemon could not do it; see its log",
            )
        }
    }
}

fn current(state: &ApiState, name: &str) -> Result<Json<Plugin>, ApiError> {
    state
        .registry
        .get(name)
        .map(|info| Json(Plugin::from(&info)))
        .ok_or_else(|| {
            host_error(HostError::UnknownPlugin {
                plugin: name.to_owned(),
                known: String::new(),
            })
        })
}

async fn marker(state: &ApiState, name: &str, disabled: bool) -> Result<(), ApiError> {
    let Some(dir) = state.registry.get(name).and_then(|info| info.dir) else {
        return Ok(());
    };
    let path = dir.join(DISABLED_MARKER);
    let result = tokio::task::spawn_blocking(move || {
        if disabled {
            std::fs::write(&path, b"disabled through the API\n")
        } else {
            match std::fs::remove_file(&path) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        }
    })
    .await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            tracing::warn!(plugin = name, error = %err, "cannot update the .disabled marker");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the plugin's folder cannot be written; see the daemon's log",
            ))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "interrupted",
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/enable", tag = "manage", params(("name" = String, Path, description = "The plugin's name")), security(("bearer" = [])),
    responses((status = 200, description = "Enable the plugin (recorded in the store, announced to daemons sharing it)", body = Plugin), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 404, description = "No such plugin", body = ErrorBody)))]
pub async fn enable(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Plugin>, ApiError> {
    set(&state, &name, true, Repeat::Record).await
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/disable", tag = "manage", params(("name" = String, Path, description = "The plugin's name")), security(("bearer" = [])),
    responses((status = 200, description = "Disable the plugin: its process is drained and stopped", body = Plugin), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 404, description = "No such plugin", body = ErrorBody)))]
pub async fn disable(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Plugin>, ApiError> {
    set(&state, &name, false, Repeat::Record).await
}

#[utoipa::path(put, path = "/api/v1/plugins/{name}/enable", tag = "manage", params(("name" = String, Path, description = "The plugin's name")), security(("bearer" = [])),
    responses((status = 200, description = "The plugin, enabled: as POST, except that a plugin not disabled or failed is answered as it is, with nothing recorded", body = Plugin), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 404, description = "No such plugin", body = ErrorBody)))]
pub async fn put_enable(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Plugin>, ApiError> {
    set(&state, &name, true, Repeat::Skip).await
}

#[utoipa::path(put, path = "/api/v1/plugins/{name}/disable", tag = "manage", params(("name" = String, Path, description = "The plugin's name")), security(("bearer" = [])),
    responses((status = 200, description = "The plugin, disabled: as POST, except that a disabled plugin is answered as it is, with nothing recorded", body = Plugin), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 404, description = "No such plugin", body = ErrorBody)))]
pub async fn put_disable(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Plugin>, ApiError> {
    set(&state, &name, false, Repeat::Skip).await
}

/// What a request for the state a plugin is already in does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Records (and announces) it again, as `POST` always has.
    Record,
    /// Nothing: `PUT`.
    Skip,
}

async fn set(
    state: &ApiState,
    name: &str,
    enabled: bool,
    repeat: Repeat,
) -> Result<Json<Plugin>, ApiError> {
    let _known = current(state, name)?;
    // Held from the store write to the status here: a change another daemon announces
    // meanwhile is applied after, read from the store then.
    let _guard = state.states.lock(name).await;
    if repeat == Repeat::Skip {
        // Read under the lock, so two concurrent PUTs record one change, not two.
        let status = state.registry.get(name).map(|info| info.status);
        // Enabling acts on a disabled or failed plugin (a failed one is retried), as the
        // registry's enable does; an invalid one gets POST's refusal.
        let settled = match status {
            Some(Status::Disabled) => !enabled,
            Some(Status::Failed | Status::Invalid) | None => false,
            Some(_) => enabled,
        };
        if settled {
            return current(state, name);
        }
    }
    record(state, name, enabled).await?;
    marker(state, name, !enabled).await?;
    if enabled {
        state.registry.enable(name).map_err(host_error)?;
    } else {
        state.registry.disable(name).await.map_err(host_error)?;
    }
    current(state, name)
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/reload", tag = "manage", params(("name" = String, Path, description = "The plugin's name")), security(("bearer" = [])),
    responses((status = 200, description = "What the rescan of the plugin's folder did (reloaded, rejected with the reason, unchanged...)", body = Change), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 404, description = "No such plugin", body = ErrorBody)))]
pub async fn reload(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Change>, ApiError> {
    let info = current(&state, &name)?;
    if state.registry.get(&name).is_some_and(|i| i.dir.is_none()) {
        // Built in: nothing on disk to reload.
        return Ok(Json(Change {
            change: super::types::ChangeKind::Unchanged,
            plugin: Some(ChangedPlugin::Entry(Box::new(info.0))),
            reason: None,
        }));
    }
    let change = state.registry.reload(&name).await.map_err(host_error)?;
    if state.store.shared()
        && let Err(err) = state.store.share_reload(&name, &state.origin).await
    {
        tracing::warn!(plugin = %name, error = %err, "reloaded here, but the other daemons were not told");
    }
    Ok(Json(Change::from(&change)))
}

#[utoipa::path(post, path = "/api/v1/reload", tag = "manage", security(("bearer" = [])),
    responses((status = 200, description = "Every change a rescan of the plugins folder made", body = ChangeList), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub async fn reload_all(State(state): State<ApiState>) -> Result<Json<ChangeList>, ApiError> {
    let changes = state.registry.sync_all().await.map_err(host_error)?;
    Ok(Json(ChangeList {
        changes: changes.iter().map(Change::from).collect(),
    }))
}

async fn record(state: &ApiState, name: &str, enabled: bool) -> Result<(), ApiError> {
    let actor = format!("api@{}", state.origin);
    state
        .store
        .set_enabled(name, enabled, &actor, &state.origin)
        .await
        .map_err(|err| {
            tracing::warn!(plugin = name, error = %err, "cannot record the change in the store");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the catalog store cannot record the change; nothing was changed",
            )
        })
}

#[derive(Debug, Deserialize)]
pub struct AuditParams {
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "manage", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, description = "Entries, newest first (default 100)")),
    responses((status = 200, description = "Who changed what, when", body = AuditLog), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub async fn audit(
    State(state): State<ApiState>,
    Params(params): Params<AuditParams>,
) -> Result<Json<AuditLog>, ApiError> {
    let limit = params.limit.unwrap_or(100).clamp(1, 10_000);
    let entries = state.store.audit(limit).await.map_err(|err| {
        tracing::warn!(error = %err, "cannot read the audit log");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the catalog store cannot be read",
        )
    })?;
    Ok(Json(AuditLog {
        entries: entries.into_iter().map(AuditEntry::from).collect(),
    }))
}
