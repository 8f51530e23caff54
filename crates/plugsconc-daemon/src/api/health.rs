//! The daemon's own state, readable without a token: health, readiness, counters, and the
//! Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use plugsconc_host::Query;

use super::ApiState;
use super::types::{Health, Ready, Stats};

#[utoipa::path(get, path = "/api/v1/health", tag = "daemon",
    responses((status = 200, description = "The daemon is up", body = Health)))]
pub async fn health(State(state): State<ApiState>) -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
    })
}

#[utoipa::path(get, path = "/api/v1/ready", tag = "daemon",
    responses((status = 200, description = "The catalog is loaded", body = Ready)))]
pub async fn ready(State(state): State<ApiState>) -> Json<Ready> {
    // Ready once the catalog is loaded, which happens before the listener opens.
    Json(Ready {
        ready: true,
        plugins: state.registry.list(&Query::default()).len(),
    })
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "daemon",
    responses((status = 200, description = "Counts by status, calls, errors, restarts, reloads, uptime", body = Stats)))]
pub async fn stats(State(state): State<ApiState>) -> Json<Stats> {
    let plugins = state.registry.list(&Query::default());
    let mut by_status = std::collections::BTreeMap::new();
    for info in &plugins {
        *by_status
            .entry(info.status.as_str().to_owned())
            .or_insert(0) += 1;
    }
    let (calls, errors) = state.metrics.totals();
    Json(Stats {
        plugins: plugins.len(),
        by_status,
        calls,
        errors,
        restarts: plugins.iter().map(|p| u64::from(p.restarts)).sum(),
        reloads: plugins.iter().map(|p| u64::from(p.reloads)).sum(),
        uptime_seconds: state.started.elapsed().as_secs(),
        store: state.store.kind().to_owned(),
    })
}

#[utoipa::path(get, path = "/metrics", tag = "daemon",
    responses((status = 200, description = "Prometheus (OpenMetrics) text", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
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
