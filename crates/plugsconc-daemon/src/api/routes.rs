//! Plugins' own HTTP endpoints: a manifest declares `http` routes (method, path, and
//! the unary gRPC method serving it), and the daemon serves them under `/plugins/<name>/...`.
//! The routes are read from the catalog on each request, so they follow the plugin: gone when
//! it is disabled or removed, swapped when a new version is reloaded. The request becomes the
//! method's JSON input — the body for POST, PUT and PATCH, the query parameters otherwise — and
//! the reply's JSON is the response.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use plugsconc_host::registry::Status;
use serde_json::{Map, Value};

use super::extract::Params;
use super::types::ErrorBody;
use super::{ApiError, ApiState};
use crate::calls::invoke;

/// Query parameters as a JSON object: values that parse as JSON (numbers, booleans) keep their
/// type, the rest are strings.
fn query_json(params: &std::collections::BTreeMap<String, String>) -> String {
    let object: Map<String, Value> = params
        .iter()
        .map(|(k, v)| {
            let value = serde_json::from_str::<Value>(v)
                .ok()
                .filter(|v| v.is_number() || v.is_boolean())
                .unwrap_or_else(|| Value::String(v.clone()));
            (k.clone(), value)
        })
        .collect();
    Value::Object(object).to_string()
}

/// A route a plugin's manifest declares; the methods are those a manifest may declare.
#[utoipa::path(method(get, post, put, patch, delete), path = "/plugins/{name}/{rest}", tag = "plugin routes",
    params(("name" = String, Path, description = "The plugin's name"), ("rest" = String, Path, description = "The route's path, as its manifest declares it")),
    request_body(description = "POST, PUT and PATCH: the method's input in proto3 JSON (free-form); other methods take it from the query string", content_type = "application/json", content = Value),
    responses((status = 200, description = "The reply of the gRPC method serving the route, in proto3 JSON (free-form)", body = Value),
              (status = 401, description = "A method other than GET and HEAD without the bearer token", body = ErrorBody),
              (status = 404, description = "The plugin serves no such route (or is disabled, or invalid)", body = ErrorBody)))]
pub async fn serve(
    State(state): State<ApiState>,
    method: Method,
    headers: axum::http::HeaderMap,
    Path((name, rest)): Path<(String, String)>,
    Params(params): Params<std::collections::BTreeMap<String, String>>,
    body: String,
) -> Result<Json<Value>, ApiError> {
    // A route that may change the plugin's state needs the token, as the API's own do.
    if !matches!(method, Method::GET | Method::HEAD) {
        super::auth::check(&headers, &state.token)?;
    }
    let path = format!("/{rest}");
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            format!("plugin {name:?} serves no {method} {path}"),
        )
    };
    let info = state.registry.get(&name).ok_or_else(not_found)?;
    if matches!(info.status, Status::Disabled | Status::Invalid) {
        return Err(not_found());
    }
    let route = info
        .http
        .iter()
        .find(|r| r.path == path && r.method == method.as_str())
        .ok_or_else(not_found)?;
    let input = if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        body
    } else {
        query_json(&params)
    };
    let (_, response) = invoke(&state.caller(), &name, &route.grpc, &input).await?;
    Ok(Json(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_keep_numbers_and_booleans() {
        let params = [("isLoud", "true"), ("n", "3"), ("key", "a b")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let json: Value = serde_json::from_str(&query_json(&params)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"isLoud": true, "n": 3, "key": "a b"})
        );
    }
}
