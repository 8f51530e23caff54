//! Where jobs are kept: the [`JobQueue`] trait the pool works against, implemented by the store
//! (`crate::store`, SQLite or PostgreSQL) and, for the pool's tests, in memory. Both keep the
//! same contract:
//!
//! - `claim` hands each queued job to exactly one caller, and counts the attempt it starts;
//! - a claim carries a token and a lease; `renew` extends the leases of the claims a worker still
//!   holds, says which it lost, and reports the cancellations asked for meanwhile (possibly on
//!   another daemon);
//! - `save` writes a job only while the caller's claim holds it (a worker whose lease ran out and
//!   whose job was taken over — even by another worker of the same daemon — cannot overwrite the
//!   new run);
//! - `recover` settles the running jobs whose lease ran out, each as [`settle`] decides.

#[cfg(test)]
use std::collections::BTreeMap;
#[cfg(test)]
use std::sync::{Mutex, PoisonError};

use super::{CrashPolicy, JobError, JobInfo, JobSpec, JobState};

/// Why the job queue cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The storage keeping the queue failed; its error says what was being done and why.
    #[error(transparent)]
    Storage(Box<dyn std::error::Error + Send + Sync>),
}

/// A job a worker claimed: its spec and its record (`attempts` already counts this attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// What to run.
    pub spec: JobSpec,
    /// Its record, now `running` on the claiming worker.
    pub info: JobInfo,
}

/// What a lease renewal found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Claims no longer held (their lease ran out and the job was settled or taken over).
    pub lost: Vec<u64>,
    /// Cancellations asked for the jobs still held: (id, cause).
    pub cancels: Vec<(u64, String)>,
}

/// What a cancellation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued and is now cancelled.
    Cancelled,
    /// The job is running; its worker stops it (at once here, within a lease renewal elsewhere).
    Requested,
    /// The job had already ended, in this state.
    Ended(JobState),
    /// No such job.
    NotFound,
}

/// What [`JobQueue::recover`] settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Queued again (`on_crash: retry` with attempts left).
    pub requeued: u64,
    /// Failed with the code `lost`.
    pub failed: u64,
    /// Cancelled, as was asked before the worker died.
    pub cancelled: u64,
}

impl Recovered {
    /// Jobs settled in all.
    pub fn total(&self) -> u64 {
        self.requeued + self.failed + self.cancelled
    }
}

/// What becomes of a running job whose lease ran out (its daemon died, or gave it up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Cancelled with the cause asked before the worker stopped.
    Cancelled,
    /// Queued again for another attempt.
    Requeued,
    /// Failed with [`lost_error`].
    Lost,
}

/// The crash rule, the one place it is written (every queue's `recover` applies it): a job
/// asked to cancel is cancelled; else one whose policy is `on_crash: retry` and that has
/// attempts left (the interrupted one counts; `max_attempts` as the job's
/// [`super::RetryPolicy::max_attempts`]) is queued again; else it is lost.
pub fn settle(
    on_crash: CrashPolicy,
    attempts: u32,
    max_attempts: u32,
    cancel_requested: bool,
) -> Settlement {
    if cancel_requested {
        return Settlement::Cancelled;
    }
    match on_crash {
        CrashPolicy::Retry if attempts < max_attempts.max(1) => Settlement::Requeued,
        CrashPolicy::Retry | CrashPolicy::Fail => Settlement::Lost,
    }
}

impl Recovered {
    /// Counts one job settled as `settlement`.
    pub fn count(&mut self, settlement: Settlement) {
        match settlement {
            Settlement::Cancelled => self.cancelled += 1,
            Settlement::Requeued => self.requeued += 1,
            Settlement::Lost => self.failed += 1,
        }
    }
}

/// The error of a job whose daemon died and whose policy does not run it again.
pub fn lost_error() -> JobError {
    JobError::new(
        "lost",
        "the daemon running the job stopped during an attempt, and the job's policy does not run it again (on_crash: fail, or no attempts left)",
        false,
    )
}

