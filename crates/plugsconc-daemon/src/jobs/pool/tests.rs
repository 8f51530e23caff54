//! The pool on tokio's paused clock: waits and timeouts take no real time, and their lengths
//! are checked exactly.

use std::sync::atomic::AtomicU32;

use serde_json::json;

use super::*;
use crate::jobs::queue::MemoryQueue;
use crate::jobs::tasks::{Noop, Sleep};
use crate::jobs::{CrashPolicy, RetryPolicy};

/// Fails with a transient error until its `n`th attempt; records when each attempt started.
struct Flaky {
    succeed_on: u32,
    attempts: AtomicU32,
    started: Mutex<Vec<Instant>>,
}

#[tonic::async_trait]
impl Task for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn run(&self, _input: Value, _cancel: CancellationToken) -> Result<Value, JobError> {
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Instant::now());
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.succeed_on {
            Ok(json!({"attempt": n}))
        } else {
            Err(JobError::new(
                "plugin_unavailable",
                format!("attempt {n} failed"),
                true,
            ))
        }
    }
}

struct Panics;

#[tonic::async_trait]
impl Task for Panics {
    fn name(&self) -> &str {
        "panics"
    }

    async fn run(&self, _input: Value, _cancel: CancellationToken) -> Result<Value, JobError> {
        panic!("the task broke: index 7 out of range");
    }
}

/// `elapsed` is `ms`, give or take the timer wheel's few one-millisecond ticks.
fn within(elapsed: Duration, ms: u64) {
    assert!(
        elapsed >= Duration::from_millis(ms) && elapsed <= Duration::from_millis(ms + 5),
        "{elapsed:?}, expected {ms} ms"
    );
}

fn spec(task: &str, input: Value) -> JobSpec {
    JobSpec {
        task: task.into(),
        input,
        retry: RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        },
        timeout_ms: None,
        deadline_ms: None,
        on_crash: CrashPolicy::Retry,
    }
}

fn options(workers: usize, capacity: u64) -> PoolOptions {
    PoolOptions {
        workers,
        capacity,
        lease: Duration::from_secs(3),
        poll: Duration::from_millis(100),
        name: "here".into(),
    }
}

/// A pool named `here` on a queue of its own.
async fn pool(workers: usize, capacity: u64, tasks: Vec<Arc<dyn Task>>) -> Pool {
    Pool::start(
        options(workers, capacity),
        tasks,
        Arc::new(MemoryQueue::default()),
    )
    .await
}

