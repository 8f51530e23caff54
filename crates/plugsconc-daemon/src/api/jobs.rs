//! `/api/v1/jobs`: submit, list, get and cancel jobs, and the pool's counters. Jobs run a plugin
//! method (`task: "call"`) or a built-in task with retries, timeouts and a deadline.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::Params;
use super::{ApiError, ApiState};
use crate::jobs::JobSpec;
use crate::jobs::JobState;
use crate::jobs::pool::SubmitError;
use crate::jobs::queue::CancelOutcome;

/// A job id from the path, with a JSON error like every other (not axum's plain-text rejection).
fn job_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{text:?} is not a job id (a whole number)"),
        )
    })
}

fn store_error(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, "job queue operation failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the job queue in the store cannot be used; try again",
    )
}

#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    request_body(description = "`{task, input, retry: {max_attempts, initial_ms, max_delay_ms, factor, jitter, retry_on}, timeout_ms, deadline_ms, on_crash: retry|fail}`; tasks: `call` (`input: {plugin, method, body}`), `noop`, `sleep` (`input: {ms}`)", content_type = "application/json", content = Value),
    responses((status = 202, description = "Queued: `{id}`", body = Value), (status = 400, description = "Not a job, or no such task", body = Value),
              (status = 401, description = "Missing or wrong bearer token", body = Value), (status = 429, description = "The queue is full", body = Value),
              (status = 503, description = "The pool is stopping", body = Value)))]
pub async fn submit(
    State(state): State<ApiState>,
    body: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec: JobSpec = serde_json::from_str(&body).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("not a job: {err}"),
        )
    })?;
    let id = state.jobs.submit(spec).await.map_err(|err| match err {
        SubmitError::UnknownTask(..) => {
            ApiError::new(StatusCode::BAD_REQUEST, "unknown_task", err.to_string())
        }
        SubmitError::Full(_) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", err.to_string())
        }
        SubmitError::Stopping => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", err.to_string())
        }
        SubmitError::Store(err) => store_error(err),
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id}))))
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    state: Option<String>,
    limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    params(("state" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled"),
           ("limit" = Option<u64>, Query, description = "The newest this many (default 1000)")),
    responses((status = 200, description = "The jobs, newest first", body = Value), (status = 400, description = "Unknown state", body = Value), (status = 401, description = "Missing or wrong bearer token", body = Value)))]
pub async fn list(
    State(state): State<ApiState>,
    Params(params): Params<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let wanted = match params.state.as_deref() {
        None => None,
        Some(name) => Some(JobState::parse(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("state={name:?}: expected queued, running, succeeded, failed or cancelled"),
            )
        })?),
    };
    let jobs = state
        .jobs
        .list(wanted, params.limit.unwrap_or(1_000))
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"count": jobs.len(), "jobs": jobs})))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The job's id")),
    responses((status = 200, description = "The job: state, attempts, timings, result or error", body = Value), (status = 401, description = "Missing or wrong bearer token", body = Value), (status = 404, description = "No such job", body = Value)))]
pub async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let job = state
        .jobs
        .get(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "job_not_found",
                format!("no job {id}"),
            )
        })?;
    Ok(Json(json!(job)))
}

#[derive(Debug, Default, Deserialize)]
pub struct CancelBody {
    cause: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The job's id")),
    request_body(description = "Optional `{cause}`", content_type = "application/json", content = Value),
    responses((status = 200, description = "Cancelling", body = Value), (status = 401, description = "Missing or wrong bearer token", body = Value),
              (status = 404, description = "No such job", body = Value), (status = 409, description = "The job has ended", body = Value)))]
pub async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let body: CancelBody = if body.trim().is_empty() {
        CancelBody::default()
    } else {
        serde_json::from_str(&body).map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"cause\": ...}}: {err}"),
            )
        })?
    };
    let cause = body
        .cause
        .unwrap_or_else(|| "cancelled through the API".to_owned());
    match state.jobs.cancel(id, &cause).await.map_err(store_error)? {
        CancelOutcome::Cancelled | CancelOutcome::Requested => {}
        CancelOutcome::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "job_not_found",
                format!("no job {id}"),
            ));
        }
        CancelOutcome::Ended(ended) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "job_ended",
                format!("job {id} has already ended ({})", ended.as_str()),
            ));
        }
    }
    Ok(Json(json!({"id": id, "cancelling": true, "cause": cause})))
}

#[utoipa::path(get, path = "/api/v1/jobs/stats", tag = "jobs", security(("bearer" = [])),
    responses((status = 200, description = "This daemon's name (the `worker` of the jobs it runs) and its pool: workers, submitted, rejected, succeeded, failed, cancelled, retries, in flight, queued (the whole queue), recovered, mean duration", body = Value), (status = 401, description = "Missing or wrong bearer token", body = Value)))]
pub async fn stats(State(state): State<ApiState>) -> Json<Value> {
    let stats = state.jobs.stats().await;
    let finished = stats.succeeded + stats.failed + stats.cancelled;
    let mean = (finished > 0).then(|| stats.total_duration_ms as f64 / finished as f64);
    Json(json!({"name": &*state.origin, "pool": stats, "mean_duration_ms": mean}))
}
