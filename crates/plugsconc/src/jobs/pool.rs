//! The worker pool: a bounded queue drained by a fixed number of workers, each job run attempt
//! by attempt under its retry policy, timeout and deadline, on its own task (a panic fails the
//! job, not the worker), cancellable with a cause at any point.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tasks::Task;
use super::{JobError, JobSpec, JobState};

/// Why a job could not be submitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// No task of that name.
    #[error("no task {0:?}; known tasks: {1}")]
    UnknownTask(String, String),
    /// The pool no longer takes jobs.
    #[error("the job pool is stopping and takes no new jobs")]
    Stopping,
    /// The queue is full.
    #[error("the job queue is full ({0} jobs wait); try again later")]
    Full(usize),
}

/// How the pool stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Take no new jobs, let the submitted ones finish, keep their results.
    Stop,
    /// The same, then forget every job.
    Shutdown,
    /// Cancel every queued and running job now (cause `terminated`).
    Terminate,
}

/// One job as a client sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobInfo {
    /// Its id.
    pub id: u64,
    /// The task.
    pub task: String,
    /// Where it is.
    pub state: JobState,
    /// Attempts started.
    pub attempts: u32,
    /// When it was submitted, started (first attempt) and finished (Unix milliseconds).
    pub submitted_ms: u64,
    /// First attempt's start.
    pub started_ms: Option<u64>,
    /// End.
    pub finished_ms: Option<u64>,
    /// From the first attempt's start to the end, milliseconds.
    pub duration_ms: Option<u64>,
    /// The result, once succeeded.
    pub result: Option<Value>,
    /// The last error, once failed (or of the last failed attempt while retrying).
    pub error: Option<JobError>,
    /// Why it was cancelled.
    pub cancel_cause: Option<String>,
}

/// Counters of the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Workers.
    pub workers: usize,
    /// Jobs accepted.
    pub submitted: u64,
    /// Submissions refused (unknown task, full, stopping).
    pub rejected: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that failed.
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Attempts retried.
    pub retries: u64,
    /// Jobs on a worker now.
    pub in_flight: u64,
    /// Jobs waiting for a worker.
    pub queued: u64,
    /// Sum of finished jobs' durations (for the mean), milliseconds.
    pub total_duration_ms: u64,
}

struct Job {
    info: JobInfo,
    spec: JobSpec,
    cancel: CancellationToken,
    cause: Arc<Mutex<Option<String>>>,
}

struct Inner {
    tasks: HashMap<String, Arc<dyn Task>>,
    jobs: Mutex<HashMap<u64, Job>>,
    next_id: AtomicU64,
    queue: mpsc::Sender<u64>,
    capacity: usize,
    accepting: AtomicBool,
    /// Tells idle workers to end once the queue is drained.
    closing: CancellationToken,
    workers: TaskTracker,
    stats: Mutex<PoolStats>,
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Pool {
    /// A pool of `workers` (at least 1) running `tasks`, with room for `capacity` queued jobs.
    pub fn new(workers: usize, capacity: usize, tasks: Vec<Arc<dyn Task>>) -> Self {
        let workers = workers.max(1);
        let (queue, incoming) = mpsc::channel(capacity.max(1));
        let inner = Arc::new(Inner {
            tasks: tasks
                .into_iter()
                .map(|t| (t.name().to_owned(), t))
                .collect(),
            jobs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue,
            capacity: capacity.max(1),
            accepting: AtomicBool::new(true),
            closing: CancellationToken::new(),
            workers: TaskTracker::new(),
            stats: Mutex::new(PoolStats {
                workers,
                ..PoolStats::default()
            }),
        });
        let incoming = Arc::new(tokio::sync::Mutex::new(incoming));
        for _ in 0..workers {
            let (inner, incoming) = (inner.clone(), incoming.clone());
            inner.workers.clone().spawn(async move {
                loop {
                    let next = tokio::select! {
                        next = async { incoming.lock().await.recv().await } => next,
                        () = inner.closing.cancelled() => None,
                    };
                    let Some(id) = next else { return };
                    run(&inner, id).await;
                }
            });
        }
        Self { inner }
    }

    fn stats_mut(&self) -> std::sync::MutexGuard<'_, PoolStats> {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a job; returns its id.
    ///
    /// # Errors
    ///
    /// [`SubmitError`] when the task is unknown, the queue full or the pool stopping.
    pub fn submit(&self, spec: JobSpec) -> Result<u64, SubmitError> {
        let refused = |err| {
            self.stats_mut().rejected += 1;
            Err(err)
        };
        if !self.inner.accepting.load(Ordering::Acquire) {
            return refused(SubmitError::Stopping);
        }
        if !self.inner.tasks.contains_key(&spec.task) {
            let mut known: Vec<&str> = self.inner.tasks.keys().map(String::as_str).collect();
            known.sort_unstable();
            return refused(SubmitError::UnknownTask(spec.task, known.join(", ")));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            info: JobInfo {
                id,
                task: spec.task.clone(),
                state: JobState::Queued,
                attempts: 0,
                submitted_ms: now_ms(),
                started_ms: None,
                finished_ms: None,
                duration_ms: None,
                result: None,
                error: None,
                cancel_cause: None,
            },
            spec,
            cancel: CancellationToken::new(),
            cause: Arc::default(),
        };
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, job);
        // Counted before it is queued: a worker may take it (and uncount it) at once.
        {
            let mut stats = self.stats_mut();
            stats.submitted += 1;
            stats.queued += 1;
        }
        if self.inner.queue.try_send(id).is_err() {
            self.inner
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            {
                let mut stats = self.stats_mut();
                stats.submitted -= 1;
                stats.queued -= 1;
            }
            return refused(SubmitError::Full(self.inner.capacity));
        }
        Ok(id)
    }