/// Two `sleep` jobs of `ms` on a one-worker pool: the first running, the second queued behind it.
async fn running_and_queued(pool: &Pool, ms: u64) -> (u64, u64) {
    let running = pool.submit(spec("sleep", json!({"ms": ms}))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let queued = pool.submit(spec("sleep", json!({"ms": ms}))).await.unwrap();
    (running, queued)
}

async fn finished(pool: &Pool, id: u64) -> JobInfo {
    loop {
        let info = pool.get(id).await.unwrap().unwrap();
        if info.state.finished() {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_and_then_succeed() {
    let flaky = Arc::new(Flaky {
        succeed_on: 3,
        attempts: AtomicU32::new(0),
        started: Mutex::default(),
    });
    let pool = pool(2, 16, vec![flaky.clone()]).await;
    let mut job = spec("flaky", Value::Null);
    job.retry.initial_ms = 100;
    job.retry.factor = 2.0;
    let id = pool.submit(job).await.unwrap();
    let info = finished(&pool, id).await;
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.attempts, 3);
    assert_eq!(info.result, Some(json!({"attempt": 3})));
    let started = flaky.started.lock().unwrap().clone();
    // The clock's timer wheel ticks in milliseconds: a wait may end up to one tick late.
    within(started[1] - started[0], 100);
    within(started[2] - started[1], 200);
    let stats = pool.stats().await;
    assert_eq!((stats.succeeded, stats.retries), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_job_fails_after_its_last_attempt_or_on_an_error_it_does_not_retry() {
    let flaky = Arc::new(Flaky {
        succeed_on: 10,
        attempts: AtomicU32::new(0),
        started: Mutex::default(),
    });
    let pool = pool(1, 16, vec![flaky.clone()]).await;
    let id = pool.submit(spec("flaky", Value::Null)).await.unwrap();
    let info = finished(&pool, id).await;
    assert_eq!((info.state, info.attempts), (JobState::Failed, 3));
    assert_eq!(info.error.unwrap().message, "attempt 3 failed");
    // Only the listed codes retry: this one is not listed.
    let mut job = spec("flaky", Value::Null);
    job.retry.retry_on = vec!["timeout".into()];
    let id = pool.submit(job).await.unwrap();
    assert_eq!(finished(&pool, id).await.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_its_timeout_is_cancelled_and_counts_as_a_transient_failure() {
    let pool = pool(1, 16, vec![Arc::new(Sleep)]).await;
    let mut job = spec("sleep", json!({"ms": 60_000}));
    job.timeout_ms = Some(1_000);
    job.retry.max_attempts = 2;
    job.retry.initial_ms = 500;
    let began = Instant::now();
    let id = pool.submit(job).await.unwrap();
    let info = finished(&pool, id).await;
    assert_eq!((info.state, info.attempts), (JobState::Failed, 2));
    assert_eq!(info.error.unwrap().code, "timeout");
    // Two 1 s attempts and one 0.5 s wait, not a minute.
    within(began.elapsed(), 2_500);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_bounds_the_whole_job() {
    let flaky = Arc::new(Flaky {
        succeed_on: 100,
        attempts: AtomicU32::new(0),
        started: Mutex::default(),
    });
    let pool = pool(1, 16, vec![flaky]).await;
    let mut job = spec("flaky", Value::Null);
    job.retry.max_attempts = 50;
    job.retry.initial_ms = 1_000;
    job.retry.factor = 1.0;
    job.deadline_ms = Some(3_500);
    let id = pool.submit(job).await.unwrap();
    let info = finished(&pool, id).await;
    assert_eq!(info.state, JobState::Failed);
    assert_eq!(info.error.unwrap().code, "deadline");
    assert_eq!(
        info.attempts, 4,
        "attempts at 0, 1, 2 and 3 s; the next wait passes 3.5 s"
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_keeps_its_cause() {
    let pool = pool(1, 16, vec![Arc::new(Sleep)]).await;
    let running = pool
        .submit(spec("sleep", json!({"ms": 60_000})))
        .await
        .unwrap();
    let queued = pool.submit(spec("sleep", json!({"ms": 1}))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        pool.get(running).await.unwrap().unwrap().state,
        JobState::Running
    );
    assert_eq!(
        pool.cancel(queued, "not needed any more").await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        pool.cancel(running, "operator asked").await.unwrap(),
        CancelOutcome::Requested
    );
    let info = finished(&pool, running).await;
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(info.cancel_cause.as_deref(), Some("operator asked"));
    let info = finished(&pool, queued).await;
    assert_eq!(info.cancel_cause.as_deref(), Some("not needed any more"));
    assert_eq!(
        pool.cancel(running, "again").await.unwrap(),
        CancelOutcome::Ended(JobState::Cancelled),
        "an ended job cannot be cancelled"
    );
    assert_eq!(
        pool.cancel(999, "who?").await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(pool.stats().await.cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_fails_its_job_with_the_message_and_the_worker_goes_on() {
    let pool = pool(1, 16, vec![Arc::new(Panics), Arc::new(Noop)]).await;
    let mut job = spec("panics", Value::Null);
    job.retry.retry_on = vec!["*".into()];
    job.retry.max_attempts = 1;
    let id = pool.submit(job).await.unwrap();
    let info = finished(&pool, id).await;
    assert_eq!(info.state, JobState::Failed);
    let error = info.error.unwrap();
    assert_eq!(error.code, "panic");
    assert_eq!(error.message, "the task broke: index 7 out of range");
    let id = pool.submit(spec("noop", json!({"n": 1}))).await.unwrap();
    assert_eq!(finished(&pool, id).await.result, Some(json!({"n": 1})));
}

#[tokio::test(start_paused = true)]
async fn submissions_are_refused_with_the_reason() {
    let pool = pool(1, 1, vec![Arc::new(Sleep)]).await;
    let unknown = pool.submit(spec("nope", Value::Null)).await;
    assert!(
        matches!(&unknown, Err(SubmitError::UnknownTask(task, known)) if task == "nope" && known == "sleep"),
        "{unknown:?}"
    );
    pool.submit(spec("sleep", json!({"ms": 1_000})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    pool.submit(spec("sleep", json!({"ms": 1_000})))
        .await
        .unwrap();
    let full = pool.submit(spec("sleep", json!({"ms": 1_000}))).await;
    assert!(matches!(full, Err(SubmitError::Full(1))), "{full:?}");
    assert_eq!(pool.stats().await.rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn stop_runs_every_job_submitted_here_and_keeps_the_results() {
    let pool = pool(2, 16, vec![Arc::new(Sleep)]).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            pool.submit(spec("sleep", json!({"ms": 1_000})))
                .await
                .unwrap(),
        );
    }
    pool.stop(StopMode::Stop).await;
    for id in ids {
        assert_eq!(
            pool.get(id).await.unwrap().unwrap().state,
            JobState::Succeeded
        );
    }
    let refused = pool.submit(spec("sleep", json!({"ms": 1}))).await;
    assert!(matches!(refused, Err(SubmitError::Stopping)), "{refused:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_the_running_jobs_and_leaves_the_queued_ones_queued() {
    let pool = pool(1, 16, vec![Arc::new(Sleep)]).await;
    let (running, queued) = running_and_queued(&pool, 1_000).await;
    let began = Instant::now();
    pool.stop(StopMode::Shutdown).await;
    assert!(began.elapsed() < Duration::from_millis(1_000) + Duration::from_millis(10));
    let state = |id| {
        let pool = pool.clone();
        async move { pool.get(id).await.unwrap().unwrap().state }
    };
    assert_eq!(state(running).await, JobState::Succeeded);
    assert_eq!(
        state(queued).await,
        JobState::Queued,
        "kept for the next start"
    );
    assert_eq!(pool.stats().await.succeeded, 1);
}

#[tokio::test(start_paused = true)]
async fn terminate_cancels_running_and_queued_jobs_at_once() {
    let pool = pool(1, 16, vec![Arc::new(Sleep)]).await;
    let (running, queued) = running_and_queued(&pool, 60_000).await;
    let began = Instant::now();
    pool.stop(StopMode::Terminate).await;
    assert!(began.elapsed() < Duration::from_secs(1));
    for id in [running, queued] {
        let info = pool.get(id).await.unwrap().unwrap();
        assert_eq!(info.state, JobState::Cancelled);
        assert_eq!(info.cancel_cause.as_deref(), Some("terminated"));
    }
    assert_eq!(pool.stats().await.cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_job_is_queued_again_with_its_attempt_counted() {
    let queue = Arc::new(MemoryQueue::default());
    let pool = Pool::start(options(1, 16), vec![Arc::new(Sleep)], queue.clone()).await;
    let id = pool
        .submit(spec("sleep", json!({"ms": 60_000})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    pool.abandon().await;
    let info = queue.get(id).await.unwrap().unwrap();
    assert_eq!(
        (info.state, info.attempts),
        (JobState::Queued, 1),
        "{info:?}"
    );
    assert_eq!(info.cancel_cause, None);
}

/// Jobs a daemon (`dead`) claimed before it died: one retried, one failed by its policy, one
/// whose cancellation had been asked.
async fn orphans(queue: &MemoryQueue, lease_until: u64) -> [u64; 3] {
    let mut ids = [0; 3];
    for (n, on_crash) in [CrashPolicy::Retry, CrashPolicy::Fail, CrashPolicy::Retry]
        .into_iter()
        .enumerate()
    {
        let mut job = spec("noop", json!({"n": n}));
        job.on_crash = on_crash;
        ids[n] = queue.insert(&job, "dead", now_ms()).await.unwrap();
        let claimed = queue
            .claim("dead", 7, None, now_ms(), lease_until)
            .await
            .unwrap();
        assert_eq!(claimed.map(|c| c.info.id), Some(ids[n]));
    }
    assert_eq!(
        queue
            .cancel(ids[2], "asked before the crash", now_ms())
            .await
            .unwrap(),
        CancelOutcome::Requested
    );
    ids
}

async fn check_orphans(pool: &Pool, [retried, failed, cancelled]: [u64; 3]) {
    let info = finished(pool, retried).await;
    assert_eq!(
        (info.state, info.attempts, info.worker.as_deref()),
        (JobState::Succeeded, 2, Some("here")),
        "{info:?}"
    );
    let info = finished(pool, failed).await;
    assert_eq!((info.state, info.attempts), (JobState::Failed, 1));
    assert_eq!(info.error.map(|e| e.code).as_deref(), Some("lost"));
    let info = finished(pool, cancelled).await;
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(info.cancel_cause.as_deref(), Some("asked before the crash"));
    assert_eq!(pool.stats().await.recovered, 3);
}

#[tokio::test(start_paused = true)]
async fn on_a_queue_of_its_own_the_pool_settles_what_the_previous_daemon_left_running() {
    let queue = Arc::new(MemoryQueue::default());
    // A lease far in the future: a queue no one else uses does not wait for it.
    let ids = orphans(&queue, u64::MAX / 2).await;
    let pool = Pool::start(options(1, 16), vec![Arc::new(Noop)], queue).await;
    check_orphans(&pool, ids).await;
}

#[tokio::test(start_paused = true)]
async fn on_a_shared_queue_a_dead_daemons_jobs_are_settled_once_their_lease_ran_out() {
    let queue = Arc::new(MemoryQueue::new_shared());
    let live = orphans(&queue, u64::MAX / 2).await;
    let expired = orphans(&queue, now_ms().saturating_sub(1)).await;
    let pool = Pool::start(options(1, 16), vec![Arc::new(Noop)], queue.clone()).await;
    check_orphans(&pool, expired).await;
    // A daemon whose lease still runs is alive: its jobs stay its own.
    for id in live {
        let info = queue.get(id).await.unwrap().unwrap();
        assert_eq!(
            (info.state, info.worker.as_deref()),
            (JobState::Running, Some("dead"))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_asked_on_another_daemon_reaches_the_worker_with_its_lease_renewal() {
    let queue = Arc::new(MemoryQueue::new_shared());
    let pool = Pool::start(options(1, 16), vec![Arc::new(Sleep)], queue.clone()).await;
    let id = pool
        .submit(spec("sleep", json!({"ms": 600_000})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    // What the other daemon's API does: only the queue is told.
    assert_eq!(
        queue
            .cancel(id, "cancelled elsewhere", now_ms())
            .await
            .unwrap(),
        CancelOutcome::Requested
    );
    let info = finished(&pool, id).await;
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(info.cancel_cause.as_deref(), Some("cancelled elsewhere"));
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_job_was_taken_over_does_not_overwrite_the_new_run() {
    let queue = MemoryQueue::new_shared();
    let job = spec("noop", Value::Null);
    let id = queue.insert(&job, "a", now_ms()).await.unwrap();
    let first = queue
        .claim("a", 1, None, now_ms(), 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(queue.recover(now_ms()).await.unwrap().requeued, 1);
    let second = queue
        .claim("a", 2, None, now_ms(), u64::MAX / 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((second.info.id, second.info.attempts), (id, 2));
    let mut late = first.info;
    late.state = JobState::Succeeded;
    // Even on the same daemon: the first claim's lease is gone, the second claim holds it.
    assert!(
        !queue.save(1, &late).await.unwrap(),
        "the first claim's lease is gone"
    );
    assert!(queue.save(2, &second.info).await.unwrap());
    assert!(
        queue
            .claim("c", 3, None, now_ms(), 0)
            .await
            .unwrap()
            .is_none(),
        "claimed once"
    );
}

#[test]
fn jittered_delays_stay_within_the_schedule() {
    let policy = RetryPolicy {
        max_attempts: 5,
        initial_ms: 100,
        max_delay_ms: 1_000,
        factor: 2.0,
        jitter: true,
        retry_on: Vec::new(),
    };
    let delays: Vec<Duration> = policy.delays().collect();
    assert_eq!(delays.len(), 4);
    for (delay, base) in delays.iter().zip([100u64, 200, 400, 800]) {
        assert!(
            *delay >= Duration::from_millis(base) && *delay <= Duration::from_millis(base * 2),
            "{delay:?} for a base of {base} ms"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_lease_was_lost_is_stopped_and_its_outcome_dropped() {
    let queue = Arc::new(MemoryQueue::new_shared());
    let pool = Pool::start(options(1, 16), vec![Arc::new(Sleep)], queue.clone()).await;
    let id = pool
        .submit(spec("sleep", json!({"ms": 600_000})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    // Another daemon's recovery, as if this one had stalled past its lease.
    assert_eq!(queue.recover(u64::MAX).await.unwrap().requeued, 1);
    // The next renewal finds the claim gone: the run stops and the job is claimed anew.
    let info = loop {
        let info = queue.get(id).await.unwrap().unwrap();
        if info.attempts == 2 && info.state == JobState::Running {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(info.cancel_cause, None, "the stopped run wrote nothing");
    let stats = pool.stats().await;
    assert_eq!((stats.cancelled, stats.failed), (0, 0), "{stats:?}");
}
