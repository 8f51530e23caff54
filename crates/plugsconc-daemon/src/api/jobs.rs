//! `/api/v1/jobs`: submit, list, get and cancel jobs, and the pool's counters. Jobs run a plugin
//! method (`task: "call"`) or a built-in task with retries, timeouts and a deadline.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::extract::Params;
use super::types::{
    CancelRequest, Cancelling, ErrorBody, Job, JobList, JobStats, JobSubmission, Submitted,
};
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
    request_body(description = "A job; tasks: `call` (`input: {plugin, method, body}`), `noop`, `sleep` (`input: {ms}`)", content_type = "application/json", content = JobSubmission),
    responses((status = 202, description = "Queued", body = Submitted), (status = 400, description = "Not a job, or no such task", body = ErrorBody),
              (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 429, description = "The queue is full", body = ErrorBody),
              (status = 503, description = "The pool is stopping", body = ErrorBody)))]
pub async fn submit(
    State(state): State<ApiState>,
    body: String,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    // Parsed as the pool reads it ([`JobSpec`], whose defaults and refusals are the
    // authority); [`JobSubmission`] is the same shape, for clients and the document.
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
    Ok((StatusCode::ACCEPTED, Json(Submitted { id })))
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    state: Option<String>,
    limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", security(("bearer" = [])),
    params(("state" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled"),
           ("limit" = Option<u64>, Query, description = "The newest this many (default 1000)")),
    responses((status = 200, description = "The jobs, newest first", body = JobList), (status = 400, description = "Unknown state", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    Params(params): Params<ListParams>,
) -> Result<Json<JobList>, ApiError> {
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
    Ok(Json(JobList {
        count: jobs.len(),
        jobs: jobs.into_iter().map(Job::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The job's id")),
    responses((status = 200, description = "The job: state, attempts, timings, result or error", body = Job), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 404, description = "No such job", body = ErrorBody)))]
pub async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
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
    Ok(Json(Job::from(job)))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = u64, Path, description = "The job's id")),
    request_body(description = "Optional: an empty body cancels with the default cause", content_type = "application/json", content = CancelRequest),
    responses((status = 200, description = "Cancelling", body = Cancelling), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
              (status = 404, description = "No such job", body = ErrorBody), (status = 409, description = "The job has ended", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: String,
) -> Result<Json<Cancelling>, ApiError> {
    let id = job_id(&id)?;
    let body: CancelRequest = if body.trim().is_empty() {
        CancelRequest::default()
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
    Ok(Json(Cancelling {
        id,
        cancelling: true,
        cause,
    }))
}

#[utoipa::path(get, path = "/api/v1/jobs/stats", tag = "jobs", security(("bearer" = [])),
    responses((status = 200, description = "This daemon's name (the `worker` of the jobs it runs) and its pool: workers, submitted, rejected, succeeded, failed, cancelled, retries, in flight, queued (the whole queue), recovered, mean duration", body = JobStats), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub async fn stats(State(state): State<ApiState>) -> Json<JobStats> {
    let stats = state.jobs.stats().await;
    let finished = stats.succeeded + stats.failed + stats.cancelled;
    let mean = (finished > 0).then(|| stats.total_duration_ms as f64 / finished as f64);
    Json(JobStats {
        name: state.origin.to_string(),
        pool: stats.into(),
        mean_duration_ms: mean,
    })
}
