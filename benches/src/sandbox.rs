//! What the OS sandbox adds to a plugin's start, printed as one JSON object: the kv plugin is
//! started and stopped `runs` times each unconfined, sandboxed without grants, and sandboxed with
//! an exec grant (which adds a cgroup per launch), alternating so all see the same machine state,
//! and the start times (spawn to healthy, including the sandbox's preparation in the host) are
//! compared.
//!
//! `plugsconc-bench-sandbox --plugin target/release/kv`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use plugsconc_host::PluginClient;
use plugsconc_host::manifest::ProcessGrant;
use plugsconc_host::sandbox::SandboxSpec;
use plugsconc_protocol::env::HandshakeConfig;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// The kv plugin binary.
    #[arg(long)]
    plugin: PathBuf,
    /// Starts per variant.
    #[arg(long, default_value_t = 40)]
    runs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench(&args))?;
    println!("{report}");
    Ok(())
}

async fn start_once(args: &Args, sandbox: Option<&SandboxSpec>) -> anyhow::Result<Duration> {
    let mut builder = PluginClient::builder("kv", &args.plugin)
        .handshake(HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
        .auto_mtls(true);
    if let Some(spec) = sandbox {
        builder = builder.sandbox(spec.clone());
    }
    let began = Instant::now();
    let client = builder.start().await.context("starting the plugin")?;
    let took = began.elapsed();
    if sandbox.is_some() {
        anyhow::ensure!(
            client.protections().is_some(),
            "the plugin was not sandboxed"
        );
    }
    client.kill().await?;
    Ok(took)
}

fn summary(mut values: Vec<Duration>) -> serde_json::Value {
    values.sort_unstable();
    let at = |q: f64| {
        let index = ((values.len() - 1) as f64 * q).round() as usize;
        values[index].as_secs_f64() * 1000.0
    };
    json!({"p50_ms": at(0.5), "p90_ms": at(0.9), "min_ms": at(0.0)})
}

async fn bench(args: &Args) -> anyhow::Result<serde_json::Value> {
    let dir = args
        .plugin
        .parent()
        .context("the plugin path has no folder")?
        .to_owned();
    let data = tempfile::tempdir()?;
    let spec = SandboxSpec {
        dir,
        data_dir: Some(data.path().join("kv")),
        ..SandboxSpec::default()
    };
    let mut spawning = spec.clone();
    spawning.capabilities.process.push(ProcessGrant::Exec {
        command: "/bin/true".into(),
        args: Vec::new(),
    });
    // Warm the page cache and the host's certificate.
    start_once(args, None).await?;
    start_once(args, Some(&spec)).await?;
    let (mut plain, mut sandboxed, mut with_cgroup) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        plain.push(start_once(args, None).await?);
        sandboxed.push(start_once(args, Some(&spec)).await?);
        with_cgroup.push(start_once(args, Some(&spawning)).await?);
    }
    let (p, s, c) = (summary(plain), summary(sandboxed), summary(with_cgroup));
    let p50 = |v: &serde_json::Value| v["p50_ms"].as_f64().unwrap_or_default();
    Ok(json!({
        "runs": args.runs,
        "landlock_abi": plugsconc_host::sandbox::landlock_abi(),
        "unconfined": p,
        "sandboxed": s,
        "sandboxed_exec_grant": c,
        "overhead_p50_ms": p50(&s) - p50(&p),
        "overhead_exec_grant_p50_ms": p50(&c) - p50(&p),
    }))
}
