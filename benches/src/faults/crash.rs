//! Crash points: the daemon is started, an operation begins (install from a bundle or a folder,
//! uninstall, reload, enable, disable, job submissions), the daemon is killed with SIGKILL at a
//! random moment during it, started again, and its catalog (API), its plugins folder (folders,
//! `.disabled` markers, staging leftovers) and its store (SQLite) are compared. Every job whose
//! submission was acknowledged must still exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::daemon::{Daemon, plugins_folder, pup_folder};
use crate::http::Client;
use crate::procs;

const PUPS: [&str; 3] = ["pup1", "pup2", "pup3"];

/// An operation the daemon is killed in.
#[derive(Debug, Clone)]
enum Op {
    InstallBundle(String),
    InstallFolder(String),
    Uninstall(String),
    Reload(String),
    ReloadAll,
    Enable(String),
    Disable(String),
    Jobs,
}

impl Op {
    fn label(&self) -> &'static str {
        match self {
            Self::InstallBundle(_) => "install bundle",
            Self::InstallFolder(_) => "install folder",
            Self::Uninstall(_) => "uninstall",
            Self::Reload(_) => "reload",
            Self::ReloadAll => "reload all",
            Self::Enable(_) => "enable",
            Self::Disable(_) => "disable",
            Self::Jobs => "submit jobs",
        }
    }

    /// The kill lands uniformly in [0, this) ms after the request: about as long as the
    /// operation takes here (debug build), so most kills fall inside it.
    fn window_ms(&self) -> u64 {
        match self {
            Self::InstallBundle(_) | Self::InstallFolder(_) => 400,
            Self::Jobs => 300,
            Self::Uninstall(_) | Self::Reload(_) | Self::ReloadAll => 60,
            Self::Enable(_) | Self::Disable(_) => 15,
        }
    }
}

/// Pup plugins (the dog's binary under other names): their folders and their bundles.
struct Sources {
    dir: tempfile::TempDir,
    bundles: BTreeMap<String, Vec<u8>>,
}

impl Sources {
    fn new(plugins: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut bundles = BTreeMap::new();
        for name in PUPS {
            let folder = dir.path().join(name);
            pup_folder(plugins, name, &folder)?;
            let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
                Vec::new(),
                // Stored, not compressed: building the bundles should not dominate the run.
                flate2::Compression::none(),
            ));
            tar.append_dir_all(".", &folder)?;
            bundles.insert(name.to_owned(), tar.into_inner()?.finish()?);
        }
        Ok(Self { dir, bundles })
    }
}

/// What one checked restart found.
#[derive(Debug, Default)]
struct Check {
    disagreements: Vec<String>,
    leftovers: Vec<String>,
}

