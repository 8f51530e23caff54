//! What a job can run: the [`Task`] trait, the built-in tasks (`noop`, `sleep`) and `call`, which
//! invokes a unary method of a plugin with a JSON body, as the call endpoint does.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::JobError;
use crate::calls::{self, CallError, Caller};

/// Work a job runs. `cancel` fires when the job is cancelled or its attempt timed out.
#[tonic::async_trait]
pub trait Task: Send + Sync + 'static {
    /// The name jobs ask for.
    fn name(&self) -> &str;
    /// Runs one attempt.
    async fn run(&self, input: Value, cancel: CancellationToken) -> Result<Value, JobError>;
}

/// `noop`: answers its input (for measuring the pool itself).
#[derive(Debug)]
pub struct Noop;

#[tonic::async_trait]
impl Task for Noop {
    fn name(&self) -> &str {
        "noop"
    }

    async fn run(&self, input: Value, _cancel: CancellationToken) -> Result<Value, JobError> {
        Ok(input)
    }
}

/// `sleep`: waits `{"ms": n}`, or until cancelled.
#[derive(Debug)]
pub struct Sleep;

#[tonic::async_trait]
impl Task for Sleep {
    fn name(&self) -> &str {
        "sleep"
    }

    async fn run(&self, input: Value, cancel: CancellationToken) -> Result<Value, JobError> {
        let ms = input["ms"].as_u64().ok_or_else(|| {
            JobError::new("bad_input", "sleep needs {\"ms\": <milliseconds>}", false)
        })?;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({"slept_ms": ms})),
            () = cancel.cancelled() => Err(JobError::new("cancelled", "cancelled while sleeping", false)),
        }
    }
}

/// `call`: `{"plugin": "kv", "method": "kv.KV/Get", "body": {...}}` — a unary method of a running
/// plugin, JSON in and out. An unavailable plugin, a call past its execution limit or a gRPC
/// error from the plugin is transient (retried by default); a bad request is not.
pub struct Call {
    /// What the call endpoint uses: the registry and the cached descriptors.
    pub caller: Caller,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Call")
    }
}

#[tonic::async_trait]
impl Task for Call {
    fn name(&self) -> &str {
        "call"
    }

    async fn run(&self, input: Value, _cancel: CancellationToken) -> Result<Value, JobError> {
        let field = |name: &str| {
            input[name].as_str().map(str::to_owned).ok_or_else(|| {
                JobError::new(
                    "bad_input",
                    format!("call needs {{\"plugin\": ..., \"method\": \"package.Service/Method\", \"body\": {{...}}}}; {name:?} is missing"),
                    false,
                )
            })
        };
        let (plugin, method) = (field("plugin")?, field("method")?);
        let body = input
            .get("body")
            .cloned()
            .unwrap_or_else(|| json!({}))
            .to_string();
        let (_, response) = calls::invoke(&self.caller, &plugin, &method, &body).await?;
        Ok(response)
    }
}

/// A failed call keeps the code and message the call endpoint reports, so `retry_on` names the
/// same codes; what is transient is the call error's to say.
impl From<CallError> for JobError {
    fn from(err: CallError) -> Self {
        JobError::new(err.code(), err.to_string(), err.is_transient())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_is_retried_by_default_only_when_transient() {
        let retried: Vec<String> = CallError::one_of_each()
            .into_iter()
            .map(JobError::from)
            .filter(|err| crate::jobs::RetryPolicy::default().retries(err))
            .map(|err| err.code)
            .collect();
        assert_eq!(
            retried,
            ["plugin_unavailable", "plugin_timeout", "plugin_error"]
        );
    }
}
