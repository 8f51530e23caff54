//! `POST /api/v1/plugins/{name}/call/{service}/{method}`: any unary method of a process plugin
//! with a JSON body, called through [`crate::calls`], and the HTTP status of each [`CallError`].

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::types::{CallReply, ErrorBody};
use super::{ApiError, ApiState};
use crate::calls::{CallError, Caller, invoke};

impl ApiState {
    /// The parts of the state a plugin call uses.
    pub fn caller(&self) -> Caller {
        Caller {
            registry: self.registry.clone(),
            descriptors: self.descriptors.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The one place a failed call becomes an HTTP status; the code and message are the error's.
impl From<CallError> for ApiError {
    fn from(err: CallError) -> Self {
        let status = match &err {
            CallError::PluginNotFound { .. } | CallError::MethodNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            CallError::Builtin { .. }
            | CallError::NotAvailable { .. }
            | CallError::BadDescriptors(_)
            | CallError::NoDescriptors { .. } => StatusCode::CONFLICT,
            CallError::BadRequest(_) | CallError::Streaming(_) => StatusCode::BAD_REQUEST,
            CallError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            CallError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            CallError::PluginStatus { .. } => StatusCode::BAD_GATEWAY,
            CallError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, err.code(), err.to_string())
    }
}

/// Calls the method and answers `{"response": ...}`.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/call/{service}/{method}", tag = "call", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin's name"), ("service" = String, Path, description = "package.Service"), ("method" = String, Path, description = "Method")),
    request_body(description = "The request message in proto3 JSON (free-form: the method's input); an empty body is `{}`", content_type = "application/json", content = Value),
    responses((status = 200, description = "The reply in proto3 JSON, under `response`", body = CallReply), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 404, description = "No such plugin", body = ErrorBody),
              (status = 502, description = "The plugin answered with a gRPC error", body = ErrorBody), (status = 504, description = "The call ran past the plugin's execution limit and was cancelled", body = ErrorBody)))]
pub async fn call(
    State(state): State<ApiState>,
    Path((name, service, method)): Path<(String, String, String)>,
    body: String,
) -> Result<Json<CallReply>, ApiError> {
    let (full_name, response) = invoke(
        &state.caller(),
        &name,
        &format!("{service}/{method}"),
        &body,
    )
    .await?;
    Ok(Json(CallReply {
        plugin: name,
        method: full_name,
        response,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_error_has_its_status_and_code() {
        let table: Vec<(u16, &str)> = CallError::one_of_each()
            .into_iter()
            .map(|err| {
                let message = err.to_string();
                let api = ApiError::from(err);
                assert_eq!(api.message, message, "the message is the error's own");
                (api.status.as_u16(), api.code)
            })
            .collect();
        assert_eq!(
            table,
            [
                (404, "plugin_not_found"),
                (409, "builtin_plugin"),
                (409, "not_available"),
                (503, "plugin_unavailable"),
                (504, "plugin_timeout"),
                (502, "plugin_error"),
                (404, "method_not_found"),
                (400, "bad_request"),
                (400, "streaming_method"),
                (409, "bad_descriptors"),
                (409, "no_descriptors"),
                (500, "internal"),
            ]
        );
    }
}
