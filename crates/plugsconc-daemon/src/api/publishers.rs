//! Trusted publishers: the configuration's (`security.trusted_publishers`, read-only here) and
//! those kept in the store, which the API adds and removes. A change applies to every launch from
//! then on and, with PostgreSQL, reaches every daemon sharing the catalog.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plugsconc_host::signature::Publisher;

use super::extract::JsonBody;
use super::types::{
    AddPublisher, ErrorBody, PublisherAdded, PublisherEntry, PublisherList, PublisherRemoved,
    PublisherSource,
};
use super::{ApiError, ApiState};

fn store_error(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, "publisher store operation failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the catalog store cannot be used; nothing was changed",
    )
}

#[utoipa::path(get, path = "/api/v1/publishers", tag = "trust", security(("bearer" = [])),
    responses((status = 200, description = "Trusted publishers, with their key ids and where they come from", body = PublisherList),
              (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub async fn list(State(state): State<ApiState>) -> Json<PublisherList> {
    let configured: Vec<&str> = state
        .base_trust
        .publishers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let trust = state.registry.trust();
    let publishers = trust
        .publishers
        .iter()
        .map(|p| {
            let source = if configured.contains(&p.name.as_str()) && !stored_override(&state, p) {
                PublisherSource::Config
            } else {
                PublisherSource::Store
            };
            PublisherEntry {
                name: p.name.clone(),
                key_id: p.key_id.clone(),
                source,
            }
        })
        .collect();
    Json(PublisherList { publishers })
}

/// A stored key replaced a configured one of the same name.
fn stored_override(state: &ApiState, publisher: &Publisher) -> bool {
    state
        .base_trust
        .publishers
        .iter()
        .any(|p| p.name == publisher.name && p.key_id != publisher.key_id)
}

#[utoipa::path(post, path = "/api/v1/publishers", tag = "trust", security(("bearer" = [])),
    request_body(description = "The publisher's name and minisign public key", content_type = "application/json", content = AddPublisher),
    responses((status = 200, description = "Trusted from now on", body = PublisherAdded),
              (status = 400, description = "Not a minisign public key, or not a plain name", body = ErrorBody),
              (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub async fn add(
    State(state): State<ApiState>,
    JsonBody(request): JsonBody<AddPublisher>,
) -> Result<Json<PublisherAdded>, ApiError> {
    let plain = !request.name.is_empty()
        && request
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "name: expected letters, digits, - and _",
        ));
    }
    let publisher = Publisher::parse(&request.name, &request.key)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "bad_key", format!("key: {err}")))?;
    crate::trust::set(
        &state.registry,
        state.store.as_ref(),
        &state.base_trust,
        (&request.name, Some(&request.key)),
        &format!("api@{}", state.origin),
        &state.origin,
    )
    .await
    .map_err(store_error)?;
    Ok(Json(PublisherAdded {
        name: publisher.name,
        key_id: publisher.key_id,
    }))
}

#[utoipa::path(post, path = "/api/v1/publishers/{name}/remove", tag = "trust", security(("bearer" = [])),
    params(("name" = String, Path, description = "The publisher")),
    responses((status = 200, description = "No longer trusted", body = PublisherRemoved),
              (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
              (status = 404, description = "No stored publisher of that name", body = ErrorBody),
              (status = 409, description = "Configured in config.yaml, not removable here", body = ErrorBody)))]
pub async fn remove(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<PublisherRemoved>, ApiError> {
    let stored = state.store.publishers().await.map_err(store_error)?;
    if !stored.iter().any(|(n, _)| *n == name) {
        return Err(
            if state.base_trust.publishers.iter().any(|p| p.name == name) {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "configured_publisher",
                    format!("{name:?} comes from security.trusted_publishers; remove it there"),
                )
            } else {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "publisher_not_found",
                    format!("no stored publisher named {name:?}"),
                )
            },
        );
    }
    crate::trust::set(
        &state.registry,
        state.store.as_ref(),
        &state.base_trust,
        (&name, None),
        &format!("api@{}", state.origin),
        &state.origin,
    )
    .await
    .map_err(store_error)?;
    Ok(Json(PublisherRemoved { removed: name }))
}
