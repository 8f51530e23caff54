//! Error responses the API's handlers did not build themselves — axum's extractor rejections
//! (a body over the limit, a body that is not UTF-8, a bad path), a method a route does not
//! serve — rewritten as the API's JSON errors, so a client parses every error the same way.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The longest rejection text kept as the message; axum's are one line.
const MESSAGE_MAX: usize = 4096;

/// The stable code of an error status the handlers do not choose themselves.
pub(super) fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        status if status.is_server_error() => "internal",
        _ => "error",
    }
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

/// Turns every error response that is not JSON yet into `{"error": {"code", "message"}}`.
pub(super) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MESSAGE_MAX)
        .await
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned());
    // A client error's text is about the request; a server error's may be internal, so it
    // only gets the status's name.
    let message = text
        .filter(|text| !text.is_empty() && status.is_client_error())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let mut rewritten = ApiError::new(status, code(status), message).into_response();
    // What tells the client how to retry (Allow on a 405, Retry-After) stays.
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.remove(&name) {
            rewritten.headers_mut().insert(name, value);
        }
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The unread rest of the body would be taken as the next request.
        rewritten
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use serde_json::Value;
    use tower::ServiceExt as _;

    use super::*;

    fn router() -> Router {
        Router::new()
            .route("/text", post(|body: String| async move { body }))
            .route(
                "/json",
                post(|_: axum::Json<Value>| async { "fine" }).get(|| async {
                    ApiError::new(StatusCode::CONFLICT, "own_code", "handler's own")
                }),
            )
            .layer(DefaultBodyLimit::max(16))
            .layer(axum::middleware::from_fn(json_errors))
    }

    async fn send(method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value, Response) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        let response = router().oneshot(request).await.unwrap();
        let status = response.status();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
        (status, value, Response::from_parts(parts, Body::empty()))
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_json_413() {
        let (status, body, response) = send("POST", "/text", vec![b'a'; 64]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("limit"));
        assert_eq!(response.headers()[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn a_body_that_is_not_utf8_is_a_json_400() {
        let (status, body, _) = send("POST", "/text", vec![0xff, 0xfe]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
    }

    #[tokio::test]
    async fn malformed_json_is_a_json_error() {
        let (status, body, _) = send("POST", "/json", "{nope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
    }

    #[tokio::test]
    async fn unknown_routes_and_wrong_methods_are_json() {
        let (status, body, _) = send("GET", "/nowhere", Body::empty()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (status, body, response) = send("DELETE", "/text", Body::empty()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
        );
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }

    #[tokio::test]
    async fn the_handlers_own_errors_are_left_alone() {
        let (status, body, _) = send("GET", "/json", Body::empty()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "own_code");
    }
}