    /// The job `id`.
    pub fn get(&self, id: u64) -> Option<JobInfo> {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .map(|job| job.info.clone())
    }

    /// Every job, newest first, optionally in one state.
    pub fn list(&self, state: Option<JobState>) -> Vec<JobInfo> {
        let jobs = self
            .inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut found: Vec<JobInfo> = jobs
            .values()
            .filter(|job| state.is_none_or(|s| job.info.state == s))
            .map(|job| job.info.clone())
            .collect();
        found.sort_by_key(|job| std::cmp::Reverse(job.id));
        found
    }

    /// Cancels job `id` with `cause`; `false` when there is no such job or it has ended.
    pub fn cancel(&self, id: u64, cause: &str) -> bool {
        let jobs = self
            .inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(job) = jobs.get(&id).filter(|job| !job.info.state.finished()) else {
            return false;
        };
        job.cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| cause.to_owned());
        job.cancel.cancel();
        true
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        *self.stats_mut()
    }

    /// Stops the pool as `mode` says; returns once no worker runs.
    pub async fn stop(&self, mode: StopMode) {
        self.inner.accepting.store(false, Ordering::Release);
        if mode == StopMode::Terminate {
            let ids: Vec<u64> = self
                .inner
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .copied()
                .collect();
            for id in ids {
                self.cancel(id, "terminated");
            }
        }
        // What was submitted runs (or, terminated, ends cancelled) before the workers go.
        while self.stats().queued > 0 || self.stats().in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.closing.cancel();
        self.inner.workers.close();
        self.inner.workers.wait().await;
        if mode == StopMode::Shutdown {
            self.inner
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }
}

