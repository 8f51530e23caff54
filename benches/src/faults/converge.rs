//! Two daemons on one PostgreSQL store: changes (enable, disable, install, uninstall) made
//! through each in turn, and the listener connection of one of them cut now and then
//! (`pg_terminate_backend` on its `LISTEN` backend); then both catalogs must agree with the
//! store within a bounded wait.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::daemon::{Daemon, plugins_folder, pup_folder};
use crate::http::Client;

const PUPS: [&str; 3] = ["pup1", "pup2", "pup3"];
const NATIVE: [&str; 3] = ["cat", "dog", "kv"];
const CONVERGE_BOUND: Duration = Duration::from_secs(120);

/// Runs SQL through psql; its unaligned output.
fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-qAtc", sql])
        .output()
        .context("running psql")?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Drops the schema when the run ends.
struct Schema<'a> {
    url: &'a str,
    name: String,
}

impl Drop for Schema<'_> {
    fn drop(&mut self) {
        let _ = psql(
            self.url,
            &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name),
        );
    }
}

/// The local TCP ports of sockets `pid` holds (from `/proc/net/tcp*` and its fds).
fn local_ports(pid: u32) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let (Some(local), Some(inode)) = (fields.get(1), fields.get(9))
                && inodes.contains(*inode)
                && let Some(port) = local.rsplit(':').next()
                && let Ok(port) = u16::from_str_radix(port, 16)
            {
                ports.insert(port);
            }
        }
    }
    ports
}

/// Terminates the `LISTEN` backend of the daemon `pid`; how many were terminated.
fn cut_listener(url: &str, schema: &str, pid: u32) -> anyhow::Result<usize> {
    let ports = local_ports(pid);
    let rows = psql(
        url,
        &format!(
            "SELECT pid, client_port FROM pg_stat_activity WHERE query LIKE 'LISTEN%{schema}%'"
        ),
    )?;
    let mut cut = 0;
    for row in rows.lines() {
        let Some((backend, port)) = row.split_once('|') else {
            continue;
        };
        if port.parse::<u16>().is_ok_and(|p| ports.contains(&p)) {
            let done = psql(url, &format!("SELECT pg_terminate_backend({backend})"))?;
            cut += usize::from(done.trim() == "t");
        }
    }
    Ok(cut)
}

/// What the store says: installed pups, and plugins disabled.
fn store_view(url: &str, schema: &str) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let disabled = psql(
        url,
        &format!("SELECT name FROM \"{schema}\".plugin_state WHERE NOT enabled"),
    )?
    .lines()
    .map(str::to_owned)
    .collect();
    let installed = psql(
        url,
        &format!("SELECT name FROM \"{schema}\".plugin_bundle WHERE NOT removed"),
    )?
    .lines()
    .map(str::to_owned)
    .collect();
    Ok((installed, disabled))
}

/// A daemon's catalog: process plugins and whether each is disabled.
fn catalog(client: &mut Client) -> anyhow::Result<BTreeMap<String, bool>> {
    let listed = client.get("/api/v1/plugins")?.body;
    Ok(listed["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["runtime"] != "builtin")
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["status"] == "disabled",
            )
        })
        .collect())
}

/// Where a catalog differs from the store's view.
fn differences(
    label: &str,
    catalog: &BTreeMap<String, bool>,
    installed: &BTreeSet<String>,
    disabled: &BTreeSet<String>,
) -> Vec<String> {
    let expected: BTreeSet<String> = NATIVE
        .iter()
        .map(|n| (*n).to_owned())
        .chain(installed.iter().cloned())
        .collect();
    let have: BTreeSet<String> = catalog.keys().cloned().collect();
    let mut out = Vec::new();
    if have != expected {
        out.push(format!("{label}: plugins {have:?}, store {expected:?}"));
    }
    for (name, is_disabled) in catalog {
        if *is_disabled != disabled.contains(name) {
            out.push(format!(
                "{label}: {name} {} here, {} in the store",
                if *is_disabled { "disabled" } else { "enabled" },
                if disabled.contains(name) {
                    "disabled"
                } else {
                    "enabled"
                }
            ));
        }
    }
    out
}