/// Storage of jobs, shared by the workers of one or several daemons. Times are Unix
/// milliseconds.
#[tonic::async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Whether other daemons may use this queue too (then a running job without a live lease is
    /// the only sign of a dead worker; otherwise every running job at start is an orphan).
    fn shared(&self) -> bool;

    /// Queues a job; returns its id.
    async fn insert(&self, spec: &JobSpec, submitted_by: &str, now: u64)
    -> Result<u64, QueueError>;

    /// Takes the oldest queued job (only those `submitted_by` submitted, when given) for
    /// `worker` under the claim `token`, holding it until `lease_until`.
    async fn claim(
        &self,
        worker: &str,
        token: i64,
        submitted_by: Option<&str>,
        now: u64,
        lease_until: u64,
    ) -> Result<Option<Claimed>, QueueError>;

    /// Writes `info` (attempts, state, timings, result, error) while the claim `token` holds the
    /// job. `false` when it no longer does.
    async fn save(&self, token: i64, info: &JobInfo) -> Result<bool, QueueError>;

    /// Extends the leases of the claims `held` (job id, token) until `lease_until`.
    async fn renew(&self, held: &[(u64, i64)], lease_until: u64) -> Result<Renewal, QueueError>;

    /// Gives job `id` up at once, as if its worker had died: [`JobQueue::recover`] settles it.
    async fn release(&self, id: u64, token: i64) -> Result<(), QueueError>;

    /// Settles the running jobs whose lease ends before `before`.
    async fn recover(&self, before: u64) -> Result<Recovered, QueueError>;

    /// Cancels job `id` with `cause`.
    async fn cancel(&self, id: u64, cause: &str, now: u64) -> Result<CancelOutcome, QueueError>;

    /// Cancels every queued job `submitted_by` submitted; returns how many.
    async fn cancel_queued(
        &self,
        submitted_by: &str,
        cause: &str,
        now: u64,
    ) -> Result<u64, QueueError>;

    /// Job `id`.
    async fn get(&self, id: u64) -> Result<Option<JobInfo>, QueueError>;

    /// The newest `limit` jobs, newest first, optionally in one state.
    async fn list(&self, state: Option<JobState>, limit: u64) -> Result<Vec<JobInfo>, QueueError>;

    /// Jobs waiting for a worker.
    async fn queued(&self) -> Result<u64, QueueError>;
}

/// One job in memory, with what the SQL queue keeps in its columns.
#[cfg(test)]
#[derive(Debug, Clone)]
struct Row {
    spec: JobSpec,
    info: JobInfo,
    token: Option<i64>,
    lease_until: Option<u64>,
    cancel_requested: Option<String>,
}

/// Jobs in memory, the reference the pool's tests run against on a paused clock (the SQL queue
/// cannot: its driver's own timeouts would fire as the clock jumps).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryQueue {
    rows: Mutex<(u64, BTreeMap<u64, Row>)>,
    shared: bool,
}

#[cfg(test)]
impl MemoryQueue {
    /// A queue that behaves as if other daemons used it too.
    pub fn new_shared() -> Self {
        Self {
            shared: true,
            ..Self::default()
        }
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Row>)> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[tonic::async_trait]
impl JobQueue for MemoryQueue {
    fn shared(&self) -> bool {
        self.shared
    }

    async fn insert(
        &self,
        spec: &JobSpec,
        submitted_by: &str,
        now: u64,
    ) -> Result<u64, QueueError> {
        let mut rows = self.rows();
        rows.0 += 1;
        let id = rows.0;
        let info = JobInfo {
            id,
            task: spec.task.clone(),
            state: JobState::Queued,
            attempts: 0,
            submitted_ms: now,
            submitted_by: submitted_by.to_owned(),
            worker: None,
            started_ms: None,
            finished_ms: None,
            duration_ms: None,
            result: None,
            error: None,
            cancel_cause: None,
        };
        rows.1.insert(
            id,
            Row {
                spec: spec.clone(),
                info,
                token: None,
                lease_until: None,
                cancel_requested: None,
            },
        );
        Ok(id)
    }

    async fn claim(
        &self,
        worker: &str,
        token: i64,
        submitted_by: Option<&str>,
        now: u64,
        lease_until: u64,
    ) -> Result<Option<Claimed>, QueueError> {
        let mut rows = self.rows();
        let Some(row) = rows.1.values_mut().find(|row| {
            row.info.state == JobState::Queued
                && submitted_by.is_none_or(|by| row.info.submitted_by == by)
        }) else {
            return Ok(None);
        };
        row.info.state = JobState::Running;
        row.info.attempts += 1;
        row.info.worker = Some(worker.to_owned());
        row.info.started_ms.get_or_insert(now);
        row.token = Some(token);
        row.lease_until = Some(lease_until);
        Ok(Some(Claimed {
            spec: row.spec.clone(),
            info: row.info.clone(),
        }))
    }

    async fn save(&self, token: i64, info: &JobInfo) -> Result<bool, QueueError> {
        let mut rows = self.rows();
        let Some(row) = rows
            .1
            .get_mut(&info.id)
            .filter(|row| row.info.state == JobState::Running && row.token == Some(token))
        else {
            return Ok(false);
        };
        row.info = info.clone();
        if info.state.finished() {
            row.lease_until = None;
        }
        Ok(true)
    }

    async fn renew(&self, held: &[(u64, i64)], lease_until: u64) -> Result<Renewal, QueueError> {
        let mut rows = self.rows();
        let mut renewal = Renewal::default();
        for &(id, token) in held {
            // A released job (lease 0) waits for recovery; it is not renewed.
            match rows.1.get_mut(&id).filter(|row| {
                row.info.state == JobState::Running
                    && row.token == Some(token)
                    && row.lease_until != Some(0)
            }) {
                Some(row) => {
                    row.lease_until = Some(lease_until);
                    if let Some(cause) = &row.cancel_requested {
                        renewal.cancels.push((id, cause.clone()));
                    }
                }
                None => renewal.lost.push(id),
            }
        }
        Ok(renewal)
    }

