//! Jobs: work the daemon runs for a client on a pool of workers — a plugin method called with
//! JSON, or a built-in task — with a retry policy (exponential backoff with jitter, for the errors
//! it names), a timeout per attempt and an overall deadline, cancellation with a cause, panic
//! safety, and pool metrics. The pool has three stop modes: `stop` (take nothing new, let what
//! was submitted finish, keep the results), `shutdown` (the same, then close) and `terminate`
//! (cancel everything now).
//!
//! Jobs are durable: they live in a [`queue::JobQueue`] — the daemon's store (SQLite, or
//! PostgreSQL shared by several daemons, which claim jobs with `FOR UPDATE SKIP LOCKED` so none
//! runs twice) or memory. A worker holds a lease on each job it runs and renews it; a job whose
//! daemon died (its lease ran out) is run again or failed as its [`CrashPolicy`] says.

pub mod pool;
pub mod queue;
pub mod tasks;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use pool::{Pool, StopMode};

use crate::metrics::JobGauges;

/// How a job retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt, milliseconds; it grows by `factor` each time.
    pub initial_ms: u64,
    /// Longest wait between attempts, milliseconds.
    pub max_delay_ms: u64,
    /// Growth of the wait.
    pub factor: f32,
    /// Randomise each wait (up to its full length), so retries of many jobs spread out.
    pub jitter: bool,
    /// Error codes that are retried; empty: the transient ones (plugin unavailable, timed out).
    /// `"*"` retries every error.
    pub retry_on: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_ms: 100,
            max_delay_ms: 10_000,
            factor: 2.0,
            jitter: true,
            retry_on: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Whether a job that started `attempts` attempts may start another (`max_attempts` of 0
    /// counts as 1). The job queue stores the same bound as the job's `max_attempts` column.
    pub fn attempts_left(&self, attempts: u32) -> bool {
        attempts < self.max_attempts()
    }

    /// Attempts in all, at least one.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// Whether `error` is retried under this policy.
    pub fn retries(&self, error: &JobError) -> bool {
        if self.retry_on.is_empty() {
            error.transient
        } else {
            self.retry_on.iter().any(|c| c == "*" || *c == error.code)
        }
    }

    /// The backoff schedule (the waits before attempts 2, 3, ...).
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        let mut builder = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.initial_ms))
            .with_max_delay(Duration::from_millis(
                self.max_delay_ms.max(self.initial_ms),
            ))
            .with_factor(self.factor.max(1.0))
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter {
            builder = builder.with_jitter();
        }
        backon::BackoffBuilder::build(builder)
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The task: `call` (a plugin method with JSON) or a built-in task's name.
    pub task: String,
    /// The task's input.
    #[serde(default)]
    pub input: Value,
    /// Retries.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Bound on each attempt, milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Bound on the whole job (attempts and waits), milliseconds from submission.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// What happens to the job when the daemon running it dies mid-attempt.
    #[serde(default)]
    pub on_crash: CrashPolicy,
}

/// What becomes of a job whose daemon stopped (crash, `kill -9`, shutdown past its grace) while
/// it ran: found when its lease runs out, or at once by the next daemon on a SQLite store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashPolicy {
    /// Queued again, if the retry policy has attempts left (the interrupted one counts).
    #[default]
    Retry,
    /// Failed with the code `lost`.
    Fail,
}

impl CrashPolicy {
    /// The name kept in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Fail => "fail",
        }
    }

    /// The policy named `name` (as kept in the store).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Retry, Self::Fail]
            .into_iter()
            .find(|policy| policy.as_str() == name)
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    /// A stable code (`timeout`, `panic`, `plugin_unavailable`, ...).
    pub code: String,
    /// What happened.
    pub message: String,
    /// Whether trying again may help (retried by default).
    pub transient: bool,
}

impl JobError {
    /// An error with its code.
    pub fn new(code: impl Into<String>, message: impl Into<String>, transient: bool) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            transient,
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// On a worker (or waiting between attempts).
    Running,
    /// Done, with a result.
    Succeeded,
    /// Done, with the last attempt's error.
    Failed,
    /// Cancelled, with a cause.
    Cancelled,
}

impl JobState {
    /// Every state, in the order a job goes through them.
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Whether the job has ended.
    #[cfg(test)]
    pub fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }
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
    /// Attempts started (an attempt cut by a crash counts).
    pub attempts: u32,
    /// When it was submitted (Unix milliseconds).
    pub submitted_ms: u64,
    /// The daemon it was submitted to.
    pub submitted_by: String,
    /// The daemon running it now, or that ran it last.
    pub worker: Option<String>,
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

impl pool::PoolStats {
    /// The counters `/metrics` shows.
    pub fn gauges(&self) -> JobGauges {
        JobGauges {
            submitted: self.submitted,
            rejected: self.rejected,
            succeeded: self.succeeded,
            failed: self.failed,
            cancelled: self.cancelled,
            retries: self.retries,
            in_flight: self.in_flight,
            queued: self.queued,
            recovered: self.recovered,
        }
    }
}

impl JobInfo {
    /// How long the job ran, from its first attempt's start to its end (zero if it never
    /// started).
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms.unwrap_or_default())
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
