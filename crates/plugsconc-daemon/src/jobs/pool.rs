//! The worker pool: a fixed number of workers that claim jobs from a [`JobQueue`] and run each
//! attempt by attempt under its retry policy, timeout and deadline, on its own task (a panic
//! fails the job, not the worker), cancellable with a cause at any point — also from another
//! daemon sharing the queue, through the lease renewal. A heartbeat renews the leases of the
//! jobs running here and settles the jobs of workers that died.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::queue::{CancelOutcome, Claimed, JobQueue, QueueError};
use super::tasks::Task;
use super::{JobError, JobInfo, JobSpec, JobState, now_ms};

/// Why a job could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// No task of that name.
    #[error("no task {0:?}; known tasks: {1}")]
    UnknownTask(String, String),
    /// The pool no longer takes jobs.
    #[error("the job pool is stopping and takes no new jobs")]
    Stopping,
    /// The queue is full.
    #[error("the job queue is full ({0} jobs wait); try again later")]
    Full(u64),
    /// The queue cannot be written.
    #[error("the job queue cannot be written: {0}")]
    Store(QueueError),
}

// By hand rather than `#[from]`: the queue's error is part of the message, and `#[from]` would
// also return it from `source()`, printing it twice in a chain.
impl From<QueueError> for SubmitError {
    fn from(err: QueueError) -> Self {
        SubmitError::Store(err)
    }
}

/// How the pool stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Take no new jobs, run every queued job submitted here, keep the results.
    Stop,
    /// Take no new jobs, finish the running ones; queued jobs stay queued for the next start
    /// (or for another daemon sharing the queue).
    Shutdown,
    /// Cancel the running jobs and the queued ones submitted here now (cause `terminated`).
    Terminate,
}

/// How the pool runs.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Workers (at least 1).
    pub workers: usize,
    /// Queued jobs at most; a submission beyond is refused.
    pub capacity: u64,
    /// How long a claimed job stays this daemon's without a renewal; a crashed daemon's jobs are
    /// taken over after it. Renewed every third of it.
    pub lease: Duration,
    /// How often idle workers look for jobs submitted elsewhere (a submission here wakes them).
    pub poll: Duration,
    /// This daemon's name, recorded as the submitter and worker of its jobs.
    pub name: String,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            capacity: 10_000,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            name: "local".to_owned(),
        }
    }
}

/// Counters of the pool (this daemon's workers; `queued` is the whole queue's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Workers.
    pub workers: usize,
    /// Jobs accepted.
    pub submitted: u64,
    /// Submissions refused (unknown task, full, stopping, store failing).
    pub rejected: u64,
    /// Jobs that succeeded here.
    pub succeeded: u64,
    /// Jobs that failed here.
    pub failed: u64,
    /// Jobs cancelled here.
    pub cancelled: u64,
    /// Attempts retried.
    pub retries: u64,
    /// Jobs on a worker here now.
    pub in_flight: u64,
    /// Jobs waiting for a worker.
    pub queued: u64,
    /// Jobs of dead workers settled by this daemon (queued again, failed or cancelled).
    pub recovered: u64,
    /// Sum of finished jobs' durations (for the mean), milliseconds.
    pub total_duration_ms: u64,
}

/// A job running here: its claim, how to stop it, and why.
struct Running {
    token: i64,
    cancel: CancellationToken,
    cause: Arc<Mutex<Option<String>>>,
}

struct Inner {
    tasks: HashMap<String, Arc<dyn Task>>,
    queue: Arc<dyn JobQueue>,
    options: PoolOptions,
    running: Mutex<HashMap<u64, Running>>,
    /// Wakes idle workers: a job was submitted here.
    wake: Notify,
    accepting: AtomicBool,
    /// `Stop`: workers take only jobs submitted here, and end when there are none.
    draining: AtomicBool,
    /// Running jobs are given up (shutdown past its grace), not finished.
    abandoned: AtomicBool,
    /// Running jobs are cancelled (`Terminate`), a job claimed meanwhile included.
    terminated: AtomicBool,
    /// Tells workers to take nothing more.
    closing: CancellationToken,
    /// Ends the heartbeat, once no job runs here.
    heartbeat_stop: CancellationToken,
    workers: TaskTracker,
    heartbeat: TaskTracker,
    stats: Mutex<PoolStats>,
    /// Told of every job that ends here (metrics).
    observer: std::sync::OnceLock<Observer>,
}

/// What [`Pool::observe`] calls with each job that ends here.
pub type Observer = Box<dyn Fn(&JobInfo) + Send + Sync>;

