//! `plugsconc-bench-jobs`: throughput of the job pool, in jobs/s, as the daemon runs it
//! — jobs stored in the durable queue (SQLite in a fresh folder, or `--store` PostgreSQL), claimed
//! and run by the workers — with the `noop` task (the pool and the queue alone) or `call` (a
//! unary method of a plugin of `--plugins`, JSON in and out, as the call endpoint does). Runs
//! `--jobs` jobs twice: queued before the workers start, then drained (the pool's own pace), and
//! submitted one after another while the workers run (a client's pace). Prints one JSON object:
//! drained jobs/s, submissions/s, submitted jobs/s from the first submission to the last end,
//! mean job duration, and the counts (every job must succeed, or the run fails).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;

use plugsconc_daemon::config::Config;
use plugsconc_daemon::jobs::pool::{PoolOptions, StopMode};
use plugsconc_daemon::jobs::tasks::{self, Task as _};
use plugsconc_daemon::jobs::{CrashPolicy, JobSpec, Pool, RetryPolicy};

/// Arguments of `plugsconc-bench-jobs`.
#[derive(Debug, Parser)]
#[command(name = "plugsconc-bench-jobs", about)]
struct BenchJobsArgs {
    /// `noop`, or `call` (kv.KV/Echo of the kv plugin in `--plugins`).
    #[arg(long, default_value = "noop")]
    task: String,
    /// Jobs to run.
    #[arg(long, default_value_t = 5_000)]
    jobs: u64,
    /// Workers (default: one per CPU, as the daemon).
    #[arg(long)]
    workers: Option<usize>,
    /// The store holding the queue (default: SQLite in a temporary folder).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Plugins folder for `call` (the README's `examples/plugins.sh` builds one).
    #[arg(long, value_name = "DIR", default_value = "plugins")]
    plugins: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run_jobs(&BenchJobsArgs::parse()).await
}

/// Runs the benchmark.
async fn run_jobs(args: &BenchJobsArgs) -> anyhow::Result<()> {
    let data = tempfile::tempdir().context("cannot create a temporary folder")?;
    let schema = format!("plugsconc_bench_{}", std::process::id());
    let url = plugsconc_daemon::store::StoreUrl::try_from(args.store.clone().unwrap_or_default())
        .map_err(|problem| anyhow::anyhow!("--store: {problem}"))?;
    let store = plugsconc_daemon::store::open(&url, &schema, data.path())
        .await
        .context("cannot open the store")?;
    let mut config = Config::default();
    config.directories.plugins_dir.clone_from(&args.plugins);
    config.directories.data_dir = data.path().to_owned();
    let (input, task): (_, Arc<dyn tasks::Task>) = match args.task.as_str() {
        "noop" => (json!({"n": 1}), Arc::new(tasks::Noop)),
        "call" => {
            let registry = plugsconc_host::Registry::open(
                &args.plugins,
                plugsconc_daemon::daemon::registry_options(&config)?,
            )
            .await
            .with_context(|| {
                format!("cannot open the plugins folder {}", args.plugins.display())
            })?;
            let task = tasks::Call {
                caller: plugsconc_daemon::calls::Caller {
                    registry,
                    descriptors: Arc::default(),
                    metrics: Arc::default(),
                },
            };
            let input = json!({"plugin": "kv", "method": "kv.KV/Echo", "body": {"data": "aGVsbG8gd29ybGQh"}});
            // One call first: the plugin starts and its descriptors are read outside the run.
            task.run(input.clone(), tokio_util::sync::CancellationToken::new())
                .await
                .map_err(|err| anyhow::anyhow!("the warm-up call failed: {}", err.message))?;
            (input, Arc::new(task))
        }
        other => anyhow::bail!("--task {other:?}: expected noop or call"),
    };
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    let spec = JobSpec {
        task: args.task.clone(),
        input,
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        timeout_ms: None,
        deadline_ms: None,
        on_crash: CrashPolicy::Fail,
    };
    // First the queue alone: the jobs are queued before any worker runs, and the workers then
    // drain them (claim, run, record). Then submissions while the workers run, as a client
    // submitting one job after another sees it.
    let queue = store.jobs();
    for _ in 0..args.jobs {
        queue
            .insert(&spec, "bench", plugsconc_daemon::jobs::now_ms())
            .await
            .context("cannot queue a job")?;
    }
    let began = Instant::now();
    let pool = Pool::start(
        PoolOptions {
            workers,
            capacity: args.jobs.saturating_mul(2).max(1),
            name: "bench".into(),
            ..PoolOptions::default()
        },
        vec![task],
        queue,
    )
    .await;
    ended(&pool, args.jobs).await;
    let drained = began.elapsed();
    let began = Instant::now();
    for _ in 0..args.jobs {
        pool.submit(spec.clone()).await?;
    }
    let submitted = began.elapsed();
    let stats = ended(&pool, 2 * args.jobs).await;
    let elapsed = began.elapsed();
    pool.stop(StopMode::Shutdown).await;
    let per_second = |d: Duration| args.jobs as f64 / d.as_secs_f64();
    println!(
        "{}",
        json!({
            "task": args.task,
            "store": store.kind(),
            "workers": workers,
            "jobs": args.jobs,
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "drain_seconds": drained.as_secs_f64(),
            "drained_jobs_per_second": per_second(drained),
            "submit_seconds": submitted.as_secs_f64(),
            "submissions_per_second": per_second(submitted),
            "seconds": elapsed.as_secs_f64(),
            "submitted_jobs_per_second": per_second(elapsed),
            "mean_job_ms": stats.total_duration_ms as f64 / stats.succeeded.max(1) as f64,
        })
    );
    if store.kind() == "postgres"
        && let Some(url) = &args.store
    {
        drop(store);
        drop_postgres_schema(url, &schema).await;
    }
    anyhow::ensure!(
        stats.succeeded == 2 * args.jobs,
        "{} of {} jobs failed",
        stats.failed,
        2 * args.jobs
    );
    Ok(())
}

/// Waits until `jobs` jobs in all have ended on `pool`; returns its counters then.
async fn ended(pool: &Pool, jobs: u64) -> plugsconc_daemon::jobs::pool::PoolStats {
    loop {
        let stats = pool.stats().await;
        if stats.succeeded + stats.failed + stats.cancelled >= jobs {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Drops the benchmark's PostgreSQL schema with everything in it; a failure is ignored, as
/// there is nothing left to keep.
async fn drop_postgres_schema(url: &str, schema: &str) {
    use sqlx::Executor as _;
    if let Ok(pool) = sqlx::PgPool::connect(url).await {
        let _ = pool
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .await;
        pool.close().await;
    }
}
