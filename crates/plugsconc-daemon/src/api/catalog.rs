//! The catalog, readable without a token: `GET /api/v1/plugins` (filtered) and
//! `GET /api/v1/plugins/{name}`, and the same two unversioned (`/plugins`, `/plugins/{name}`),
//! which older clients use, and `GET /api/v1/plugins/search`, the list whose `q` is required.
//! Each plugin's `endpoints` are read from the catalog store, so rows changed there by hand show
//! at once.

use axum::Json;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use plugsconc_host::Query;
use plugsconc_host::registry::Status;
use serde::Deserialize;

use super::types::{Endpoint, ErrorBody, Plugin, PluginList};
use super::{ApiError, ApiState};

/// Filters of the plugin list.
#[derive(Debug, Deserialize)]
pub struct ListParams {
    #[serde(rename = "type")]
    kind: Option<String>,
    tag: Option<String>,
    status: Option<String>,
    q: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "catalog",
    params(("type" = Option<String>, Query, description = "Contract type"),
           ("tag" = Option<String>, Query, description = "Tag"),
           ("status" = Option<String>, Query, description = "discovered, invalid, disabled, starting, ready, degraded, stopped or failed"),
           ("q" = Option<String>, Query, description = "Text in the name or description")),
    responses((status = 200, description = "The matching plugins and their count", body = PluginList),
              (status = 400, description = "A filter is not valid", body = ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<PluginList>, ApiError> {
    let status = params
        .status
        .map(|s| s.parse::<Status>())
        .transpose()
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "bad_filter", err))?;
    let mut plugins: Vec<Plugin> = state
        .registry
        .list(&Query {
            kind: params.kind,
            tag: params.tag,
            status,
            version: None,
            text: params.q,
        })
        .iter()
        .map(Plugin::from)
        .collect();
    with_endpoints(&state, &mut plugins).await;
    Ok(Json(PluginList {
        count: plugins.len(),
        plugins,
    }))
}

#[utoipa::path(get, path = "/api/v1/plugins/search", tag = "catalog",
    params(("q" = String, Query, description = "Text in the name or description (required; the list without one is `GET /api/v1/plugins`)"),
           ("type" = Option<String>, Query, description = "Contract type"),
           ("tag" = Option<String>, Query, description = "Tag"),
           ("status" = Option<String>, Query, description = "discovered, invalid, disabled, starting, ready, degraded, stopped or failed")),
    responses((status = 200, description = "The matching plugins and their count", body = PluginList),
              (status = 400, description = "No `q`, or a filter is not valid", body = ErrorBody)))]
pub async fn search(
    state: State<ApiState>,
    params: QueryParams<ListParams>,
) -> Result<Json<PluginList>, ApiError> {
    // A search without text is a mistake rather than "everything": the older API's clients
    // reach the whole list at `/plugins`.
    if params.q.as_deref().is_none_or(|q| q.trim().is_empty()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "query_required",
            "q: expected the text to search for (GET /api/v1/plugins lists every plugin)",
        ));
    }
    list(state, params).await
}

#[utoipa::path(get, path = "/plugins", tag = "catalog",
    params(("type" = Option<String>, Query, description = "Contract type"),
           ("tag" = Option<String>, Query, description = "Tag"),
           ("status" = Option<String>, Query, description = "discovered, invalid, disabled, starting, ready, degraded, stopped or failed"),
           ("q" = Option<String>, Query, description = "Text in the name or description")),
    responses((status = 200, description = "As `GET /api/v1/plugins`", body = PluginList),
              (status = 400, description = "A filter is not valid", body = ErrorBody)))]
pub async fn list_unversioned(
    state: State<ApiState>,
    params: QueryParams<ListParams>,
) -> Result<Json<PluginList>, ApiError> {
    list(state, params).await
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}", tag = "catalog", params(("name" = String, Path, description = "The plugin's name")),
    responses((status = 200, description = "The plugin, its status and the reason for it", body = Plugin), (status = 404, description = "No such plugin", body = ErrorBody)))]
pub async fn show(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Plugin>, ApiError> {
    let mut plugin = state
        .registry
        .get(&name)
        .map(|info| Plugin::from(&info))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "plugin_not_found",
                format!("no plugin named {name:?}"),
            )
        })?;
    with_endpoints(&state, std::slice::from_mut(&mut plugin)).await;
    Ok(Json(plugin))
}

/// Fills each plugin's `endpoints` from the store. A store that cannot be read leaves them
/// empty, with a warning: the catalog still answers.
async fn with_endpoints(state: &ApiState, plugins: &mut [Plugin]) {
    let endpoints = match state.store.endpoints().await {
        Ok(endpoints) => endpoints,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the plugins' endpoints; listing them without");
            return;
        }
    };
    for plugin in plugins {
        plugin.endpoints = endpoints
            .iter()
            .filter(|e| e.plugin == plugin.name)
            .map(|e| Endpoint {
                method: e.method.clone(),
                path: e.path.clone(),
            })
            .collect();
    }
}

#[utoipa::path(get, path = "/plugins/{name}", tag = "catalog", params(("name" = String, Path, description = "The plugin's name")),
    responses((status = 200, description = "As `GET /api/v1/plugins/{name}`", body = Plugin), (status = 404, description = "No such plugin", body = ErrorBody)))]
pub async fn show_unversioned(
    state: State<ApiState>,
    name: Path<String>,
) -> Result<Json<Plugin>, ApiError> {
    show(state, name).await
}
