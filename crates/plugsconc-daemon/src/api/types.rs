//! The bodies of the REST API: every request and reply the daemon's routes read or answer, as
//! the daemon serialises them and the CLI parses them, with their OpenAPI schemas. The field
//! names are the wire's; changing one breaks every client.
//!
//! `serde_json::Value` appears only where the content is free-form: a plugin's request and
//! reply (proto3 JSON of whatever method was called), a job's input and result (the task's
//! own), a log record (the JSON line as logged).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The stable code and the message of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `plugin_not_found`, `token_required`, `queue_full`, ...
    pub code: String,
    /// For people: what was wrong with the request and how to fix it.
    pub message: String,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plugin {
    /// Unique name.
    pub name: String,
    /// Contract type; `null` when the manifest could not be read.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Version; `null` when unknown.
    pub version: Option<String>,
    /// `process` or `builtin`.
    pub runtime: String,
    /// discovered, invalid, disabled, starting, ready, degraded, stopped or failed.
    pub status: String,
    /// Why it has that status (errors, operator actions, a rejected reload).
    pub reason: Option<String>,
    /// One line.
    pub description: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Restarts after crashes since the plugin was discovered or enabled.
    pub restarts: u32,
    /// Successful hot reloads.
    pub reloads: u32,
    /// Hex SHA-256 of the manifest (process plugins).
    pub manifest_sha256: Option<String>,
    /// What the OS sandbox enforces on the running (or last) process.
    pub sandbox: Option<Sandbox>,
    /// The last resource sample of the running process.
    pub usage: Option<Usage>,
    /// The HTTP endpoints the plugin serves under `/plugins/{name}`, as the catalog store
    /// records them.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// One HTTP endpoint of a plugin, served at `/plugins/{name}{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// Path under `/plugins/{name}`, starting with `/`.
    pub path: String,
}

impl From<&plugsconc_host::PluginInfo> for Plugin {
    fn from(info: &plugsconc_host::PluginInfo) -> Self {
        Self {
            name: info.name.clone(),
            kind: info.kind.clone(),
            version: info.version.as_ref().map(ToString::to_string),
            runtime: info.runtime.as_str().to_owned(),
            status: info.status.as_str().to_owned(),
            reason: info.reason.clone(),
            description: info.description.clone(),
            tags: info.tags.clone(),
            pid: info.pid,
            restarts: info.restarts,
            reloads: info.reloads,
            manifest_sha256: info.manifest_sha256.clone(),
            sandbox: info.sandbox.as_ref().map(Sandbox::from),
            usage: info.usage.as_ref().map(Usage::from),
            endpoints: Vec::new(),
        }
    }
}

/// What confines a running plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    /// Protections in force.
    pub enforced: Vec<String>,
    /// Protections this kernel lacks.
    pub missing: Vec<String>,
    /// Parts of the grants the OS cannot check (the host services still do).
    pub unenforced: Vec<String>,
}

impl From<&plugsconc_host::sandbox::Protections> for Sandbox {
    fn from(p: &plugsconc_host::sandbox::Protections) -> Self {
        Self {
            enforced: p.enforced.clone(),
            missing: p.missing.clone(),
            unenforced: p.unenforced.clone(),
        }
    }
}

/// One resource sample of a plugin process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// CPU time used so far, user + system, seconds.
    pub cpu_seconds: f64,
    /// CPU use since the previous sample, percent of one core (`null` on the first sample).
    pub cpu_percent: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_files: u64,
    /// Direct child processes.
    pub children: u64,
}

impl From<&plugsconc_host::monitor::Usage> for Usage {
    fn from(u: &plugsconc_host::monitor::Usage) -> Self {
        Self {
            cpu_seconds: u.cpu_seconds,
            cpu_percent: u.cpu_percent,
            rss_bytes: u.rss_bytes,
            threads: u.threads,
            open_files: u.open_files,
            children: u.children,
        }
    }
}

/// `GET /api/v1/plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PluginList {
    /// The matching plugins.
    pub plugins: Vec<Plugin>,
    /// How many.
    pub count: usize,
}

/// `GET /api/v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
}

/// `GET /api/v1/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// Always `true` once the daemon answers: the catalog is loaded before it listens.
    pub ready: bool,
    /// Plugins in the catalog.
    pub plugins: usize,
}

/// `GET /api/v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Plugins in the catalog.
    pub plugins: usize,
    /// Plugins by status (only the statuses some plugin has).
    pub by_status: BTreeMap<String, u64>,
    /// Plugin calls.
    pub calls: u64,
    /// Plugin calls that failed.
    pub errors: u64,
    /// Restarts of every plugin.
    pub restarts: u64,
    /// Hot reloads of every plugin.
    pub reloads: u64,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// `sqlite` or `postgres`.
    pub store: String,
}