impl Inner {
    fn stats(&self) -> std::sync::MutexGuard<'_, PoolStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lease_until(&self) -> u64 {
        now_ms().saturating_add(u64::try_from(self.options.lease.as_millis()).unwrap_or(u64::MAX))
    }

    /// Cancels every job running here with `cause`.
    fn cancel_all_local(&self, cause: &str) {
        let ids: Vec<u64> = self.running().keys().copied().collect();
        for id in ids {
            self.cancel_local(id, cause);
        }
    }

    /// Cancels the job running here with `cause` (the first cause given wins).
    fn cancel_local(&self, id: u64, cause: &str) -> bool {
        let running = self.running();
        let Some(job) = running.get(&id) else {
            return false;
        };
        job.cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| cause.to_owned());
        job.cancel.cancel();
        true
    }
}

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.inner.options.name)
            .field("stats", &*self.inner.stats())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool running `tasks` from `queue`. On a queue no one else uses, jobs left running by
    /// a previous daemon are settled at once; on a shared one, when their lease runs out.
    pub async fn start(
        options: PoolOptions,
        tasks: Vec<Arc<dyn Task>>,
        queue: Arc<dyn JobQueue>,
    ) -> Self {
        let workers = options.workers.max(1);
        let inner = Arc::new(Inner {
            tasks: tasks
                .into_iter()
                .map(|t| (t.name().to_owned(), t))
                .collect(),
            queue,
            options: PoolOptions { workers, ..options },
            running: Mutex::default(),
            wake: Notify::new(),
            accepting: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            terminated: AtomicBool::new(false),
            closing: CancellationToken::new(),
            heartbeat_stop: CancellationToken::new(),
            workers: TaskTracker::new(),
            heartbeat: TaskTracker::new(),
            stats: Mutex::new(PoolStats {
                workers,
                ..PoolStats::default()
            }),
            observer: std::sync::OnceLock::new(),
        });
        if !inner.queue.shared() {
            recover(&inner, u64::MAX).await;
        }
        for _ in 0..workers {
            let inner = inner.clone();
            inner.workers.clone().spawn(work(inner));
        }
        inner.heartbeat.spawn(heartbeat(inner.clone()));
        Self { inner }
    }

    /// Has `observer` told of every job that ends here from now on (once; later calls are
    /// ignored).
    pub fn observe(&self, observer: Observer) {
        let _ = self.inner.observer.set(observer);
    }

    /// Queues a job; returns its id.
    ///
    /// # Errors
    ///
    /// [`SubmitError`] when the task is unknown, the queue full or unwritable, or the pool
    /// stopping.
    pub async fn submit(&self, spec: JobSpec) -> Result<u64, SubmitError> {
        let result = self.try_submit(spec).await;
        {
            let mut stats = self.inner.stats();
            match result {
                Ok(_) => stats.submitted += 1,
                Err(_) => stats.rejected += 1,
            }
        }
        if result.is_ok() {
            self.inner.wake.notify_one();
        }
        result
    }

    async fn try_submit(&self, spec: JobSpec) -> Result<u64, SubmitError> {
        if !self.inner.accepting.load(Ordering::Acquire) {
            return Err(SubmitError::Stopping);
        }
        if !self.inner.tasks.contains_key(&spec.task) {
            let mut known: Vec<&str> = self.inner.tasks.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(SubmitError::UnknownTask(spec.task, known.join(", ")));
        }
        let queued = self.inner.queue.queued().await?;
        if queued >= self.inner.options.capacity {
            return Err(SubmitError::Full(queued));
        }
        Ok(self
            .inner
            .queue
            .insert(&spec, &self.inner.options.name, now_ms())
            .await?)
    }

    /// The job `id`.
    ///
    /// # Errors
    ///
    /// When the queue cannot be read.
    pub async fn get(&self, id: u64) -> Result<Option<JobInfo>, QueueError> {
        self.inner.queue.get(id).await
    }

    /// The newest `limit` jobs, newest first, optionally in one state.
    ///
    /// # Errors
    ///
    /// When the queue cannot be read.
    pub async fn list(
        &self,
        state: Option<JobState>,
        limit: u64,
    ) -> Result<Vec<JobInfo>, QueueError> {
        self.inner.queue.list(state, limit).await
    }

    /// Cancels job `id` with `cause`: a queued job at once, a running one through its worker
    /// (here at once; on another daemon at its next lease renewal).
    ///
    /// # Errors
    ///
    /// When the queue cannot be written.
    pub async fn cancel(&self, id: u64, cause: &str) -> Result<CancelOutcome, QueueError> {
        let outcome = self.inner.queue.cancel(id, cause, now_ms()).await?;
        match outcome {
            CancelOutcome::Requested => {
                self.inner.cancel_local(id, cause);
            }
            CancelOutcome::Cancelled => self.inner.stats().cancelled += 1,
            CancelOutcome::Ended(_) | CancelOutcome::NotFound => {}
        }
        Ok(outcome)
    }

    /// The pool's counters.
    pub async fn stats(&self) -> PoolStats {
        let queued = self.inner.queue.queued().await;
        let mut stats = *self.inner.stats();
        match queued {
            Ok(queued) => stats.queued = queued,
            Err(err) => tracing::warn!(error = %err, "cannot count the queued jobs"),
        }
        stats
    }

    /// Stops the pool as `mode` says; returns once no worker runs.
    pub async fn stop(&self, mode: StopMode) {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::Release);
        match mode {
            StopMode::Stop => inner.draining.store(true, Ordering::Release),
            StopMode::Shutdown => inner.closing.cancel(),
            StopMode::Terminate => {
                inner.terminated.store(true, Ordering::Release);
                inner.closing.cancel();
                let name = &inner.options.name;
                match inner
                    .queue
                    .cancel_queued(name, "terminated", now_ms())
                    .await
                {
                    Ok(n) => inner.stats().cancelled += n,
                    Err(err) => tracing::warn!(error = %err, "cannot cancel the queued jobs"),
                }
                inner.cancel_all_local("terminated");
            }
        }
        inner.wake.notify_waiters();
        self.wait().await;
    }

    /// Gives up the jobs running here without finishing them, as a crash would (for a
    /// shutdown past its grace): their crash policy decides, now on a queue of this daemon's
    /// own, or when another daemon sharing it sees them.
    pub async fn abandon(&self) {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::Release);
        inner.abandoned.store(true, Ordering::Release);
        inner.closing.cancel();
        inner.cancel_all_local("abandoned");
        self.wait().await;
    }

    async fn wait(&self) {
        let inner = &self.inner;
        inner.workers.close();
        inner.workers.wait().await;
        inner.heartbeat_stop.cancel();
        inner.heartbeat.close();
        inner.heartbeat.wait().await;
    }
}