pub async fn run(
    plugsconc: &Path,
    plugins: &Path,
    runs: usize,
    seed: Option<u64>,
) -> anyhow::Result<serde_json::Value> {
    let seed = seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let sources = Sources::new(plugins)?;
    let root = tempfile::tempdir()?;
    plugins_folder(plugins, root.path(), &["cat", "dog", "kv"])?;
    let plugsconc = plugsconc.to_owned();
    let began = Instant::now();
    let (mut disagreements, mut lost_jobs) = (Vec::new(), 0usize);
    // A disagreement stays until something mends it: counted once, in the run it appeared.
    let mut standing: BTreeSet<String> = BTreeSet::new();
    let mut leftovers = BTreeSet::new();
    let mut plugins_left_by_crash = 0usize;
    let mut answered_before_kill = 0usize;
    let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
    let mut acked_jobs: Vec<u64> = Vec::new();
    let mut restart_ms = Vec::new();
    for run in 0..runs {
        let daemon = Daemon::start(&plugsconc, root.path(), &[])?;
        let mut client = daemon.client();
        settle(&mut client)?;
        let op = pick(&mut rng, &mut client)?;
        *by_op.entry(op.label()).or_default() += 1;
        let delay = Duration::from_millis(rng.u64(0..op.window_ms()));
        let (acked, answered) = run_and_kill(daemon, op.clone(), &sources, delay).await?;
        answered_before_kill += usize::from(answered);
        acked_jobs.extend(acked);
        // Plugins the killed daemon had started, still running: the next start must deal with
        // them (counted, then left for it).
        plugins_left_by_crash += procs::running_under(root.path()).len();
        let restarted = Instant::now();
        let daemon = Daemon::start(&plugsconc, root.path(), &[])?;
        let mut client = daemon.client();
        settle(&mut client)?;
        restart_ms.push(restarted.elapsed().as_secs_f64() * 1000.0);
        let check = compare(&mut client, root.path())?;
        for id in &acked_jobs {
            if client.get(&format!("/api/v1/jobs/{id}"))?.status != 200 {
                lost_jobs += 1;
                disagreements.push(format!("run {run}: acknowledged job {id} is gone"));
            }
        }
        acked_jobs.clear();
        let now: BTreeSet<String> = check.disagreements.into_iter().collect();
        disagreements.extend(
            now.difference(&standing)
                .map(|d| format!("run {run} ({}): {d}", op.label())),
        );
        standing = now;
        leftovers.extend(check.leftovers);
        daemon.stop()?;
        // Plugins of the stopped daemon are its to stop; anything left is killed so the next
        // run starts clean (and counted).
        for pid in procs::running_under(root.path()) {
            procs::kill9(pid);
        }
    }
    restart_ms.sort_by(f64::total_cmp);
    Ok(json!({
        "suite": "daemon crash points",
        "runs": runs,
        "seed": seed,
        "answered_before_the_kill": answered_before_kill,
        "operations": by_op,
        "disagreements": disagreements.len(),
        "disagreements_standing_at_end": standing.len(),
        "disagreement_details": disagreements.iter().take(20).collect::<Vec<_>>(),
        // Distinct hidden entries in the plugins folder seen after a restart.
        "leftovers": leftovers.len(),
        "leftover_details": leftovers.iter().take(20).collect::<Vec<_>>(),
        "lost_jobs": lost_jobs,
        "plugins_running_after_daemon_kill": plugins_left_by_crash,
        "restart_to_settled_ms_p50": restart_ms.get(restart_ms.len() / 2),
        "seconds": began.elapsed().as_secs_f64(),
    }))
}