/// What a rescan did to one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Nothing to do.
    Unchanged,
    /// A new plugin entered the catalog.
    Added,
    /// A plugin left it.
    Removed,
    /// Its entry changed (not running, nothing to swap).
    Updated,
    /// A new version was started beside the old one and swapped in.
    Reloaded,
    /// Put off (`reason` says until when).
    Deferred,
    /// The new version was refused; the old one keeps serving (`reason` says why).
    Rejected,
}

/// The plugin a change is about: its name or, when a built-in plugin is reloaded (nothing on
/// disk to rescan), its whole catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ChangedPlugin {
    /// Its name.
    Name(String),
    /// Its catalog entry.
    Entry(Box<Plugin>),
}

/// One change of a rescan: `POST /api/v1/plugins/{name}/reload`, and each of
/// `POST /api/v1/reload`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// What happened.
    pub change: ChangeKind,
    /// Which plugin (absent when nothing changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<ChangedPlugin>,
    /// Why it was deferred or rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&plugsconc_host::registry::Change> for Change {
    fn from(change: &plugsconc_host::registry::Change) -> Self {
        use plugsconc_host::registry::Change as C;
        let named = |change, name: &String, reason: Option<&String>| Self {
            change,
            plugin: Some(ChangedPlugin::Name(name.clone())),
            reason: reason.cloned(),
        };
        match change {
            C::Unchanged => Self {
                change: ChangeKind::Unchanged,
                plugin: None,
                reason: None,
            },
            C::Added(name) => named(ChangeKind::Added, name, None),
            C::Removed(name) => named(ChangeKind::Removed, name, None),
            C::Updated(name) => named(ChangeKind::Updated, name, None),
            C::Reloaded(name) => named(ChangeKind::Reloaded, name, None),
            C::Deferred { name, reason } => named(ChangeKind::Deferred, name, Some(reason)),
            C::Rejected { name, reason } => named(ChangeKind::Rejected, name, Some(reason)),
        }
    }
}

impl ChangeKind {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Updated => "updated",
            Self::Reloaded => "reloaded",
            Self::Deferred => "deferred",
            Self::Rejected => "rejected",
        }
    }
}

/// `POST /api/v1/reload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChangeList {
    /// Every change the rescan of the plugins folder made.
    pub changes: Vec<Change>,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditLog {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
}

/// Who changed what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Who (`api@<daemon>`, `watcher@<daemon>`, ...).
    pub actor: String,
    /// What (`enable`, `disable`, `version`, `install`, ...).
    pub action: String,
    /// Which plugin.
    pub plugin: String,
    /// Details (the version and hashes for `version`).
    pub detail: String,
}

impl From<crate::store::AuditEntry> for AuditEntry {
    fn from(e: crate::store::AuditEntry) -> Self {
        Self {
            at_ms: e.at_ms,
            actor: e.actor,
            action: e.action,
            plugin: e.plugin,
            detail: e.detail,
        }
    }
}

/// `POST /api/v1/jobs`: a job to run. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSubmission {
    /// `call`, `noop` or `sleep`.
    pub task: String,
    /// The task's input, free-form: `call` takes `{plugin, method, body}`, `sleep` `{ms}`.
    #[serde(default)]
    pub input: Value,
    /// Attempts and the delays between them (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySubmission>,
    /// Bound on each attempt, milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Bound on the whole job, milliseconds.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// What a job cut by its daemon's death does (default `retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_crash: Option<OnCrash>,
}

/// What becomes of a job whose daemon died while it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnCrash {
    /// Run it again (the attempt counts).
    Retry,
    /// Fail it.
    Fail,
}

/// A job's retry policy; an absent field keeps its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySubmission {
    /// Attempts in all (default 3; 1: no retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Wait before the second attempt, milliseconds (default 100); it grows by `factor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_ms: Option<u64>,
    /// Longest wait between attempts, milliseconds (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Growth of the wait (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f32>,
    /// Randomise each wait (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
    /// Error codes that are retried; empty or absent: the transient ones; `"*"`: every error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
}

/// `POST /api/v1/jobs` (202).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    /// The new job's id.
    pub id: u64,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

impl From<crate::jobs::JobState> for JobState {
    fn from(state: crate::jobs::JobState) -> Self {
        use crate::jobs::JobState as S;
        match state {
            S::Queued => Self::Queued,
            S::Running => Self::Running,
            S::Succeeded => Self::Succeeded,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

/// Why a job's attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// A stable code (`timeout`, `panic`, `plugin_unavailable`, ...).
    pub code: String,
    /// What happened.
    pub message: String,
    /// Whether trying again may help.
    pub transient: bool,
}

/// One job: `GET /api/v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
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
    /// First attempt's start (Unix milliseconds).
    pub started_ms: Option<u64>,
    /// End (Unix milliseconds).
    pub finished_ms: Option<u64>,
    /// From the first attempt's start to the end, milliseconds.
    pub duration_ms: Option<u64>,
    /// The task's result once succeeded, free-form (a `call` job's is the plugin's reply).
    pub result: Option<Value>,
    /// The last error, once failed (or of the last failed attempt while retrying).
    pub error: Option<JobError>,
    /// Why it was cancelled.
    pub cancel_cause: Option<String>,
}

impl From<crate::jobs::JobInfo> for Job {
    fn from(job: crate::jobs::JobInfo) -> Self {
        Self {
            id: job.id,
            task: job.task,
            state: job.state.into(),
            attempts: job.attempts,
            submitted_ms: job.submitted_ms,
            submitted_by: job.submitted_by,
            worker: job.worker,
            started_ms: job.started_ms,
            finished_ms: job.finished_ms,
            duration_ms: job.duration_ms,
            result: job.result,
            error: job.error.map(|e| JobError {
                code: e.code,
                message: e.message,
                transient: e.transient,
            }),
            cancel_cause: job.cancel_cause,
        }
    }
}

/// `GET /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// How many.
    pub count: usize,
    /// Newest first.
    pub jobs: Vec<Job>,
}