/// A worker: claims jobs until the pool closes (or, draining, until none submitted here is left).
async fn work(inner: Arc<Inner>) {
    loop {
        if inner.closing.is_cancelled() {
            return;
        }
        let draining = inner.draining.load(Ordering::Acquire);
        let name = inner.options.name.as_str();
        let token = fastrand::i64(1..);
        let claimed = inner
            .queue
            .claim(
                name,
                token,
                draining.then_some(name),
                now_ms(),
                inner.lease_until(),
            )
            .await;
        match claimed {
            Ok(Some(job)) => run(&inner, job, token).await,
            Ok(None) if draining => return,
            Ok(None) => {
                tokio::select! {
                    () = inner.wake.notified() => {}
                    () = tokio::time::sleep(inner.options.poll) => {}
                    () = inner.closing.cancelled() => return,
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot claim a job; trying again");
                tokio::select! {
                    () = tokio::time::sleep(inner.options.poll) => {}
                    () = inner.closing.cancelled() => return,
                }
            }
        }
    }
}

/// Renews the leases of the jobs running here, passes on cancellations asked elsewhere, and
/// settles the jobs of dead workers; until the last job here has ended.
async fn heartbeat(inner: Arc<Inner>) {
    let every = (inner.options.lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = inner.heartbeat_stop.cancelled() => return,
        }
        let held: Vec<(u64, i64)> = inner
            .running()
            .iter()
            .map(|(&id, job)| (id, job.token))
            .collect();
        match inner.queue.renew(&held, inner.lease_until()).await {
            Ok(renewal) => {
                for (id, cause) in renewal.cancels {
                    inner.cancel_local(id, &cause);
                }
                // Settled or taken over elsewhere: stop this run (its outcome is not written).
                for id in renewal.lost {
                    tracing::warn!(
                        job = id,
                        "lease lost (the job was settled or taken over); stopping this run"
                    );
                    inner.cancel_local(id, "lease lost");
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot renew the leases of running jobs"),
        }
        if inner.queue.shared() {
            recover(&inner, now_ms()).await;
        }
    }
}

/// Settles the running jobs whose lease ends before `before`.
async fn recover(inner: &Inner, before: u64) {
    match inner.queue.recover(before).await {
        Ok(recovered) if recovered.total() > 0 => {
            tracing::warn!(
                requeued = recovered.requeued,
                failed = recovered.failed,
                cancelled = recovered.cancelled,
                "settled jobs whose daemon stopped while running them"
            );
            inner.stats().recovered += recovered.total();
            inner.wake.notify_waiters();
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "cannot settle the jobs of stopped daemons"),
    }
}

/// Writes `info` under claim `token`; `false` when the job was taken over (this claim's lease
/// ran out) or the store could not be written even after a few tries — then the job, left
/// `running` without renewals, is settled by recovery once its lease runs out.
async fn save(inner: &Inner, token: i64, info: &JobInfo) -> bool {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=5 {
        match inner.queue.save(token, info).await {
            Ok(true) => return true,
            Ok(false) => {
                tracing::warn!(
                    job = info.id,
                    "job no longer held by this claim (its lease ran out and it was settled elsewhere); this run's outcome is dropped"
                );
                return false;
            }
            Err(err) => {
                tracing::warn!(job = info.id, attempt, error = %err, "cannot record the job's progress");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    false
}

/// Runs a claimed job to its end (or until it is given up).
async fn run(inner: &Arc<Inner>, job: Claimed, token: i64) {
    let Claimed { spec, mut info } = job;
    let id = info.id;
    let cancel = CancellationToken::new();
    let cause: Arc<Mutex<Option<String>>> = Arc::default();
    inner.running().insert(
        id,
        Running {
            token,
            cancel: cancel.clone(),
            cause: cause.clone(),
        },
    );
    // Claimed while the pool was being given up or terminated: that applies to it too.
    if inner.abandoned.load(Ordering::Acquire) {
        inner.cancel_local(id, "abandoned");
    } else if inner.terminated.load(Ordering::Acquire) {
        inner.cancel_local(id, "terminated");
    }
    inner.stats().in_flight += 1;
    let outcome = attempts(inner, token, &spec, &mut info, &cancel).await;
    inner.running().remove(&id);
    let elapsed = info
        .started_ms
        .map_or(0, |started| now_ms().saturating_sub(started));
    {
        let mut stats = inner.stats();
        stats.in_flight = stats.in_flight.saturating_sub(1);
    }
    if inner.abandoned.load(Ordering::Acquire) && matches!(outcome, Err(Ending::Cancelled)) {
        // Not the job's end: recovery decides, as after a crash.
        if let Err(err) = inner.queue.release(id, token).await {
            tracing::warn!(job = id, error = %err, "cannot give the job up");
        }
        if !inner.queue.shared() {
            // Only what was given up (lease 0): other workers may still be finishing theirs.
            recover(inner, 1).await;
        }
        return;
    }
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
            let cause = cause.lock().unwrap_or_else(PoisonError::into_inner).clone();
            info.cancel_cause = Some(cause.unwrap_or_else(|| "cancelled".to_owned()));
        }
    }
    if !save(inner, token, &info).await {
        return;
    }
    if let Some(observer) = inner.observer.get() {
        observer(&info);
    }
    let mut stats = inner.stats();
    stats.total_duration_ms = stats.total_duration_ms.saturating_add(elapsed);
    match info.state {
        JobState::Succeeded => stats.succeeded += 1,
        JobState::Failed => stats.failed += 1,
        _ => stats.cancelled += 1,
    }
}

/// The attempts of one claim: the first is counted already, each retry is counted and saved
/// before it starts (so an attempt cut by a crash counts).
async fn attempts(
    inner: &Inner,
    token: i64,
    spec: &JobSpec,
    info: &mut JobInfo,
    cancel: &CancellationToken,
) -> Result<Value, Ending> {
    let Some(task) = inner.tasks.get(&spec.task).cloned() else {
        return Err(Ending::Failed(JobError::new(
            "unknown_task",
            format!("this daemon has no task {:?}", spec.task),
            false,
        )));
    };
    let began = Instant::now();
    let deadline = spec.deadline_ms.map(|ms| {
        let spent = now_ms().saturating_sub(info.submitted_ms);
        began + Duration::from_millis(ms.saturating_sub(spent))
    });
    // A job taken over after a crash resumes its schedule where the attempts left it.
    let mut delays = spec
        .retry
        .delays()
        .skip(info.attempts.saturating_sub(1) as usize);
    loop {
        if cancel.is_cancelled() {
            return Err(Ending::Cancelled);
        }
        let error = match attempt_once(&task, spec, cancel, deadline).await {
            Ok(value) => return Ok(value),
            Err(Ending::Cancelled) => return Err(Ending::Cancelled),
            Err(Ending::Failed(error)) => error,
        };
        let retry = spec.retry.attempts_left(info.attempts) && spec.retry.retries(&error);
        let Some(wait) = retry.then(|| delays.next()).flatten() else {
            return Err(Ending::Failed(error));
        };
        if deadline.is_some_and(|d| Instant::now() + wait >= d) {
            return Err(Ending::Failed(JobError::new(
                "deadline",
                format!(
                    "the deadline leaves no time for another attempt; last error: {}",
                    error.message
                ),
                false,
            )));
        }
        tracing::info!(
            job = info.id,
            attempt = info.attempts,
            code = error.code,
            wait_ms = wait.as_millis() as u64,
            "job attempt failed; retrying"
        );
        info.error = Some(error);
        inner.stats().retries += 1;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return Err(Ending::Cancelled),
        }
        info.attempts += 1;
        if !save(inner, token, info).await {
            return Err(Ending::Cancelled);
        }
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

#[cfg(test)]
mod tests;