pub async fn run(
    plugsconc: &Path,
    plugins: &Path,
    changes: usize,
    cuts: usize,
    url: &str,
) -> anyhow::Result<serde_json::Value> {
    if psql(url, "SELECT 1").is_err() {
        return Ok(json!({
            "suite": "two daemons on PostgreSQL",
            "skipped": format!("PostgreSQL does not answer at {url} (or psql is missing)"),
        }));
    }
    let schema = Schema {
        url,
        name: format!(
            "plugsconc_faults_{}_{}",
            std::process::id(),
            fastrand::u32(..)
        ),
    };
    let sets = vec![
        format!("store.url={url}"),
        format!("store.schema={}", schema.name),
    ];
    let (root_a, root_b, sources) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    plugins_folder(plugins, root_a.path(), &NATIVE)?;
    plugins_folder(plugins, root_b.path(), &NATIVE)?;
    for name in PUPS {
        pup_folder(plugins, name, &sources.path().join(name))?;
    }
    let a = Daemon::start(plugsconc, root_a.path(), &sets)?;
    let b = Daemon::start(plugsconc, root_b.path(), &sets)?;
    let daemons = [&a, &b];
    let mut clients = [a.client(), b.client()];
    let mut rng = fastrand::Rng::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut took: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cut_done = 0;
    let cut_at: BTreeSet<usize> = (1..=cuts).map(|i| i * changes / (cuts + 1)).collect();
    let began = Instant::now();
    for i in 0..changes {
        let through = i % 2;
        if cut_at.contains(&i) {
            // The other daemon's listener: the change made next must reach it anyway.
            cut_done += cut_listener(url, &schema.name, daemons[1 - through].pid())?;
        }
        let client = &mut clients[through];
        let pup = PUPS[rng.usize(0..PUPS.len())];
        let any = if rng.bool() {
            pup
        } else {
            NATIVE[rng.usize(0..NATIVE.len())]
        };
        let asked = Instant::now();
        let (what, response) = match rng.u8(0..6) {
            0 | 1 => (
                "enable",
                client.post(&format!("/api/v1/plugins/{any}/enable"), ""),
            ),
            2 | 3 => (
                "disable",
                client.post(&format!("/api/v1/plugins/{any}/disable"), ""),
            ),
            4 => (
                "install",
                client.post(
                    "/api/v1/plugins/install?replace=true",
                    &json!({"path": sources.path().join(pup)}).to_string(),
                ),
            ),
            _ => (
                "uninstall",
                client.post(&format!("/api/v1/plugins/{pup}/uninstall"), ""),
            ),
        };
        let status = response.map_or_else(
            |e| format!("transport error: {e}"),
            |r| r.status.to_string(),
        );
        *outcomes.entry(format!("{what} {status}")).or_default() += 1;
        took.entry(what)
            .or_default()
            .push(asked.elapsed().as_secs_f64() * 1000.0);
    }
    let changes_seconds = began.elapsed().as_secs_f64();
    let settle_began = Instant::now();
    let mut last = Vec::new();
    let mut converged = None;
    while settle_began.elapsed() < CONVERGE_BOUND {
        let (installed, disabled) = store_view(url, &schema.name)?;
        let mut found = Vec::new();
        for (label, client) in ["A", "B"].into_iter().zip(clients.iter_mut()) {
            found.extend(differences(label, &catalog(client)?, &installed, &disabled));
        }
        if found.is_empty() {
            converged = Some(settle_began.elapsed());
            break;
        }
        last = found;
        std::thread::sleep(Duration::from_millis(100));
    }
    a.stop()?;
    b.stop()?;
    Ok(json!({
        "suite": "two daemons on PostgreSQL",
        "changes": changes,
        "outcomes": outcomes,
        "answer_ms_p50": took
            .into_iter()
            .map(|(what, mut ms)| {
                ms.sort_by(f64::total_cmp);
                (what, ms.get(ms.len() / 2).copied())
            })
            .collect::<BTreeMap<_, _>>(),
        "listener_cuts_asked": cuts,
        "listener_connections_cut": cut_done,
        "changes_seconds": changes_seconds,
        "disagreements": if converged.is_some() { 0 } else { last.len() },
        "disagreement_details": if converged.is_some() { Vec::new() } else { last },
        "converged_ms": converged.map(|d| d.as_secs_f64() * 1000.0),
        "converge_bound_s": CONVERGE_BOUND.as_secs(),
    }))
}
