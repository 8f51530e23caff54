//! Catalog benchmarks, printed as one JSON object:
//!
//! - discovery and validation of N generated plugin folders (manifests only), and separately the
//!   throughput of sidecar checksum verification over their binaries;
//! - a built-in plugin call through its registry handle;
//! - hot reload: swap time after the debounce (validate, start, health-check, swap), and the
//!   calls that failed while reloading under a steady call rate.
//!
//! `plugsconc-bench-catalog --cat target/release/cat --dog target/release/dog`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use example_animal::AnimalContract;
use plugsconc_host::{Event, Registry, RegistryOptions};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// A plugin binary of the animal contract (the version reloads start from).
    #[arg(long)]
    cat: PathBuf,
    /// Another one, swapped in on every other reload.
    #[arg(long)]
    dog: PathBuf,
    /// Plugin folders generated for discovery.
    #[arg(long, default_value_t = 1000)]
    folders: usize,
    /// Size of each generated binary, for the checksum throughput.
    #[arg(long, default_value_t = 256 * 1024)]
    binary_bytes: usize,
    /// Discovery runs (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Built-in calls measured.
    #[arg(long, default_value_t = 2_000_000)]
    builtin_calls: u64,
    /// Reloads measured.
    #[arg(long, default_value_t = 10)]
    reloads: usize,
    /// Steady call rate during the reloads, per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let discovery = discovery(&args).await?;
        let builtin = builtin(&args).await?;
        let reload = reload(&args).await?;
        anyhow::Ok(json!({ "discovery": discovery, "builtin": builtin, "reload": reload }))
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn discovery(args: &Args) -> anyhow::Result<serde_json::Value> {
    let root = tempfile::tempdir()?;
    let binary: Vec<u8> = (0..args.binary_bytes).map(|i| (i % 251) as u8).collect();
    for i in 0..args.folders {
        let name = format!("plugin-{i:04}");
        let dir = root.path().join(&name);
        std::fs::create_dir(&dir)?;
        let mut body = binary.clone();
        body.extend_from_slice(name.as_bytes());
        std::fs::write(dir.join(&name), &body)?;
        let digest = plugsconc_host::sha256_file(&dir.join(&name))?.to_hex();
        std::fs::write(
            dir.join(format!("{name}.sha256")),
            format!("{digest}  {name}\n"),
        )?;
        std::fs::write(
            dir.join("manifest.yaml"),
            format!(
                "plugin:\n  name: {name}\n  type: animal\n  version: 1.{i}.0\n  format: grpc\n  entrypoint: ./{name}\n  language: rust\nabout:\n  description: generated plugin {i}\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: ANIMAL_PLUGIN\n  magic_cookie_value: animal\nsecurity:\n  auto_mtls: true\n  checksum: sha256\ncapabilities:\n  filesystem:\n    - path: /var/lib/plugins/data\n      permissions: [read, write]\n      recursive: true\n  network:\n    egress:\n      - protocol: tcp\n        hosts: [localhost]\n        ports: [8080]\ntags: [generated, bench]\nconfig:\n  level: {i}\n"
            ),
        )?;
    }
    let mut scan = Vec::new();
    let mut found = 0;
    for _ in 0..args.runs {
        let path = root.path().to_owned();
        let began = Instant::now();
        let discovery = tokio::task::spawn_blocking(move || {
            plugsconc_host::discover(&path).map_err(anyhow::Error::from)
        })
        .await??;
        scan.push(began.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            discovery.invalid.is_empty(),
            "generated manifests are invalid: {:?}",
            discovery.invalid.first()
        );
        found = discovery.plugins.len();
    }
    let path = root.path().to_owned();
    let discovery = tokio::task::spawn_blocking(move || {
        plugsconc_host::discover(&path).map_err(anyhow::Error::from)
    })
    .await??;
    let plugins = Arc::new(discovery.plugins);
    let mut verify = Vec::new();
    for _ in 0..args.runs {
        let began = Instant::now();
        // One task per plugin, as a host verifying before starting everything would.
        let tasks: Vec<_> = (0..plugins.len())
            .map(|i| {
                let plugins = plugins.clone();
                tokio::spawn(async move {
                    plugsconc_host::verify_entrypoint(&plugins[i])
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        verify.push(began.elapsed().as_secs_f64() * 1e3);
    }
    let bytes = (args.binary_bytes + 12) as f64 * found as f64;
    let verify_ms = median(verify);
    Ok(json!({
        "folders": found,
        "discover_validate_ms_median": median(scan),
        "checksum_bytes": bytes,
        "checksum_verify_ms_median": verify_ms,
        "checksum_mib_per_s": bytes / (1024.0 * 1024.0) / (verify_ms / 1e3),
    }))
}

async fn builtin(args: &Args) -> anyhow::Result<serde_json::Value> {
    let registry = Registry::new(RegistryOptions::default());
    let cow = registry
        .handle::<AnimalContract>("cow")
        .context("the built-in cow is linked in")?;
    for _ in 0..10_000 {
        cow.get().await?.speak(false).await?;
    }
    let began = Instant::now();
    for _ in 0..args.builtin_calls {
        let lease = cow.get().await?;
        std::hint::black_box(lease.speak(false).await?);
    }
    let call_ns = began.elapsed().as_nanos() as f64 / args.builtin_calls as f64;
    let began = Instant::now();
    for _ in 0..args.builtin_calls {
        std::hint::black_box(cow.get().await?);
    }
    let get_ns = began.elapsed().as_nanos() as f64 / args.builtin_calls as f64;
    // The same trait call without the registry, for the overhead.
    let direct: Arc<dyn example_animal::Animal> = Arc::new(builtin_cow::Cow);
    let began = Instant::now();
    for _ in 0..args.builtin_calls {
        std::hint::black_box(std::hint::black_box(&direct).speak(false).await?);
    }
    let direct_ns = began.elapsed().as_nanos() as f64 / args.builtin_calls as f64;
    Ok(json!({
        "calls": args.builtin_calls,
        "get_and_call_ns": call_ns,
        "get_ns": get_ns,
        "direct_call_ns": direct_ns,
    }))
}

fn put(root: &Path, binary: &Path, version: &str) -> anyhow::Result<()> {
    let dir = root.join("pet");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(binary, dir.join(".pet.new"))?;
    std::fs::rename(dir.join(".pet.new"), dir.join("pet"))?;
    let digest = plugsconc_host::sha256_file(&dir.join("pet"))?.to_hex();
    std::fs::write(dir.join(".sidecar.new"), format!("{digest}  pet\n"))?;
    std::fs::rename(dir.join(".sidecar.new"), dir.join("pet.sha256"))?;
    std::fs::write(
        dir.join(".manifest.new"),
        format!(
            "plugin:\n  name: pet\n  type: animal\n  version: {version}\n  entrypoint: ./pet\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: ANIMAL_PLUGIN\n  magic_cookie_value: animal\n"
        ),
    )?;
    std::fs::rename(dir.join(".manifest.new"), dir.join("manifest.yaml"))?;
    Ok(())
}

async fn reload(args: &Args) -> anyhow::Result<serde_json::Value> {
    let root = tempfile::tempdir()?;
    put(root.path(), &args.cat, "1.0.0")?;
    let registry = Registry::open(
        root.path(),
        RegistryOptions {
            idle_timeout: None,
            trust: plugsconc_host::signature::Trust::allow_unsigned(),
            ..RegistryOptions::default()
        },
    )
    .await?;
    let debounce = Duration::from_millis(100);
    registry.watch(debounce, None)?;
    let pet = registry.handle::<AnimalContract>("pet")?;
    pet.get().await?.speak(false).await?;
    let mut events = registry.subscribe();

    // A steady caller: one call every 1/rate s, each in its own task so a slow call does not
    // lower the rate.
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pacer = {
        let (pet, calls, failures, stop) =
            (pet.clone(), calls.clone(), failures.clone(), stop.clone());
        let period = Duration::from_secs_f64(1.0 / args.rate as f64);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (pet, calls, failures) = (pet.clone(), calls.clone(), failures.clone());
                inflight.spawn(async move {
                    let ok = match pet.get().await {
                        Ok(lease) => lease.speak(false).await.is_ok(),
                        Err(_) => false,
                    };
                    calls.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        })
    };

    let began = Instant::now();
    let mut swaps = Vec::new();
    for i in 0..args.reloads {
        let version = format!("1.0.{}", i + 1);
        let binary = if i % 2 == 0 { &args.dog } else { &args.cat };
        put(root.path(), binary, &version)?;
        let took = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match events.recv().await {
                    Ok(Event::Reloaded { to, took, .. }) if to.to_string() == version => {
                        return Ok(took);
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(err) => return Err(anyhow::anyhow!("event stream: {err}")),
                }
            }
        })
        .await
        .context("no reload within 60 s")??;
        swaps.push(took.as_secs_f64() * 1e3);
        // Give the new version some traffic before the next swap.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let elapsed = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    pacer.await?;
    registry.shutdown().await;
    let mut sorted = swaps.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "debounce_ms": debounce.as_millis(),
        "reloads": swaps.len(),
        "swap_ms_median": median(swaps.clone()),
        "swap_ms_max": sorted.last().copied().unwrap_or(f64::NAN),
        "calls": calls.load(Ordering::Relaxed),
        "failed_calls": failures.load(Ordering::Relaxed),
        "calls_per_s": calls.load(Ordering::Relaxed) as f64 / elapsed,
    }))
}
