//! The pool on tokio's paused clock: waits and timeouts take no real time, and their lengths
//! are checked exactly.

use std::sync::atomic::AtomicU32;

use serde_json::json;

use super::*;
use crate::jobs::RetryPolicy;
use crate::jobs::tasks::{Noop, Sleep};

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
    }
}

async fn finished(pool: &Pool, id: u64) -> JobInfo {
    loop {
        let info = pool.get(id).unwrap();
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
    let pool = Pool::new(2, 16, vec![flaky.clone()]);
    let mut job = spec("flaky", Value::Null);
    job.retry.initial_ms = 100;
    job.retry.factor = 2.0;
    let id = pool.submit(job).unwrap();
    let info = finished(&pool, id).await;
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.attempts, 3);
    assert_eq!(info.result, Some(json!({"attempt": 3})));
    let started = flaky.started.lock().unwrap().clone();
    // The clock's timer wheel ticks in milliseconds: a wait may end up to one tick late.
    within(started[1] - started[0], 100);
    within(started[2] - started[1], 200);
    let stats = pool.stats();
    assert_eq!((stats.succeeded, stats.retries), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_job_fails_after_its_last_attempt_or_on_an_error_it_does_not_retry() {
    let flaky = Arc::new(Flaky {
        succeed_on: 10,
        attempts: AtomicU32::new(0),
        started: Mutex::default(),
    });
    let pool = Pool::new(1, 16, vec![flaky.clone()]);
    let id = pool.submit(spec("flaky", Value::Null)).unwrap();
    let info = finished(&pool, id).await;
    assert_eq!((info.state, info.attempts), (JobState::Failed, 3));
    assert_eq!(info.error.unwrap().message, "attempt 3 failed");
    // Only the listed codes retry: this one is not listed.
    let mut job = spec("flaky", Value::Null);
    job.retry.retry_on = vec!["timeout".into()];
    let id = pool.submit(job).unwrap();
    assert_eq!(finished(&pool, id).await.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_its_timeout_is_cancelled_and_counts_as_a_transient_failure() {
    let pool = Pool::new(1, 16, vec![Arc::new(Sleep)]);
    let mut job = spec("sleep", json!({"ms": 60_000}));
    job.timeout_ms = Some(1_000);
    job.retry.max_attempts = 2;
    job.retry.initial_ms = 500;
    let began = Instant::now();
    let id = pool.submit(job).unwrap();
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
    let pool = Pool::new(1, 16, vec![flaky]);
    let mut job = spec("flaky", Value::Null);
    job.retry.max_attempts = 50;
    job.retry.initial_ms = 1_000;
    job.retry.factor = 1.0;
    job.deadline_ms = Some(3_500);
    let id = pool.submit(job).unwrap();
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
    let pool = Pool::new(1, 16, vec![Arc::new(Sleep)]);
    let running = pool.submit(spec("sleep", json!({"ms": 60_000}))).unwrap();
    let queued = pool.submit(spec("sleep", json!({"ms": 1}))).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(pool.get(running).unwrap().state, JobState::Running);
    assert!(pool.cancel(queued, "not needed any more"));
    assert!(pool.cancel(running, "operator asked"));
    let info = finished(&pool, running).await;
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(info.cancel_cause.as_deref(), Some("operator asked"));
    let info = finished(&pool, queued).await;
    assert_eq!(info.cancel_cause.as_deref(), Some("not needed any more"));
    assert!(
        !pool.cancel(running, "again"),
        "an ended job cannot be cancelled"
    );
    assert_eq!(pool.stats().cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_fails_its_job_with_the_message_and_the_worker_goes_on() {
    let pool = Pool::new(1, 16, vec![Arc::new(Panics), Arc::new(Noop)]);
    let mut job = spec("panics", Value::Null);
    job.retry.retry_on = vec!["*".into()];
    job.retry.max_attempts = 1;
    let id = pool.submit(job).unwrap();
    let info = finished(&pool, id).await;
    assert_eq!(info.state, JobState::Failed);
    let error = info.error.unwrap();
    assert_eq!(error.code, "panic");
    assert_eq!(error.message, "the task broke: index 7 out of range");
    let id = pool.submit(spec("noop", json!({"n": 1}))).unwrap();
    assert_eq!(finished(&pool, id).await.result, Some(json!({"n": 1})));
}

#[tokio::test(start_paused = true)]
async fn submissions_are_refused_with_the_reason() {
    let pool = Pool::new(1, 1, vec![Arc::new(Sleep)]);
    assert_eq!(
        pool.submit(spec("nope", Value::Null)),
        Err(SubmitError::UnknownTask("nope".into(), "sleep".into()))
    );
    pool.submit(spec("sleep", json!({"ms": 1_000}))).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    pool.submit(spec("sleep", json!({"ms": 1_000}))).unwrap();
    assert_eq!(
        pool.submit(spec("sleep", json!({"ms": 1_000}))),
        Err(SubmitError::Full(1))
    );
    assert_eq!(pool.stats().rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn stop_waits_for_every_submitted_job_and_keeps_the_results() {
    let pool = Pool::new(2, 16, vec![Arc::new(Sleep)]);
    let ids: Vec<u64> = (0..4)
        .map(|_| pool.submit(spec("sleep", json!({"ms": 1_000}))).unwrap())
        .collect();
    pool.stop(StopMode::Stop).await;
    for id in ids {
        assert_eq!(pool.get(id).unwrap().state, JobState::Succeeded);
    }
    assert_eq!(
        pool.submit(spec("sleep", json!({"ms": 1}))),
        Err(SubmitError::Stopping)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_then_forgets() {
    let pool = Pool::new(1, 16, vec![Arc::new(Sleep)]);
    let id = pool.submit(spec("sleep", json!({"ms": 1_000}))).unwrap();
    let began = Instant::now();
    pool.stop(StopMode::Shutdown).await;
    assert!(began.elapsed() >= Duration::from_millis(1_000));
    assert!(pool.get(id).is_none());
    assert_eq!(pool.stats().succeeded, 1);
}

#[tokio::test(start_paused = true)]
async fn terminate_cancels_running_and_queued_jobs_at_once() {
    let pool = Pool::new(1, 16, vec![Arc::new(Sleep)]);
    let running = pool.submit(spec("sleep", json!({"ms": 60_000}))).unwrap();
    let queued = pool.submit(spec("sleep", json!({"ms": 60_000}))).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let began = Instant::now();
    pool.stop(StopMode::Terminate).await;
    assert!(began.elapsed() < Duration::from_secs(1));
    for id in [running, queued] {
        let info = pool.get(id).unwrap();
        assert_eq!(info.state, JobState::Cancelled);
        assert_eq!(info.cancel_cause.as_deref(), Some("terminated"));
    }
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
