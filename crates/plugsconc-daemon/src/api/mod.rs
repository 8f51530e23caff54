//! The REST API under `/api/v1` (and the unversioned `GET /plugins`, `GET /plugins/{name}`): the
//! catalog, the daemon's health and readiness, and — behind the bearer token — enable, disable
//! (recorded in the store, announced to daemons sharing it), reload, the audit log, and a
//! generic JSON call of any unary plugin method. Errors are JSON with a stable code and a
//! message about the client's own mistake, nothing internal — axum's own rejections and
//! unknown routes and methods included.

mod auth;
pub mod call;
mod docs;
mod extract;
mod install;
mod jobs;
pub mod logs;
mod manage;
mod publishers;
mod rejection;
mod routes;
pub mod server;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use plugsconc_host::registry::Status;
use plugsconc_host::{PluginInfo, Query, Registry};
use serde::Deserialize;
use serde_json::{Value, json};

pub use auth::load_or_create as load_token;
pub use install::InstallGate;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The catalog.
    pub registry: Registry,
    /// When the daemon started, for uptime.
    pub started: Instant,
    /// The bearer token that state changes require.
    pub token: Arc<str>,
    /// Compiled descriptors of the plugins called through the API.
    pub descriptors: Arc<crate::calls::DescriptorCache>,
    /// The persistent catalog state.
    pub store: Arc<dyn crate::store::Store>,
    /// This daemon's id in the shared catalog (audit actors, notifications).
    pub origin: Arc<str>,
    /// Calls, latencies, plugin states.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where installs go.
    pub plugins_dir: std::path::PathBuf,
    /// The signature policy of the configuration; publishers kept in the store are added to it.
    pub base_trust: plugsconc_host::signature::Trust,
    /// Whether installs need a matching `.sha256` sidecar.
    pub require_checksum: bool,
    /// Which shared bundle each plugin here came from (daemons sharing a catalog).
    pub applied: crate::sharing::Applied,
    /// Serialises each plugin's state changes with those other daemons announce.
    pub states: crate::states::States,
    /// The persistent log queue's records, when the daemon keeps them.
    pub logs: Option<Arc<logs::LogSource>>,
    /// The job pool.
    pub jobs: crate::jobs::Pool,
    /// The caps of installs and the turns they take.
    pub installs: Arc<InstallGate>,
}

/// Every route.
pub fn router(state: ApiState) -> Router {
    let plugins = Router::new()
        .route("/plugins", get(list))
        .route("/plugins/{name}", get(show));
    let changes = Router::new()
        .route("/plugins/{name}/enable", post(manage::enable))
        .route("/plugins/{name}/disable", post(manage::disable))
        .route("/plugins/{name}/reload", post(manage::reload))
        .route("/reload", post(manage::reload_all))
        .route("/audit", get(manage::audit))
        .route("/logs", get(logs::logs))
        .route("/jobs", get(jobs::list).post(jobs::submit))
        .route("/jobs/stats", get(jobs::stats))
        .route("/jobs/{id}", get(jobs::get))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/publishers", get(publishers::list).post(publishers::add))
        .route("/publishers/{name}/remove", post(publishers::remove))
        .route("/plugins/install", post(install::install))
        .route("/plugins/{name}/uninstall", post(install::uninstall))
        .route("/plugins/{name}/call/{service}/{method}", post(call::call))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .nest(
            "/api/v1",
            plugins
                .clone()
                .merge(changes)
                .route("/health", get(health))
                .route("/ready", get(ready))
                .route("/stats", get(stats)),
        )
        .merge(plugins)
        .route("/plugins/{name}/{*rest}", axum::routing::any(routes::serve))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
        .merge(docs::routes())
        .layer(middleware::from_fn(rejection::json_errors))
}

/// A JSON error with a stable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

/// Filters of the plugin list.
#[derive(Debug, Deserialize)]
struct ListParams {
    #[serde(rename = "type")]
    kind: Option<String>,
    tag: Option<String>,
    status: Option<String>,
    q: Option<String>,
}

pub(crate) fn plugin_json(info: &PluginInfo) -> Value {
    json!({
        "name": info.name,
        "type": info.kind,
        "version": info.version.as_ref().map(ToString::to_string),
        "runtime": info.runtime.as_str(),
        "status": info.status.as_str(),
        "reason": info.reason,
        "description": info.description,
        "tags": info.tags,
        "pid": info.pid,
        "restarts": info.restarts,
        "reloads": info.reloads,
        "manifest_sha256": info.manifest_sha256,
        "sandbox": info.sandbox,
        "usage": info.usage,
    })
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "catalog",
    params(("type" = Option<String>, Query, description = "Contract type"),
           ("tag" = Option<String>, Query, description = "Tag"),
           ("status" = Option<String>, Query, description = "discovered, invalid, disabled, starting, ready, degraded, stopped or failed"),
           ("q" = Option<String>, Query, description = "Text in the name or description")),
    responses((status = 200, description = "The matching plugins and their count", body = Value),
              (status = 400, description = "A filter is not valid", body = Value)))]
async fn list(
    State(state): State<ApiState>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let status = params
        .status
        .map(|s| s.parse::<Status>())
        .transpose()
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "bad_filter", err))?;
    let plugins = state.registry.list(&Query {
        kind: params.kind,
        tag: params.tag,
        status,
        version: None,
        text: params.q,
    });
    Ok(Json(json!({
        "plugins": plugins.iter().map(plugin_json).collect::<Vec<_>>(),
        "count": plugins.len(),
    })))
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}", tag = "catalog", params(("name" = String, Path, description = "The plugin's name")),
    responses((status = 200, description = "The plugin, its status and the reason for it", body = Value), (status = 404, description = "No such plugin", body = Value)))]
async fn show(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .registry
        .get(&name)
        .map(|info| Json(plugin_json(&info)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "plugin_not_found",
                format!("no plugin named {name:?}"),
            )
        })
}

#[utoipa::path(get, path = "/api/v1/health", tag = "daemon",
    responses((status = 200, description = "The daemon is up", body = Value)))]
async fn health(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
}

#[utoipa::path(get, path = "/api/v1/ready", tag = "daemon",
    responses((status = 200, description = "The catalog is loaded", body = Value)))]
async fn ready(State(state): State<ApiState>) -> impl IntoResponse {
    // Ready once the catalog is loaded, which happens before the listener opens.
    let plugins = state.registry.list(&Query::default()).len();
    (
        StatusCode::OK,
        Json(json!({"ready": true, "plugins": plugins})),
    )
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "daemon",
    responses((status = 200, description = "Counts by status, calls, errors, restarts, reloads, uptime", body = Value)))]
async fn stats(State(state): State<ApiState>) -> Json<Value> {
    let plugins = state.registry.list(&Query::default());
    let mut by_status = serde_json::Map::new();
    for info in &plugins {
        let count = by_status
            .entry(info.status.as_str())
            .or_insert_with(|| json!(0));
        *count = json!(count.as_u64().unwrap_or(0) + 1);
    }
    let (calls, errors) = state.metrics.totals();
    Json(json!({
        "plugins": plugins.len(),
        "by_status": by_status,
        "calls": calls,
        "errors": errors,
        "restarts": plugins.iter().map(|p| u64::from(p.restarts)).sum::<u64>(),
        "reloads": plugins.iter().map(|p| u64::from(p.reloads)).sum::<u64>(),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "store": state.store.kind(),
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "daemon",
    responses((status = 200, description = "Prometheus (OpenMetrics) text", content_type = "application/openmetrics-text")))]
async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state
            .metrics
            .render(&state.registry, &state.jobs.stats().await.gauges()),
    )
}
