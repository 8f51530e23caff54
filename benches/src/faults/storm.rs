//! Kill storms: 8 callers call the cat plugin continuously while its current process is killed
//! with SIGKILL, again and again, each kill after the restarted plugin answered. Once through an
//! embedded registry, once through the daemon's REST API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use example_animal::AnimalContract;
use plugsconc_host::registry::Backoff;
use plugsconc_host::signature::Trust;
use plugsconc_host::{HostError, Registry, RegistryOptions};
use serde_json::json;

use crate::daemon::{Daemon, plugins_folder};
use crate::procs;

/// How long one restart may take before the storm gives up on it.
const RESTART_BOUND: Duration = Duration::from_secs(60);
const CALLERS: usize = 8;

/// The restart schedule of the storms: no give-up, and short delays, so a thousand kills in a
/// row neither exhaust the restarts nor wait on a long backoff.
fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
        max_restarts: 1_000_000,
        reset_after: Duration::from_secs(3600),
    }
}

/// What the callers saw.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    /// Kills so far: a call that fails with a transport error while this moved was in flight
    /// when the process died; one that started after the kill was sent to a dead process.
    epoch: AtomicU64,
    /// The process died under a call in flight (a transport error).
    in_flight: AtomicU64,
    /// Sent after the process died, before the host noticed (a transport error).
    after_death: AtomicU64,
    /// Refused: not available.
    refused: AtomicU64,
    other: Mutex<BTreeMap<String, u64>>,
    /// Successes as instants, for the longest gap between two.
    last_ok: Mutex<Option<Instant>>,
    longest_gap: Mutex<Duration>,
}

impl Tally {
    fn success(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last_ok.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = *last {
            let mut longest = self.longest_gap.lock().unwrap_or_else(|e| e.into_inner());
            *longest = (*longest).max(now - previous);
        }
        *last = Some(now);
    }