/// Runs job `id` to its end.
async fn run(inner: &Arc<Inner>, id: u64) {
    // Off the queue, whatever follows.
    {
        let mut stats = inner.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.queued = stats.queued.saturating_sub(1);
    }
    let (spec, cancel, cause, submitted) = {
        let mut jobs = inner.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(job) = jobs.get_mut(&id) else {
            return;
        };
        job.info.state = JobState::Running;
        job.info.started_ms = Some(now_ms());
        (
            job.spec.clone(),
            job.cancel.clone(),
            job.cause.clone(),
            job.info.submitted_ms,
        )
    };
    // Checked at submission; a pool's tasks never change.
    let Some(task) = inner.tasks.get(&spec.task).cloned() else {
        return;
    };
    inner
        .stats
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .in_flight += 1;
    let began = Instant::now();
    let deadline = spec.deadline_ms.map(|ms| {
        began + Duration::from_millis(ms.saturating_sub(now_ms().saturating_sub(submitted)))
    });
    let mut delays = spec.retry.delays();
    let mut attempt = 0u32;
    let outcome: Result<Value, Ending> = loop {
        attempt += 1;
        update(inner, id, |info| info.attempts = attempt);
        if cancel.is_cancelled() {
            break Err(Ending::Cancelled);
        }
        let result = attempt_once(&task, &spec, &cancel, deadline).await;
        match result {
            Ok(value) => break Ok(value),
            Err(Ending::Cancelled) => break Err(Ending::Cancelled),
            Err(Ending::Failed(error)) => {
                let retry = attempt < spec.retry.max_attempts.max(1) && spec.retry.retries(&error);
                let wait = retry.then(|| delays.next()).flatten();
                let Some(wait) = wait else {
                    break Err(Ending::Failed(error));
                };
                if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                    break Err(Ending::Failed(JobError::new(
                        "deadline",
                        format!(
                            "the deadline leaves no time for another attempt; last error: {}",
                            error.message
                        ),
                        false,
                    )));
                }
                tracing::info!(
                    job = id,
                    attempt,
                    code = error.code,
                    wait_ms = wait.as_millis() as u64,
                    "job attempt failed; retrying"
                );
                update(inner, id, |info| info.error = Some(error.clone()));
                inner
                    .stats
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retries += 1;
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = cancel.cancelled() => break Err(Ending::Cancelled),
                }
            }
        }
    };
    let elapsed = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    let cause = cause.lock().unwrap_or_else(PoisonError::into_inner).clone();
    update(inner, id, |info| {
        info.finished_ms = Some(now_ms());
        info.duration_ms = Some(elapsed);
        match outcome {
            Ok(value) => {
                info.state = JobState::Succeeded;
                info.result = Some(value);
                info.error = None;
            }
            Err(Ending::Failed(error)) => {
                info.state = JobState::Failed;
                info.error = Some(error);
            }
            Err(Ending::Cancelled) => {
                info.state = JobState::Cancelled;
                info.cancel_cause = Some(cause.unwrap_or_else(|| "cancelled".to_owned()));
            }
        }
    });
    let state = inner
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
        .map(|job| job.info.state);
    let mut stats = inner.stats.lock().unwrap_or_else(PoisonError::into_inner);
    stats.in_flight = stats.in_flight.saturating_sub(1);
    stats.total_duration_ms = stats.total_duration_ms.saturating_add(elapsed);
    match state {
        Some(JobState::Succeeded) => stats.succeeded += 1,
        Some(JobState::Failed) => stats.failed += 1,
        _ => stats.cancelled += 1,
    }
}

enum Ending {
    Failed(JobError),
    Cancelled,
}

/// One attempt on its own task, bounded by the timeout and the deadline.
async fn attempt_once(
    task: &Arc<dyn Task>,
    spec: &JobSpec,
    cancel: &CancellationToken,
    deadline: Option<Instant>,
) -> Result<Value, Ending> {
    let limit = match (spec.timeout_ms.map(Duration::from_millis), deadline) {
        (Some(timeout), Some(deadline)) => {
            Some(timeout.min(deadline.saturating_duration_since(Instant::now())))
        }
        (Some(timeout), None) => Some(timeout),
        (None, Some(deadline)) => Some(deadline.saturating_duration_since(Instant::now())),
        (None, None) => None,
    };
    let attempt_cancel = cancel.child_token();
    let mut handle = {
        let (task, input, token) = (task.clone(), spec.input.clone(), attempt_cancel.clone());
        tokio::spawn(async move { task.run(input, token).await })
    };
    let sleep = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        joined = &mut handle => match joined {
            Ok(Ok(value)) => Ok(value),
            // A task that noticed the cancellation first and gave up.
            Ok(Err(_)) if cancel.is_cancelled() => Err(Ending::Cancelled),
            Ok(Err(error)) => Err(Ending::Failed(error)),
            Err(err) if err.is_panic() => {
                let panic = err.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the task panicked".to_owned());
                Err(Ending::Failed(JobError::new("panic", message, false)))
            }
            Err(_) => Err(Ending::Cancelled),
        },
        () = cancel.cancelled() => {
            attempt_cancel.cancel();
            handle.abort();
            Err(Ending::Cancelled)
        }
        () = sleep => {
            attempt_cancel.cancel();
            handle.abort();
            Err(Ending::Failed(JobError::new(
                "timeout",
                format!("the attempt ran longer than {} ms", limit.unwrap_or_default().as_millis()),
                true,
            )))
        }
    }
}

fn update(inner: &Inner, id: u64, change: impl FnOnce(&mut JobInfo)) {
    if let Some(job) = inner
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_mut(&id)
    {
        change(&mut job.info);
    }
}

#[cfg(test)]
mod tests;