/// Waits until the catalog reads the same twice in a row (the start's reconciliation is done).
fn settle(client: &mut Client) -> anyhow::Result<()> {
    let began = Instant::now();
    let mut last = None;
    while began.elapsed() < Duration::from_secs(60) {
        let now = client.get("/api/v1/plugins")?.body;
        let now: Vec<(String, String)> = now["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_owned(),
                    p["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if last.as_ref() == Some(&now) {
            return Ok(());
        }
        last = Some(now);
        std::thread::sleep(Duration::from_millis(300));
    }
    anyhow::bail!("the catalog did not settle within 60 s")
}

fn pick(rng: &mut fastrand::Rng, client: &mut Client) -> anyhow::Result<Op> {
    let listed = client.get("/api/v1/plugins")?.body;
    let installed: Vec<String> = listed["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["runtime"] != "builtin")
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let any = |rng: &mut fastrand::Rng| {
        installed
            .get(rng.usize(0..installed.len().max(1)))
            .cloned()
            .unwrap_or_else(|| "cat".to_owned())
    };
    let pup = PUPS[rng.usize(0..PUPS.len())].to_owned();
    Ok(match rng.u8(0..8) {
        0 => Op::InstallBundle(pup),
        1 => Op::InstallFolder(pup),
        2 => {
            let pups: Vec<&String> = installed.iter().filter(|n| n.starts_with("pup")).collect();
            match pups.get(rng.usize(0..pups.len().max(1))) {
                Some(name) => Op::Uninstall((*name).clone()),
                None => Op::InstallBundle(pup),
            }
        }
        3 => Op::Reload(any(rng)),
        4 => Op::ReloadAll,
        5 => Op::Enable(any(rng)),
        6 => Op::Disable(any(rng)),
        _ => Op::Jobs,
    })
}

/// Starts `op` on its own thread, kills the daemon after `delay`; returns the ids of the jobs
/// whose submission was acknowledged before the kill, and whether the operation was answered
/// before it (the kill then fell after the operation).
async fn run_and_kill(
    daemon: Daemon,
    op: Op,
    sources: &Sources,
    delay: Duration,
) -> anyhow::Result<(Vec<u64>, bool)> {
    let mut client = daemon.client();
    let folder: PathBuf = sources.dir.path().to_owned();
    let bundles = sources.bundles.clone();
    let worker = std::thread::spawn(move || {
        let mut acked = Vec::new();
        // Errors are expected: the daemon dies under the request.
        let response = match &op {
            Op::InstallBundle(name) => client.send(
                "POST",
                "/api/v1/plugins/install?replace=true",
                "application/gzip",
                bundles.get(name).map_or(&[][..], Vec::as_slice),
            ),
            Op::InstallFolder(name) => client.post(
                "/api/v1/plugins/install?replace=true",
                &json!({"path": folder.join(name)}).to_string(),
            ),
            Op::Uninstall(name) => client.post(&format!("/api/v1/plugins/{name}/uninstall"), ""),
            Op::Reload(name) => client.post(&format!("/api/v1/plugins/{name}/reload"), ""),
            Op::ReloadAll => client.post("/api/v1/reload", ""),
            Op::Enable(name) => client.post(&format!("/api/v1/plugins/{name}/enable"), ""),
            Op::Disable(name) => client.post(&format!("/api/v1/plugins/{name}/disable"), ""),
            Op::Jobs => {
                for i in 0..200 {
                    let job = if i % 2 == 0 {
                        json!({"task": "noop"})
                    } else {
                        json!({"task": "call", "input": {"plugin": "kv", "method": "kv.KV/Get", "body": {"key": "x"}}})
                    };
                    match client.post("/api/v1/jobs", &job.to_string()) {
                        Ok(r) if r.status == 202 => {
                            if let Some(id) = r.body["id"].as_u64() {
                                acked.push(id);
                            }
                        }
                        Ok(_) => {}
                        Err(err) => return (acked, Err(err)),
                    }
                }
                Ok(crate::http::Response {
                    status: 0,
                    body: serde_json::Value::Null,
                })
            }
        };
        (acked, response)
    });
    tokio::time::sleep(delay).await;
    daemon.kill9();
    let (acked, response) = tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the operation thread panicked"))?;
    Ok((acked, response.is_ok()))
}

/// Compares the catalog, the folder and the store.
fn compare(client: &mut Client, root: &Path) -> anyhow::Result<Check> {
    let mut check = Check::default();
    let plugins_dir = root.join("plugins");
    let mut folders = BTreeSet::new();
    for entry in std::fs::read_dir(&plugins_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            check.leftovers.push(name);
        } else if entry.path().join("manifest.yaml").exists() {
            folders.insert(name);
        } else {
            check
                .disagreements
                .push(format!("folder {name} has no manifest"));
        }
    }
    let listed = client.get("/api/v1/plugins")?.body;
    let mut catalog = BTreeMap::new();
    for plugin in listed["plugins"].as_array().into_iter().flatten() {
        if plugin["runtime"] == "builtin" {
            continue;
        }
        let name = plugin["name"].as_str().unwrap_or_default().to_owned();
        let status = plugin["status"].as_str().unwrap_or_default().to_owned();
        catalog.insert(name, status);
    }
    let names: BTreeSet<&String> = catalog.keys().collect();
    if names != folders.iter().collect() {
        check
            .disagreements
            .push(format!("catalog {names:?} and folders {folders:?} differ"));
    }
    let store = store_states(&root.join("data/catalog.db"))?;
    for (name, status) in &catalog {
        let disabled = status == "disabled";
        let marker = plugins_dir
            .join(name)
            .join(plugsconc_host::DISABLED_MARKER)
            .exists();
        if disabled != marker {
            check.disagreements.push(format!(
                "{name}: catalog says {status}, .disabled marker {}",
                if marker { "present" } else { "absent" }
            ));
        }
        // No row: never changed, enabled.
        let enabled = store.get(name).copied().unwrap_or(true);
        if enabled == disabled {
            check.disagreements.push(format!(
                "{name}: catalog says {status}, the store says {}",
                if enabled { "enabled" } else { "disabled" }
            ));
        }
    }
    Ok(check)
}

/// `plugin_state` of the SQLite store: name → enabled.
fn store_states(db: &Path) -> anyhow::Result<BTreeMap<String, bool>> {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT name, enabled FROM plugin_state")
        .output()
        .context("running sqlite3 (apt-get install sqlite3)")?;
    anyhow::ensure!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(name, enabled)| (name.to_owned(), enabled.trim() == "1"))
        .collect())
}
