//! Benchmark harness for plugsconc process plugins. Prints one JSON object with the same schema
//! as the go-plugin baseline (`interop/go/kvhost`), so `benches/run.sh` can put them side by side:
//! sequential unary Echo latency, throughput with concurrent callers, spawn-to-first-call time,
//! and host memory per plugin.
//!
//! `plugsconc-bench --plugin target/release/kv [--automtls] [--transport tcp]`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use example_contracts::kv::EchoRequest;
use example_contracts::kv::kv_client::KvClient;
use plugsconc_host::PluginClient;
use plugsconc_protocol::env::{HandshakeConfig, Transport};
use plugsconc_protocol::mtls::Curve;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// The kv plugin binary.
    #[arg(long)]
    plugin: PathBuf,
    /// AutoMTLS on.
    #[arg(long)]
    automtls: bool,
    /// `unix` or `tcp`.
    #[arg(long, default_value = "unix")]
    transport: String,
    /// Certificate curve of the host (and, as a hint, of a plugsconc plugin).
    #[arg(long, default_value = "p256")]
    curve: String,
    /// Sequential calls measured.
    #[arg(long, default_value_t = 20_000)]
    seq: usize,
    /// Warm-up calls before measuring.
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
    /// Concurrent caller counts.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    callers: Vec<usize>,
    /// Calls per caller in the throughput runs.
    #[arg(long, default_value_t = 5_000)]
    per_caller: usize,
    /// Start-up runs (a new process each).
    #[arg(long, default_value_t = 20)]
    startup_runs: usize,
    /// Echo payload size in bytes.
    #[arg(long, default_value_t = 16)]
    payload: usize,
    /// Host runtime: `current` (one thread) or `multi`.
    #[arg(long, default_value = "current")]
    runtime: String,
    /// Plugins started for the memory figure.
    #[arg(long, default_value_t = 10)]
    memory_plugins: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = match args.runtime.as_str() {
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        other => anyhow::bail!("--runtime must be current or multi, not {other:?}"),
    };
    let report = runtime.block_on(bench(&args))?;
    println!("{report}");
    Ok(())
}

async fn start(args: &Args) -> anyhow::Result<PluginClient> {
    let transport = match args.transport.as_str() {
        "tcp" => Transport::Tcp,
        _ => Transport::Unix,
    };
    let curve = if args.curve == "p521" {
        Curve::P521
    } else {
        Curve::P256
    };
    PluginClient::builder("kv", &args.plugin)
        .handshake(HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
        .auto_mtls(args.automtls)
        .curve(curve)
        .transport(transport)
        .start()
        .await
        .context("starting the plugin")
}

async fn bench(args: &Args) -> anyhow::Result<serde_json::Value> {
    let payload = vec![0x5a; args.payload];
    let client = start(args).await?;
    let mut kv = KvClient::new(client.channel());
    for _ in 0..args.warmup {
        kv.echo(EchoRequest {
            data: payload.clone(),
        })
        .await?;
    }

    let mut latencies = Vec::with_capacity(args.seq);
    for _ in 0..args.seq {
        let at = Instant::now();
        kv.echo(EchoRequest {
            data: payload.clone(),
        })
        .await?;
        latencies.push(at.elapsed());
    }
    latencies.sort_unstable();
    let mean =
        latencies.iter().sum::<Duration>().as_secs_f64() * 1e6 / latencies.len().max(1) as f64;

    let mut throughput = Vec::new();
    for &callers in &args.callers {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..callers {
            let mut kv = KvClient::new(client.channel());
            let payload = payload.clone();
            let calls = args.per_caller;
            tasks.spawn(async move {
                for _ in 0..calls {
                    kv.echo(EchoRequest {
                        data: payload.clone(),
                    })
                    .await?;
                }
                Ok::<_, tonic::Status>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let calls = callers * args.per_caller;
        throughput.push(json!({
            "callers": callers,
            "calls": calls,
            "calls_per_sec": calls as f64 / elapsed,
        }));
    }
    client.kill().await?;

    let mut startups = Vec::with_capacity(args.startup_runs);
    for _ in 0..args.startup_runs {
        let at = Instant::now();
        let client = start(args).await?;
        KvClient::new(client.channel())
            .echo(EchoRequest {
                data: payload.clone(),
            })
            .await?;
        startups.push(at.elapsed());
        client.kill().await?;
    }
    startups.sort_unstable();

    let before = rss_kb()?;
    let mut clients = Vec::with_capacity(args.memory_plugins);
    for _ in 0..args.memory_plugins {
        let client = start(args).await?;
        KvClient::new(client.channel())
            .echo(EchoRequest {
                data: payload.clone(),
            })
            .await?;
        clients.push(client);
    }
    let after = rss_kb()?;
    for client in clients {
        client.kill().await?;
    }

    Ok(json!({
        "impl": "plugsconc",
        "transport": args.transport,
        "automtls": args.automtls,
        "payload_bytes": args.payload,
        "runtime": args.runtime,
        "seq": {
            "calls": args.seq,
            "p50_us": micros(percentile(&latencies, 0.50)),
            "p99_us": micros(percentile(&latencies, 0.99)),
            "mean_us": mean,
        },
        "throughput": throughput,
        "startup": {
            "runs": args.startup_runs,
            "p50_ms": micros(percentile(&startups, 0.50)) / 1000.0,
            "min_ms": micros(startups.first().copied().unwrap_or_default()) / 1000.0,
        },
        "host_rss_kb_per_plugin": after.saturating_sub(before) as f64 / args.memory_plugins.max(1) as f64,
    }))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn rss_kb() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}
