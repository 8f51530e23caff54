//! `plugsconc jobs submit|get|list|cancel|watch`: jobs on the running daemon (`--daemon`, else
//! the one its data folder's `daemon.json` names, else `api.listen`; the token in its data
//! folder).

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use plugsconc_daemon::api::types::{
    CancelRequest, Cancelling, Job, JobList, JobState, JobSubmission, RetrySubmission, Submitted,
};
use serde_json::{Value, json};
use tonic::codegen::Bytes;
use tonic::codegen::http::Method;

use super::client::{Daemon, encode};

/// Arguments of `jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
    /// The daemon's configuration (for its address and data folder).
    #[command(flatten)]
    config: super::ConfigFlags,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Submit a job (or `--count` copies) and print the ids; `--watch` follows them.
    Submit(SubmitArgs),
    /// One job: state, attempts, timings, result or error.
    Get {
        /// The job's id.
        id: u64,
    },
    /// The jobs, newest first.
    List {
        /// Only jobs in this state (queued, running, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
    },
    /// Cancel a job.
    Cancel {
        /// The job's id.
        id: u64,
        /// Why (kept with the job).
        #[arg(long)]
        cause: Option<String>,
    },
    /// Follow jobs until they end, with a progress bar; fails if any failed.
    Watch {
        /// The jobs' ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// The task: `call` (with --plugin, --method, --body), `noop` or `sleep`.
    task: String,
    /// The task's input as JSON (for `call`, built from --plugin/--method/--body instead).
    #[arg(long, default_value = "{}")]
    input: String,
    /// `call`: the plugin.
    #[arg(long)]
    plugin: Option<String>,
    /// `call`: the method, `package.Service/Method`.
    #[arg(long)]
    method: Option<String>,
    /// `call`: the request as JSON.
    #[arg(long, default_value = "{}")]
    body: String,
    /// Attempts in all.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Bound on each attempt, milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Bound on the whole job, milliseconds.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// How many copies to submit.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Follow the submitted jobs until they end.
    #[arg(long)]
    watch: bool,
}

/// Runs the subcommand on the daemon `address` (`--daemon`) names, else the one found.
pub async fn run(args: JobsArgs, address: Option<&str>) -> anyhow::Result<()> {
    let loaded = args.config.load()?;
    let daemon = Daemon::find(&loaded.config, address).await?.with_context(|| {
        format!(
            "no daemon answers at the address in {} or at {} (start one with `plugsconc serve`, or name it with --daemon host:port)",
            loaded.config.directories.data_dir.join(plugsconc_daemon::locator::FILE).display(),
            loaded.config.api.listen
        )
    })?;
    match args.command {
        JobsCommand::Submit(submit) => {
            let ids = submit_jobs(&daemon, &submit).await?;
            if submit.watch {
                watch(&daemon, &ids).await
            } else {
                for id in ids {
                    println!("{id}");
                }
                Ok(())
            }
        }
        JobsCommand::Get { id } => {
            let job: Job = daemon
                .call(
                    Method::GET,
                    &format!("/api/v1/jobs/{id}"),
                    None,
                    Bytes::new(),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            Ok(())
        }
        JobsCommand::List { state } => {
            let query = state.map_or_else(String::new, |s| format!("?state={}", encode(&s)));
            let list: JobList = daemon
                .call(
                    Method::GET,
                    &format!("/api/v1/jobs{query}"),
                    None,
                    Bytes::new(),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&list.jobs)?);
            Ok(())
        }
        JobsCommand::Cancel { id, cause } => {
            let _: Cancelling = daemon
                .call_json(
                    Method::POST,
                    &format!("/api/v1/jobs/{id}/cancel"),
                    &CancelRequest { cause },
                )
                .await?;
            println!("cancelling job {id}");
            Ok(())
        }
        JobsCommand::Watch { ids } => watch(&daemon, &ids).await,
    }
}

async fn submit_jobs(daemon: &Daemon, args: &SubmitArgs) -> anyhow::Result<Vec<u64>> {
    let parse = |what: &str, text: &str| -> anyhow::Result<Value> {
        serde_json::from_str(text).with_context(|| format!("--{what} is not JSON: {text}"))
    };
    let input = if args.task == "call" {
        let plugin = args.plugin.as_deref().context("`call` needs --plugin")?;
        let method = args.method.as_deref().context("`call` needs --method")?;
        json!({"plugin": plugin, "method": method, "body": parse("body", &args.body)?})
    } else {
        parse("input", &args.input)?
    };
    let spec = JobSubmission {
        task: args.task.clone(),
        input,
        retry: Some(RetrySubmission {
            max_attempts: Some(args.attempts),
            ..RetrySubmission::default()
        }),
        timeout_ms: args.timeout_ms,
        deadline_ms: args.deadline_ms,
        on_crash: None,
    };
    let mut ids = Vec::new();
    for _ in 0..args.count {
        let Submitted { id } = daemon
            .call_json(Method::POST, "/api/v1/jobs", &spec)
            .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Polls `ids` until every one has ended; fails when any failed.
async fn watch(daemon: &Daemon, ids: &[u64]) -> anyhow::Result<()> {
    let bar = ProgressBar::new(ids.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} jobs ended {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut pending: Vec<u64> = ids.to_vec();
    let (mut succeeded, mut failed, mut cancelled) = (0u64, Vec::new(), 0u64);
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let job: Job = daemon
                .call(
                    Method::GET,
                    &format!("/api/v1/jobs/{id}"),
                    None,
                    Bytes::new(),
                )
                .await?;
            match job.state {
                JobState::Succeeded => succeeded += 1,
                JobState::Failed => {
                    failed.push((id, job.error.map(|e| e.message).unwrap_or_default()))
                }
                JobState::Cancelled => cancelled += 1,
                JobState::Queued | JobState::Running => {
                    still.push(id);
                    continue;
                }
            }
            bar.inc(1);
        }
        bar.set_message(format!(
            "({succeeded} succeeded, {} failed, {cancelled} cancelled)",
            failed.len()
        ));
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    bar.finish();
    println!(
        "{} jobs: {succeeded} succeeded, {} failed, {cancelled} cancelled",
        ids.len(),
        failed.len()
    );
    for (id, why) in &failed {
        println!("job {id} failed: {why}");
    }
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} jobs failed",
        failed.len(),
        ids.len()
    );
    Ok(())
}
