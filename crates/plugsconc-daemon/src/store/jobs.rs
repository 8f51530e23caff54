//! The durable job queue in the store: [`crate::jobs::queue::JobQueue`] over the `job` table,
//! one text of SQL for both backends (as `shared`), instantiated per pool type by a macro. What
//! differs is how a claim locks: PostgreSQL, where several daemons claim at once, takes the
//! oldest queued row `FOR UPDATE SKIP LOCKED` (a row another daemon is claiming is passed over,
//! never handed out twice); SQLite runs each statement under its single writer lock.

/// The `job` table after the id column, shared by both backends.
macro_rules! job_table {
    ($id:literal) => {
        concat!(
            "CREATE TABLE IF NOT EXISTS job (",
            $id,
            ",
    task TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    on_crash TEXT NOT NULL,
    submitted_ms BIGINT NOT NULL,
    submitted_by TEXT NOT NULL,
    worker TEXT,
    claim_token BIGINT,
    started_ms BIGINT,
    finished_ms BIGINT,
    duration_ms BIGINT,
    result TEXT,
    error TEXT,
    cancel_cause TEXT,
    cancel_requested TEXT,
    lease_until_ms BIGINT
);
CREATE INDEX IF NOT EXISTS job_by_state ON job (state, id);
"
        )
    };
}

pub(super) use job_table;

/// The columns a [`crate::jobs::JobInfo`] is read from.
pub(super) const COLUMNS: &str = "id, task, state, attempts, submitted_ms, submitted_by, worker, started_ms, finished_ms, duration_ms, result, error, cancel_cause";

/// A millisecond time as the store keeps it.
pub(super) fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored millisecond time or count.
pub(super) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// JSON kept in a text column; a row written by this code always parses, anything else reads
/// as a decode error naming the column.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    column: &'static str,
    text: Option<String>,
) -> Result<Option<T>, sqlx::Error> {
    text.map(|text| {
        serde_json::from_str(&text).map_err(|err| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: Box::new(err),
        })
    })
    .transpose()
}