    async fn release(&self, id: u64, token: i64) -> Result<(), QueueError> {
        if let Some(row) = self
            .rows()
            .1
            .get_mut(&id)
            .filter(|row| row.info.state == JobState::Running && row.token == Some(token))
        {
            row.lease_until = Some(0);
        }
        Ok(())
    }

    async fn recover(&self, before: u64) -> Result<Recovered, QueueError> {
        let mut recovered = Recovered::default();
        for row in self.rows().1.values_mut().filter(|row| {
            row.info.state == JobState::Running && row.lease_until.is_some_and(|l| l < before)
        }) {
            row.lease_until = None;
            let settlement = settle(
                row.spec.on_crash,
                row.info.attempts,
                row.spec.retry.max_attempts(),
                row.cancel_requested.is_some(),
            );
            match settlement {
                Settlement::Cancelled => {
                    row.info.state = JobState::Cancelled;
                    row.info.cancel_cause = row.cancel_requested.clone();
                    row.info.finished_ms = Some(before.min(super::now_ms()));
                }
                Settlement::Requeued => row.info.state = JobState::Queued,
                Settlement::Lost => {
                    row.info.state = JobState::Failed;
                    row.info.error = Some(lost_error());
                    row.info.finished_ms = Some(before.min(super::now_ms()));
                }
            }
            recovered.count(settlement);
        }
        Ok(recovered)
    }

    async fn cancel(&self, id: u64, cause: &str, now: u64) -> Result<CancelOutcome, QueueError> {
        let mut rows = self.rows();
        let Some(row) = rows.1.get_mut(&id) else {
            return Ok(CancelOutcome::NotFound);
        };
        Ok(match row.info.state {
            JobState::Queued => {
                row.info.state = JobState::Cancelled;
                row.info.cancel_cause = Some(cause.to_owned());
                row.info.finished_ms = Some(now);
                CancelOutcome::Cancelled
            }
            JobState::Running => {
                row.cancel_requested.get_or_insert_with(|| cause.to_owned());
                CancelOutcome::Requested
            }
            ended => CancelOutcome::Ended(ended),
        })
    }

    async fn cancel_queued(
        &self,
        submitted_by: &str,
        cause: &str,
        now: u64,
    ) -> Result<u64, QueueError> {
        let mut cancelled = 0;
        for row in self.rows().1.values_mut().filter(|row| {
            row.info.state == JobState::Queued && row.info.submitted_by == submitted_by
        }) {
            row.info.state = JobState::Cancelled;
            row.info.cancel_cause = Some(cause.to_owned());
            row.info.finished_ms = Some(now);
            cancelled += 1;
        }
        Ok(cancelled)
    }

    async fn get(&self, id: u64) -> Result<Option<JobInfo>, QueueError> {
        Ok(self.rows().1.get(&id).map(|row| row.info.clone()))
    }

    async fn list(&self, state: Option<JobState>, limit: u64) -> Result<Vec<JobInfo>, QueueError> {
        Ok(self
            .rows()
            .1
            .values()
            .rev()
            .filter(|row| state.is_none_or(|s| row.info.state == s))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|row| row.info.clone())
            .collect())
    }

    async fn queued(&self) -> Result<u64, QueueError> {
        Ok(self
            .rows()
            .1
            .values()
            .filter(|row| row.info.state == JobState::Queued)
            .count() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crash_rule_over_its_whole_table() {
        use CrashPolicy::{Fail, Retry};
        use Settlement::{Cancelled, Lost, Requeued};
        // (policy, attempts started, max_attempts, cancel asked) -> settlement
        let table = [
            (Retry, 1, 3, false, Requeued),
            (Retry, 2, 3, false, Requeued),
            (Retry, 3, 3, false, Lost),
            (Retry, 4, 3, false, Lost),
            (Retry, 1, 1, false, Lost),
            (Retry, 0, 0, false, Requeued),
            (Retry, 1, 0, false, Lost),
            (Fail, 1, 3, false, Lost),
            (Fail, 3, 3, false, Lost),
            (Retry, 1, 3, true, Cancelled),
            (Retry, 3, 3, true, Cancelled),
            (Fail, 1, 3, true, Cancelled),
        ];
        for (policy, attempts, max, cancel, want) in table {
            assert_eq!(
                settle(policy, attempts, max, cancel),
                want,
                "{policy:?} after {attempts} of {max} attempts, cancel asked: {cancel}"
            );
        }
        let retry = crate::jobs::RetryPolicy {
            max_attempts: 0,
            ..crate::jobs::RetryPolicy::default()
        };
        assert!(retry.attempts_left(0) && !retry.attempts_left(1));
    }
}
