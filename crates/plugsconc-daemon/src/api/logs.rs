//! `GET /api/v1/logs`: log records from the persistent queue (the daemon's and its plugins'),
//! filtered by plugin, level and time, oldest first, paged by id so a client can follow.

use std::path::PathBuf;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use sqlx::SqlitePool;
use tokio::sync::OnceCell;

use super::extract::Params;
use super::types::{ErrorBody, LogPage, LogRecord};
use super::{ApiError, ApiState};
use crate::logqueue::{self, Filter};

/// Where the records are, opened read-only on first use.
#[derive(Debug)]
pub struct LogSource {
    db: PathBuf,
    queue: String,
    pool: OnceCell<SqlitePool>,
}

impl LogSource {
    /// Records of `queue` in the SQLite file `db`.
    pub fn new(db: PathBuf, queue: String) -> Self {
        Self {
            db,
            queue,
            pool: OnceCell::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogParams {
    plugin: Option<String>,
    level: Option<String>,
    since: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

fn unavailable(why: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %why, "cannot read the log queue");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "logs_unavailable",
        "the log queue cannot be read",
    )
}

#[utoipa::path(get, path = "/api/v1/logs", tag = "logs", security(("bearer" = [])),
    params(("plugin" = Option<String>, Query, description = "Only this plugin's records"),
           ("level" = Option<String>, Query, description = "At or above: trace, debug, info, warn, error"),
           ("since" = Option<String>, Query, description = "At or after this RFC 3339 time"),
           ("after" = Option<i64>, Query, description = "After this record id (to follow: pass the last `next`)"),
           ("limit" = Option<i64>, Query, description = "At most this many (default 100, up to 10,000)")),
    responses((status = 200, description = "`records` (id and the JSON record), oldest first, and `next`", body = LogPage),
              (status = 400, description = "A filter is not valid", body = ErrorBody),
              (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
              (status = 409, description = "The daemon keeps no persistent log queue", body = ErrorBody)))]
pub async fn logs(
    State(state): State<ApiState>,
    Params(params): Params<LogParams>,
) -> Result<Json<LogPage>, ApiError> {
    let Some(source) = &state.logs else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_log_queue",
            "this daemon keeps no log records (logging.log_enable_persistent_queue is off, or log_remove_on_complete is on)",
        ));
    };
    let since = params
        .since
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.timestamp_micros())
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("since={t:?}: expected an RFC 3339 time"),
                    )
                })
        })
        .transpose()?;
    let min_level = match params.level.as_deref() {
        None => 0,
        Some(level @ ("trace" | "debug" | "info" | "warn" | "error")) => logqueue::rank(level),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("level={other:?}: expected trace, debug, info, warn or error"),
            ));
        }
    };
    let pool = source
        .pool
        .get_or_try_init(|| logqueue::open(&source.db, false))
        .await
        .map_err(unavailable)?;
    let filter = Filter {
        plugin: params.plugin,
        min_level,
        since,
        after: params.after.unwrap_or(0),
        limit: params.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let records = logqueue::read(pool, &source.queue, &filter)
        .await
        .map_err(unavailable)?;
    let next = records.last().map_or(filter.after, |(id, _)| *id);
    let records = records
        .into_iter()
        .map(|(id, line)| LogRecord {
            id,
            record: serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line)),
        })
        .collect();
    Ok(Json(LogPage { records, next }))
}