/// `impl JobQueue for $store` (a store whose `pool` is a `sqlx::Pool` yielding `$row`);
/// `$lock` ends the claim's row choice (`FOR UPDATE SKIP LOCKED`, or nothing), `$shared` says
/// whether other daemons use the same queue.
macro_rules! job_queue {
    ($store:ty, $row:ty, $lock:literal, $shared:literal) => {
        impl $store {
            fn job_info(row: &$row) -> Result<$crate::jobs::JobInfo, sqlx::Error> {
                use sqlx::Row as _;
                use $crate::store::jobs::{parse_json, unsigned};
                let state: String = row.try_get("state")?;
                let opt = |column: &str| -> Result<Option<u64>, sqlx::Error> {
                    Ok(row.try_get::<Option<i64>, _>(column)?.map(unsigned))
                };
                Ok($crate::jobs::JobInfo {
                    id: unsigned(row.try_get("id")?),
                    task: row.try_get("task")?,
                    state: $crate::jobs::JobState::parse(&state).ok_or_else(|| {
                        sqlx::Error::ColumnDecode {
                            index: "state".to_owned(),
                            source: format!("unknown job state {state:?}").into(),
                        }
                    })?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
                    submitted_ms: unsigned(row.try_get("submitted_ms")?),
                    submitted_by: row.try_get("submitted_by")?,
                    worker: row.try_get("worker")?,
                    started_ms: opt("started_ms")?,
                    finished_ms: opt("finished_ms")?,
                    duration_ms: opt("duration_ms")?,
                    result: parse_json("result", row.try_get("result")?)?,
                    error: parse_json("error", row.try_get("error")?)?,
                    cancel_cause: row.try_get("cancel_cause")?,
                })
            }
        }

        #[tonic::async_trait]
        impl $crate::jobs::queue::JobQueue for $store {
            fn shared(&self) -> bool {
                $shared
            }

            async fn insert(
                &self,
                spec: &$crate::jobs::JobSpec,
                submitted_by: &str,
                now: u64,
            ) -> Result<u64, $crate::jobs::queue::QueueError> {
                use sqlx::Row as _;
                let text = serde_json::to_string(spec).map_err(|err| {
                    query_error("encode the job")(sqlx::Error::Encode(Box::new(err)))
                })?;
                let row = sqlx::query(
                    "INSERT INTO job (task, spec, state, max_attempts, on_crash, submitted_ms, submitted_by)
                     VALUES ($1, $2, 'queued', $3, $4, $5, $6) RETURNING id",
                )
                .bind(&spec.task)
                .bind(text)
                .bind(i64::from(spec.retry.max_attempts.max(1)))
                .bind(spec.on_crash.as_str())
                .bind($crate::store::jobs::ms(now))
                .bind(submitted_by)
                .fetch_one(&self.pool)
                .await
                .map_err(query_error("queue a job"))?;
                let id: i64 = row.try_get("id").map_err(query_error("queue a job"))?;
                Ok($crate::store::jobs::unsigned(id))
            }

            async fn claim(
                &self,
                worker: &str,
                token: i64,
                submitted_by: Option<&str>,
                now: u64,
                lease_until: u64,
            ) -> Result<Option<$crate::jobs::queue::Claimed>, $crate::jobs::queue::QueueError> {
                use sqlx::Row as _;
                let what = "claim a job";
                let by = submitted_by.unwrap_or_default();
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE job SET state = 'running', attempts = attempts + 1, worker = $1,
                         claim_token = $2, lease_until_ms = $3, started_ms = COALESCE(started_ms, $4)
                     WHERE id = (SELECT id FROM job WHERE state = 'queued' AND ($5 = '' OR submitted_by = $6)
                                 ORDER BY id LIMIT 1 {})
                     RETURNING spec, {}",
                    $lock,
                    $crate::store::jobs::COLUMNS
                )))
                .bind(worker)
                .bind(token)
                .bind($crate::store::jobs::ms(lease_until))
                .bind($crate::store::jobs::ms(now))
                .bind(by)
                .bind(by)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_error(what))?;
                let Some(row) = row else { return Ok(None) };
                let spec: String = row.try_get("spec").map_err(query_error(what))?;
                let spec = $crate::store::jobs::parse_json("spec", Some(spec))
                    .map_err(query_error(what))?
                    .ok_or_else(|| query_error(what)(sqlx::Error::RowNotFound))?;
                let info = Self::job_info(&row).map_err(query_error(what))?;
                Ok(Some($crate::jobs::queue::Claimed { spec, info }))
            }

            async fn save(
                &self,
                token: i64,
                info: &$crate::jobs::JobInfo,
            ) -> Result<bool, $crate::jobs::queue::QueueError> {
                use $crate::store::jobs::ms;
                let saved = sqlx::query(
                    "UPDATE job SET state = $3, attempts = $4, started_ms = $5, finished_ms = $6,
                         duration_ms = $7, result = $8, error = $9, cancel_cause = $10
                     WHERE id = $1 AND claim_token = $2 AND state = 'running'",
                )
                .bind(ms(info.id))
                .bind(token)
                .bind(info.state.as_str())
                .bind(i64::from(info.attempts))
                .bind(info.started_ms.map(ms))
                .bind(info.finished_ms.map(ms))
                .bind(info.duration_ms.map(ms))
                .bind(info.result.as_ref().map(ToString::to_string))
                .bind(
                    info.error
                        .as_ref()
                        .and_then(|error| serde_json::to_string(error).ok()),
                )
                .bind(info.cancel_cause.as_deref())
                .execute(&self.pool)
                .await
                .map_err(query_error("record a job"))?
                .rows_affected();
                Ok(saved > 0)
            }

            async fn renew(
                &self,
                held: &[(u64, i64)],
                lease_until: u64,
            ) -> Result<$crate::jobs::queue::Renewal, $crate::jobs::queue::QueueError> {
                use sqlx::Row as _;
                let what = "renew job leases";
                let mut renewal = $crate::jobs::queue::Renewal::default();
                // One claim at a time: a worker runs a handful of jobs, not thousands.
                for &(id, token) in held {
                    // A released job (lease 0) waits for recovery; it is not renewed.
                    let row = sqlx::query(
                        "UPDATE job SET lease_until_ms = $3
                         WHERE id = $1 AND claim_token = $2 AND state = 'running' AND lease_until_ms > 0
                         RETURNING cancel_requested",
                    )
                    .bind($crate::store::jobs::ms(id))
                    .bind(token)
                    .bind($crate::store::jobs::ms(lease_until))
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_error(what))?;
                    match row {
                        None => renewal.lost.push(id),
                        Some(row) => {
                            let asked: Option<String> =
                                row.try_get("cancel_requested").map_err(query_error(what))?;
                            if let Some(cause) = asked {
                                renewal.cancels.push((id, cause));
                            }
                        }
                    }
                }
                Ok(renewal)
            }

            async fn release(&self, id: u64, token: i64) -> Result<(), $crate::jobs::queue::QueueError> {
                sqlx::query(
                    "UPDATE job SET lease_until_ms = 0 WHERE id = $1 AND claim_token = $2 AND state = 'running'",
                )
                .bind($crate::store::jobs::ms(id))
                .bind(token)
                .execute(&self.pool)
                .await
                .map_err(query_error("give a job up"))?;
                Ok(())
            }

            async fn recover(
                &self,
                before: u64,
            ) -> Result<$crate::jobs::queue::Recovered, $crate::jobs::queue::QueueError> {
                let what = "settle the jobs of stopped daemons";
                let (before, now) = (
                    $crate::store::jobs::ms(before),
                    $crate::store::jobs::ms($crate::jobs::now_ms()),
                );
                let lost = serde_json::to_string(&$crate::jobs::queue::lost_error())
                    .unwrap_or_default();
                // A cancellation that commits between these statements (PostgreSQL reads each
                // with a fresh snapshot) leaves its job to the next recovery's first statement,
                // never queued again.
                let mut tx = self.pool.begin().await.map_err(query_error("begin"))?;
                let cancelled = sqlx::query(
                    "UPDATE job SET state = 'cancelled', cancel_cause = cancel_requested,
                         finished_ms = $2, lease_until_ms = NULL
                     WHERE state = 'running' AND lease_until_ms < $1 AND cancel_requested IS NOT NULL",
                )
                .bind(before)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query_error(what))?
                .rows_affected();
                let requeued = sqlx::query(
                    "UPDATE job SET state = 'queued', lease_until_ms = NULL
                     WHERE state = 'running' AND lease_until_ms < $1 AND cancel_requested IS NULL
                         AND on_crash = 'retry' AND attempts < max_attempts",
                )
                .bind(before)
                .execute(&mut *tx)
                .await
                .map_err(query_error(what))?
                .rows_affected();
                let failed = sqlx::query(
                    "UPDATE job SET state = 'failed', error = $3, finished_ms = $2, lease_until_ms = NULL
                     WHERE state = 'running' AND lease_until_ms < $1 AND cancel_requested IS NULL",
                )
                .bind(before)
                .bind(now)
                .bind(lost)
                .execute(&mut *tx)
                .await
                .map_err(query_error(what))?
                .rows_affected();
                tx.commit().await.map_err(query_error("commit"))?;
                Ok($crate::jobs::queue::Recovered {
                    requeued,
                    failed,
                    cancelled,
                })
            }

            async fn cancel(
                &self,
                id: u64,
                cause: &str,
                now: u64,
            ) -> Result<$crate::jobs::queue::CancelOutcome, $crate::jobs::queue::QueueError> {
                use $crate::jobs::queue::CancelOutcome;
                use $crate::store::jobs::ms;
                let what = "cancel a job";
                let cancelled = sqlx::query(
                    "UPDATE job SET state = 'cancelled', cancel_cause = $2, finished_ms = $3
                     WHERE id = $1 AND state = 'queued'",
                )
                .bind(ms(id))
                .bind(cause)
                .bind(ms(now))
                .execute(&self.pool)
                .await
                .map_err(query_error(what))?
                .rows_affected();
                if cancelled > 0 {
                    return Ok(CancelOutcome::Cancelled);
                }
                let asked = sqlx::query(
                    "UPDATE job SET cancel_requested = COALESCE(cancel_requested, $2)
                     WHERE id = $1 AND state = 'running'",
                )
                .bind(ms(id))
                .bind(cause)
                .execute(&self.pool)
                .await
                .map_err(query_error(what))?
                .rows_affected();
                if asked > 0 {
                    return Ok(CancelOutcome::Requested);
                }
                Ok(match $crate::jobs::queue::JobQueue::get(self, id).await? {
                    Some(info) => CancelOutcome::Ended(info.state),
                    None => CancelOutcome::NotFound,
                })
            }

            async fn cancel_queued(
                &self,
                submitted_by: &str,
                cause: &str,
                now: u64,
            ) -> Result<u64, $crate::jobs::queue::QueueError> {
                Ok(sqlx::query(
                    "UPDATE job SET state = 'cancelled', cancel_cause = $2, finished_ms = $3
                     WHERE state = 'queued' AND submitted_by = $1",
                )
                .bind(submitted_by)
                .bind(cause)
                .bind($crate::store::jobs::ms(now))
                .execute(&self.pool)
                .await
                .map_err(query_error("cancel queued jobs"))?
                .rows_affected())
            }

            async fn get(
                &self,
                id: u64,
            ) -> Result<Option<$crate::jobs::JobInfo>, $crate::jobs::queue::QueueError> {
                let what = "read a job";
                let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM job WHERE id = $1",
                    $crate::store::jobs::COLUMNS
                )))
                .bind($crate::store::jobs::ms(id))
                .fetch_optional(&self.pool)
                .await
                .map_err(query_error(what))?;
                Ok(row
                    .map(|row| Self::job_info(&row))
                    .transpose()
                    .map_err(query_error(what))?)
            }

            async fn list(
                &self,
                state: Option<$crate::jobs::JobState>,
                limit: u64,
            ) -> Result<Vec<$crate::jobs::JobInfo>, $crate::jobs::queue::QueueError> {
                let what = "list jobs";
                let state = state.map_or("", $crate::jobs::JobState::as_str);
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM job WHERE ($1 = '' OR state = $2) ORDER BY id DESC LIMIT $3",
                    $crate::store::jobs::COLUMNS
                )))
                .bind(state)
                .bind(state)
                .bind($crate::store::jobs::ms(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(query_error(what))?;
                Ok(rows
                    .iter()
                    .map(Self::job_info)
                    .collect::<Result<_, sqlx::Error>>()
                    .map_err(query_error(what))?)
            }

            async fn queued(&self) -> Result<u64, $crate::jobs::queue::QueueError> {
                use sqlx::Row as _;
                let what = "count queued jobs";
                let row = sqlx::query("SELECT COUNT(*) AS queued FROM job WHERE state = 'queued'")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_error(what))?;
                let queued: i64 = row.try_get("queued").map_err(query_error(what))?;
                Ok($crate::store::jobs::unsigned(queued))
            }
        }
    };
}

pub(super) use job_queue;
