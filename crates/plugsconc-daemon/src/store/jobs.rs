//! The durable job queue in the store: [`JobQueue`] over the `job` table, one text of SQL for
//! both backends (as `shared`), written once over [`Backend`]. What differs is how a claim
//! locks: PostgreSQL, where several daemons claim at once, takes the oldest queued row
//! `FOR UPDATE SKIP LOCKED` (a row another daemon is claiming is passed over, never handed out
//! twice); SQLite runs each statement under its single writer lock. Store errors become the
//! queue's [`QueueError`].

use sqlx::{AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::StoreError;
use super::shared::{Backend, query_error};
use crate::jobs::queue::{
    CancelOutcome, Claimed, JobQueue, QueueError, Recovered, Renewal, Settlement, lost_error,
    settle,
};
use crate::jobs::{CrashPolicy, JobInfo, JobSpec, JobState, now_ms};

impl From<StoreError> for QueueError {
    fn from(err: StoreError) -> Self {
        QueueError::Storage(Box::new(err))
    }
}

/// The `job` table, whose id column (`id_column`) is the backend's own.
pub(super) fn job_table(id_column: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS job ({id_column},
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
}

/// The columns a [`JobInfo`] is read from.
const COLUMNS: &str = "id, task, state, attempts, submitted_ms, submitted_by, worker, started_ms, finished_ms, duration_ms, result, error, cancel_cause";

/// A millisecond time as the store keeps it.
fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored millisecond time or count.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A stored count of attempts.
fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(if value < 0 { 0 } else { u32::MAX })
}

/// JSON kept in a text column; a row written by this code always parses, anything else reads
/// as a decode error naming the column.
fn parse_json<T: serde::de::DeserializeOwned>(
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

/// A job's record from a row holding [`COLUMNS`].
fn job_info<R>(row: &R) -> Result<JobInfo, sqlx::Error>
where
    R: sqlx::Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let state: String = row.try_get("state")?;
    let opt = |column: &str| -> Result<Option<u64>, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(column)?.map(unsigned))
    };
    Ok(JobInfo {
        id: unsigned(row.try_get("id")?),
        task: row.try_get("task")?,
        state: JobState::parse(&state).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "state".to_owned(),
            source: format!("unknown job state {state:?}").into(),
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

#[tonic::async_trait]
impl<B> JobQueue for B
where
    B: Backend,
    // What the driver must read and write (the same list as the catalog's).
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    <B::Db as Database>::Arguments: IntoArguments<B::Db>,
    for<'a> &'a str: ColumnIndex<<B::Db as Database>::Row> + Encode<'a, B::Db> + Type<B::Db>,
    for<'a> &'a [u8]: Encode<'a, B::Db> + Type<B::Db>,
    for<'r> String: Decode<'r, B::Db> + Encode<'r, B::Db> + Type<B::Db>,
    for<'r> Vec<u8>: Decode<'r, B::Db> + Encode<'r, B::Db> + Type<B::Db>,
    for<'r> bool: Decode<'r, B::Db> + Encode<'r, B::Db> + Type<B::Db>,
    for<'r> i64: Decode<'r, B::Db> + Encode<'r, B::Db> + Type<B::Db>,
    for<'a> Option<&'a str>: Encode<'a, B::Db> + Type<B::Db>,
    for<'r> Option<String>: Encode<'r, B::Db> + Type<B::Db>,
    for<'r> Option<i64>: Encode<'r, B::Db> + Type<B::Db>,
{
    fn shared(&self) -> bool {
        B::SHARED_QUEUE
    }

    async fn insert(
        &self,
        spec: &JobSpec,
        submitted_by: &str,
        now: u64,
    ) -> Result<u64, QueueError> {
        use sqlx::Row as _;
        let text = serde_json::to_string(spec)
            .map_err(|err| query_error("encode the job")(sqlx::Error::Encode(Box::new(err))))?;
        let row = sqlx::query(
            "INSERT INTO job (task, spec, state, max_attempts, on_crash, submitted_ms, submitted_by)
             VALUES ($1, $2, 'queued', $3, $4, $5, $6) RETURNING id",
        )
        .bind(&spec.task)
        .bind(text)
        .bind(i64::from(spec.retry.max_attempts()))
        .bind(spec.on_crash.as_str())
        .bind(ms(now))
        .bind(submitted_by)
        .fetch_one(self.pool())
        .await
        .map_err(query_error("queue a job"))?;
        let id: i64 = row.try_get("id").map_err(query_error("queue a job"))?;
        Ok(unsigned(id))
    }

    async fn claim(
        &self,
        worker: &str,
        token: i64,
        submitted_by: Option<&str>,
        now: u64,
        lease_until: u64,
    ) -> Result<Option<Claimed>, QueueError> {
        use sqlx::Row as _;
        let what = "claim a job";
        let by = submitted_by.unwrap_or_default();
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE job SET state = 'running', attempts = attempts + 1, worker = $1,
                 claim_token = $2, lease_until_ms = $3, started_ms = COALESCE(started_ms, $4)
             WHERE id = (SELECT id FROM job WHERE state = 'queued' AND ($5 = '' OR submitted_by = $6)
                         ORDER BY id LIMIT 1 {})
             RETURNING spec, {COLUMNS}",
            B::CLAIM_LOCK
        )))
        .bind(worker)
        .bind(token)
        .bind(ms(lease_until))
        .bind(ms(now))
        .bind(by)
        .bind(by)
        .fetch_optional(self.pool())
        .await
        .map_err(query_error(what))?;
        let Some(row) = row else { return Ok(None) };
        let spec: String = row.try_get("spec").map_err(query_error(what))?;
        let spec = parse_json("spec", Some(spec))
            .map_err(query_error(what))?
            .ok_or_else(|| query_error(what)(sqlx::Error::RowNotFound))?;
        let info = job_info(&row).map_err(query_error(what))?;
        Ok(Some(Claimed { spec, info }))
    }

    async fn save(&self, token: i64, info: &JobInfo) -> Result<bool, QueueError> {
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
        .execute(self.pool())
        .await
        .map_err(query_error("record a job"))?;
        Ok(B::rows_affected(&saved) > 0)
    }

    async fn renew(&self, held: &[(u64, i64)], lease_until: u64) -> Result<Renewal, QueueError> {
        use sqlx::Row as _;
        let what = "renew job leases";
        let mut renewal = Renewal::default();
        // One claim at a time: a worker runs a handful of jobs, not thousands.
        for &(id, token) in held {
            // A released job (lease 0) waits for recovery; it is not renewed.
            let row = sqlx::query(
                "UPDATE job SET lease_until_ms = $3
                 WHERE id = $1 AND claim_token = $2 AND state = 'running' AND lease_until_ms > 0
                 RETURNING cancel_requested",
            )
            .bind(ms(id))
            .bind(token)
            .bind(ms(lease_until))
            .fetch_optional(self.pool())
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

    async fn release(&self, id: u64, token: i64) -> Result<(), QueueError> {
        sqlx::query(
            "UPDATE job SET lease_until_ms = 0 WHERE id = $1 AND claim_token = $2 AND state = 'running'",
        )
        .bind(ms(id))
        .bind(token)
        .execute(self.pool())
        .await
        .map_err(query_error("give a job up"))?;
        Ok(())
    }

    async fn recover(&self, before: u64) -> Result<Recovered, QueueError> {
        use sqlx::Row as _;
        let what = "settle the jobs of stopped daemons";
        let (before, now) = (ms(before), ms(now_ms()));
        let lost = serde_json::to_string(&lost_error()).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT id, on_crash, attempts, max_attempts, cancel_requested
             FROM job WHERE state = 'running' AND lease_until_ms < $1 ORDER BY id",
        )
        .bind(before)
        .fetch_all(self.pool())
        .await
        .map_err(query_error(what))?;
        let mut recovered = Recovered::default();
        for row in rows {
            let id: i64 = row.try_get("id").map_err(query_error(what))?;
            let attempts: i64 = row.try_get("attempts").map_err(query_error(what))?;
            let max_attempts: i64 = row.try_get("max_attempts").map_err(query_error(what))?;
            let cancelling: Option<String> =
                row.try_get("cancel_requested").map_err(query_error(what))?;
            let on_crash: String = row.try_get("on_crash").map_err(query_error(what))?;
            let on_crash = CrashPolicy::parse(&on_crash).ok_or_else(|| {
                query_error(what)(sqlx::Error::ColumnDecode {
                    index: "on_crash".to_owned(),
                    source: format!("unknown crash policy {on_crash:?}").into(),
                })
            })?;
            let settlement = settle(
                on_crash,
                count(attempts),
                count(max_attempts),
                cancelling.is_some(),
            );
            // Each update holds only if the row still is what was read: a job saved, renewed
            // or asked to cancel meanwhile is left to the next recovery, never settled twice.
            let query = match settlement {
                Settlement::Cancelled => sqlx::query(
                    "UPDATE job SET state = 'cancelled', cancel_cause = cancel_requested,
                         finished_ms = $4, lease_until_ms = NULL
                     WHERE id = $1 AND state = 'running' AND lease_until_ms < $2
                         AND attempts = $3 AND cancel_requested IS NOT NULL",
                )
                .bind(id)
                .bind(before)
                .bind(attempts)
                .bind(now),
                Settlement::Requeued => sqlx::query(
                    "UPDATE job SET state = 'queued', lease_until_ms = NULL
                     WHERE id = $1 AND state = 'running' AND lease_until_ms < $2
                         AND attempts = $3 AND cancel_requested IS NULL",
                )
                .bind(id)
                .bind(before)
                .bind(attempts),
                Settlement::Lost => sqlx::query(
                    "UPDATE job SET state = 'failed', error = $5, finished_ms = $4, lease_until_ms = NULL
                     WHERE id = $1 AND state = 'running' AND lease_until_ms < $2
                         AND attempts = $3 AND cancel_requested IS NULL",
                )
                .bind(id)
                .bind(before)
                .bind(attempts)
                .bind(now)
                .bind(lost.as_str()),
            };
            let done = query
                .execute(self.pool())
                .await
                .map_err(query_error(what))?;
            if B::rows_affected(&done) > 0 {
                recovered.count(settlement);
            }
        }
        Ok(recovered)
    }

    async fn cancel(&self, id: u64, cause: &str, now: u64) -> Result<CancelOutcome, QueueError> {
        let what = "cancel a job";
        let cancelled = sqlx::query(
            "UPDATE job SET state = 'cancelled', cancel_cause = $2, finished_ms = $3
             WHERE id = $1 AND state = 'queued'",
        )
        .bind(ms(id))
        .bind(cause)
        .bind(ms(now))
        .execute(self.pool())
        .await
        .map_err(query_error(what))?;
        if B::rows_affected(&cancelled) > 0 {
            return Ok(CancelOutcome::Cancelled);
        }
        let asked = sqlx::query(
            "UPDATE job SET cancel_requested = COALESCE(cancel_requested, $2)
             WHERE id = $1 AND state = 'running'",
        )
        .bind(ms(id))
        .bind(cause)
        .execute(self.pool())
        .await
        .map_err(query_error(what))?;
        if B::rows_affected(&asked) > 0 {
            return Ok(CancelOutcome::Requested);
        }
        Ok(match JobQueue::get(self, id).await? {
            Some(info) => CancelOutcome::Ended(info.state),
            None => CancelOutcome::NotFound,
        })
    }

    async fn cancel_queued(
        &self,
        submitted_by: &str,
        cause: &str,
        now: u64,
    ) -> Result<u64, QueueError> {
        let done = sqlx::query(
            "UPDATE job SET state = 'cancelled', cancel_cause = $2, finished_ms = $3
             WHERE state = 'queued' AND submitted_by = $1",
        )
        .bind(submitted_by)
        .bind(cause)
        .bind(ms(now))
        .execute(self.pool())
        .await
        .map_err(query_error("cancel queued jobs"))?;
        Ok(B::rows_affected(&done))
    }

    async fn get(&self, id: u64) -> Result<Option<JobInfo>, QueueError> {
        let what = "read a job";
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM job WHERE id = $1"
        )))
        .bind(ms(id))
        .fetch_optional(self.pool())
        .await
        .map_err(query_error(what))?;
        Ok(row
            .map(|row| job_info(&row))
            .transpose()
            .map_err(query_error(what))?)
    }

    async fn list(&self, state: Option<JobState>, limit: u64) -> Result<Vec<JobInfo>, QueueError> {
        let what = "list jobs";
        let state = state.map_or("", JobState::as_str);
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM job WHERE ($1 = '' OR state = $2) ORDER BY id DESC LIMIT $3"
        )))
        .bind(state)
        .bind(state)
        .bind(ms(limit))
        .fetch_all(self.pool())
        .await
        .map_err(query_error(what))?;
        Ok(rows
            .iter()
            .map(job_info)
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error(what))?)
    }

    async fn queued(&self) -> Result<u64, QueueError> {
        use sqlx::Row as _;
        let what = "count queued jobs";
        let row = sqlx::query("SELECT COUNT(*) AS queued FROM job WHERE state = 'queued'")
            .fetch_one(self.pool())
            .await
            .map_err(query_error(what))?;
        let queued: i64 = row.try_get("queued").map_err(query_error(what))?;
        Ok(unsigned(queued))
    }
}