    /// A transport error of a call that began at `epoch`.
    fn transport(&self, epoch: u64) {
        if self.epoch.load(Ordering::Relaxed) == epoch {
            self.after_death.fetch_add(1, Ordering::Relaxed);
        } else {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn other(&self, what: String) {
        *self
            .other
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what)
            .or_default() += 1;
    }

    fn report(&self, kills: &Kills) -> serde_json::Value {
        let (ok, in_flight, after_death, refused) = (
            self.ok.load(Ordering::Relaxed),
            self.in_flight.load(Ordering::Relaxed),
            self.after_death.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        );
        let other = self.other.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let other_total: u64 = other.values().sum();
        let gap = *self.longest_gap.lock().unwrap_or_else(|e| e.into_inner());
        let mut restarts = kills.restart_ms.clone();
        restarts.sort_by(f64::total_cmp);
        let at = |q: f64| {
            restarts
                .get(((restarts.len().saturating_sub(1)) as f64 * q).round() as usize)
                .copied()
        };
        json!({
            "kills": kills.done,
            "kills_asked": kills.asked,
            "restart_never_answered": kills.stuck,
            "calls": ok + in_flight + after_death + refused + other_total,
            "calls_ok": ok,
            "failed_in_flight": in_flight,
            "failed_sent_to_dead_process": after_death,
            "failed_refused": refused,
            "failed_other": other,
            "longest_gap_ms": gap.as_secs_f64() * 1000.0,
            "kill_to_answer_ms": {"p50": at(0.5), "p99": at(0.99), "max": at(1.0)},
            "zombies_sampled_max": kills.zombies_max,
        })
    }
}

/// What the killer did.
#[derive(Debug, Default)]
struct Kills {
    asked: usize,
    done: usize,
    stuck: usize,
    restart_ms: Vec<f64>,
    zombies_max: usize,
}

/// The kill loop, common to both storms: `current` says the plugin's pid (None while it has
/// none), `zombies` counts unreaped children of the host.
async fn kill_loop<F, Fut>(
    kills: usize,
    tally: &Tally,
    mut current: F,
    zombies: impl Fn() -> usize,
) -> Kills
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u32>>,
{
    let mut done = Kills {
        asked: kills,
        ..Kills::default()
    };
    // The first pid, once a call was answered.
    let mut pid = None;
    let began = Instant::now();
    while pid.is_none() && began.elapsed() < RESTART_BOUND {
        if tally.ok.load(Ordering::Relaxed) > 0 {
            pid = current().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some(mut pid) = pid else {
        done.stuck = 1;
        return done;
    };
    for _ in 0..kills {
        let killed_at = Instant::now();
        tally.epoch.fetch_add(1, Ordering::Relaxed);
        if !procs::kill9(pid) {
            // Gone already (it died on its own): count nothing, look again.
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else {
            done.done += 1;
        }
        // Answered again: a new pid, and a call succeeded after it was seen.
        let mut next = None;
        while killed_at.elapsed() < RESTART_BOUND {
            done.zombies_max = done.zombies_max.max(zombies());
            if let Some(new) = current().await.filter(|&p| p != pid) {
                let seen = tally.ok.load(Ordering::Relaxed);
                while killed_at.elapsed() < RESTART_BOUND
                    && tally.ok.load(Ordering::Relaxed) == seen
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                next = Some(new);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        match next {
            Some(new) if killed_at.elapsed() < RESTART_BOUND => {
                done.restart_ms
                    .push(killed_at.elapsed().as_secs_f64() * 1000.0);
                pid = new;
            }
            _ => {
                done.stuck += 1;
                break;
            }
        }
    }
    done
}

/// The kill storm through an embedded registry.
pub async fn registry(plugins: &Path, kills: usize) -> anyhow::Result<serde_json::Value> {
    let root = tempfile::tempdir()?;
    plugins_folder(plugins, root.path(), &["cat"])?;
    let binary = root.path().join("plugins/cat/cat");
    let options = RegistryOptions {
        start_timeout: Duration::from_secs(20),
        idle_timeout: None,
        trust: Trust::allow_unsigned(),
        backoff: backoff(),
        ..RegistryOptions::default()
    };
    let restart_wait = options.restart_wait;
    let registry = Arc::new(Registry::open(&root.path().join("plugins"), options).await?);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (registry, tally, stop) = (registry.clone(), tally.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let handle = match registry.handle::<AnimalContract>("cat") {
                Ok(handle) => handle,
                Err(err) => return tally.other(format!("handle: {err}")),
            };
            while !stop.load(Ordering::Relaxed) {
                let epoch = tally.epoch.load(Ordering::Relaxed);
                match handle.get().await {
                    Ok(lease) => match lease.speak(false).await {
                        Ok(_) => tally.success(),
                        Err(_) => tally.transport(epoch),
                    },
                    Err(HostError::NotAvailable { .. }) => {
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => tally.other(kind(&err)),
                }
            }
        }));
    }
    let host = std::process::id();
    let done = kill_loop(
        kills,
        &tally,
        || {
            let pid = registry.get("cat").and_then(|info| info.pid);
            async move { pid }
        },
        || procs::zombies_of(host),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await?;
    }
    let seconds = began.elapsed().as_secs_f64();
    let zombies_at_end = procs::zombies_of(host);
    let current = registry.get("cat").and_then(|info| info.pid);
    let others: Vec<u32> = procs::running(&binary)
        .into_iter()
        .filter(|p| Some(*p) != current)
        .collect();
    registry.shutdown().await;
    let after = wait_gone(&binary).await;
    let mut report = tally.report(&done);
    report["suite"] = json!("kill storm, registry");
    report["callers"] = json!(CALLERS);
    report["seconds"] = json!(seconds);
    report["backoff"] = backoff_json(&backoff());
    report["restart_wait_ms"] = json!(restart_wait.as_millis());
    report["zombies_at_end"] = json!(zombies_at_end);
    report["stray_processes_before_shutdown"] = json!(others.len());
    report["orphans_after_shutdown"] = json!(after.len());
    for pid in after {
        procs::kill9(pid);
    }
    Ok(report)
}

/// The processes still running `binary` after a bounded wait for them to go.
async fn wait_gone(binary: &Path) -> Vec<u32> {
    let began = Instant::now();
    loop {
        let left = procs::running(binary);
        if left.is_empty() || began.elapsed() > Duration::from_secs(20) {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn backoff_json(backoff: &Backoff) -> serde_json::Value {
    json!({
        "initial_ms": backoff.initial.as_millis(),
        "max_ms": backoff.max.as_millis(),
        "max_restarts": backoff.max_restarts,
        "reset_after_s": backoff.reset_after.as_secs(),
        "why": "restarts never run out and delays stay short, so every kill is followed by a restart",
    })
}

/// A short name for a host error.
fn kind(err: &HostError) -> String {
    let text = format!("{err:?}");
    text.split([' ', '(', '{'])
        .next()
        .unwrap_or("error")
        .to_owned()
}

/// The kill storm through the daemon's REST API.
pub async fn api(
    plugsconc: &Path,
    plugins: &Path,
    kills: usize,
) -> anyhow::Result<serde_json::Value> {
    let root = tempfile::tempdir()?;
    plugins_folder(plugins, root.path(), &["cat"])?;
    let binary: PathBuf = root.path().join("plugins/cat/cat");
    let schedule = backoff();
    let sets = vec![
        format!("supervisor.restart_max={}", schedule.max_restarts),
        format!(
            "supervisor.restart_initial_ms={}",
            schedule.initial.as_millis()
        ),
        format!("supervisor.restart_max_ms={}", schedule.max.as_millis()),
        format!(
            "supervisor.restart_reset_secs={}",
            schedule.reset_after.as_secs()
        ),
    ];
    let daemon = Daemon::start(plugsconc, root.path(), &sets)?;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (tally, stop, mut client) = (tally.clone(), stop.clone(), daemon.client());
        callers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let epoch = tally.epoch.load(Ordering::Relaxed);
                match client.post(
                    "/api/v1/plugins/cat/call/animal.Animal/Speak",
                    r#"{"isLoud": false}"#,
                ) {
                    Ok(r) if r.status == 200 => tally.success(),
                    Ok(r) => match r.code().as_str() {
                        "not_available" => {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        "plugin_error" | "plugin_unavailable" => tally.transport(epoch),
                        code => tally.other(format!("{} {code}", r.status)),
                    },
                    Err(err) => tally.other(format!("http transport: {err}")),
                }
            }
        }));
    }
    let host = daemon.pid();
    let watcher = daemon.client();
    let watcher = Arc::new(Mutex::new(watcher));
    let done = kill_loop(
        kills,
        &tally,
        || {
            let watcher = watcher.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut client = watcher.lock().unwrap_or_else(|e| e.into_inner());
                    let info = client.get("/api/v1/plugins/cat").ok()?;
                    let pid = info.body["pid"].as_u64()?;
                    u32::try_from(pid).ok()
                })
                .await
                .ok()
                .flatten()
            }
        },
        || procs::zombies_of(host),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller
            .join()
            .map_err(|_| anyhow::anyhow!("a caller panicked"))?;
    }
    let seconds = began.elapsed().as_secs_f64();
    let zombies_at_end = procs::zombies_of(host);
    let current = watcher
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get("/api/v1/plugins/cat")
        .ok()
        .and_then(|r| r.body["pid"].as_u64());
    let others: Vec<u32> = procs::running(&binary)
        .into_iter()
        .filter(|p| Some(u64::from(*p)) != current)
        .collect();
    let peak = procs::peak_rss(host);
    daemon.stop().context("stopping the daemon")?;
    let after = wait_gone(&binary).await;
    let mut report = tally.report(&done);
    report["suite"] = json!("kill storm, REST API");
    report["callers"] = json!(CALLERS);
    report["seconds"] = json!(seconds);
    report["backoff"] = backoff_json(&schedule);
    report["daemon_flags"] = json!(sets);
    report["daemon_peak_rss_mib"] = json!(peak.map(|b| b as f64 / 1048576.0));
    report["zombies_at_end"] = json!(zombies_at_end);
    report["stray_processes_before_shutdown"] = json!(others.len());
    report["orphans_after_shutdown"] = json!(after.len());
    for pid in after {
        procs::kill9(pid);
    }
    Ok(report)
}