/// `POST /api/v1/jobs/{id}/cancel`: an optional body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CancelRequest {
    /// Why (kept with the job); "cancelled through the API" when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// `POST /api/v1/jobs/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cancelling {
    /// The job.
    pub id: u64,
    /// Always `true`: the job is cancelled, or will be at its next check.
    pub cancelling: bool,
    /// The cause kept with the job.
    pub cause: String,
}

/// `GET /api/v1/jobs/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStats {
    /// This daemon's name (the `worker` of the jobs it runs).
    pub name: String,
    /// Its pool's counters.
    pub pool: PoolCounters,
    /// Mean duration of the jobs finished here, milliseconds; `null` before the first.
    pub mean_duration_ms: Option<f64>,
}

/// Counters of a daemon's job pool (`queued` is the whole queue's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolCounters {
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
    /// Jobs of dead workers settled by this daemon.
    pub recovered: u64,
    /// Sum of finished jobs' durations, milliseconds.
    pub total_duration_ms: u64,
}

impl From<crate::jobs::pool::PoolStats> for PoolCounters {
    fn from(s: crate::jobs::pool::PoolStats) -> Self {
        Self {
            workers: s.workers,
            submitted: s.submitted,
            rejected: s.rejected,
            succeeded: s.succeeded,
            failed: s.failed,
            cancelled: s.cancelled,
            retries: s.retries,
            in_flight: s.in_flight,
            queued: s.queued,
            recovered: s.recovered,
            total_duration_ms: s.total_duration_ms,
        }
    }
}

/// Where a trusted publisher comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PublisherSource {
    /// `security.trusted_publishers` (not removable through the API).
    Config,
    /// Added through the API, kept in the store.
    Store,
}

/// A trusted publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublisherEntry {
    /// Its name.
    pub name: String,
    /// Its minisign key id.
    pub key_id: String,
    /// Where it comes from.
    pub source: PublisherSource,
}

/// `GET /api/v1/publishers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublisherList {
    /// Every trusted publisher.
    pub publishers: Vec<PublisherEntry>,
}

/// `POST /api/v1/publishers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddPublisher {
    /// Letters, digits, `-` and `_`.
    pub name: String,
    /// The minisign `.pub` file's text.
    pub key: String,
}

/// `POST /api/v1/publishers` (200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublisherAdded {
    /// Its name.
    pub name: String,
    /// Its minisign key id.
    pub key_id: String,
}

/// `POST /api/v1/publishers/{name}/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublisherRemoved {
    /// The publisher no longer trusted.
    pub removed: String,
}

/// `POST /api/v1/plugins/install` with `Content-Type: application/json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstallFromPath {
    /// A plugin folder or a `.tar.gz` bundle on the daemon's machine (absolute, or relative to
    /// the daemon's working folder).
    #[schema(value_type = String)]
    pub path: PathBuf,
}

/// `POST /api/v1/plugins/install`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Installed {
    /// The installed plugin's catalog entry (`null` if it left the catalog meanwhile).
    pub plugin: Option<Plugin>,
    /// Whether it replaced an installed version (`?replace=true`).
    pub replaced: bool,
    /// The signature verdict (signed by whom, or why unsigned was allowed).
    pub signature: String,
    /// What the catalog did, for the operator.
    pub change: String,
}

/// `POST /api/v1/plugins/{name}/uninstall`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Uninstalled {
    /// The plugin removed.
    pub uninstalled: String,
}

/// `POST /api/v1/plugins/{name}/call/{service}/{method}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CallReply {
    /// The plugin called.
    pub plugin: String,
    /// The method's full name, `package.Service/Method`.
    pub method: String,
    /// The reply message in proto3 JSON, free-form: whatever the method answers.
    pub response: Value,
}

/// `GET /api/v1/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    /// Oldest first.
    pub records: Vec<LogRecord>,
    /// The last record's id (the `after` of the next page); `after` itself when there are none.
    pub next: i64,
}

/// One record of the log queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogRecord {
    /// Its id, increasing.
    pub id: i64,
    /// The JSON line as logged (free-form: `timestamp`, `level`, `fields`, ...), or the line as
    /// a string when it is not JSON.
    pub record: Value,
}
