//! The daemon as one value. [`Daemon::start`] opens the persistent store, brings the plugins'
//! `.disabled` markers in line with it, opens the catalog of the plugins folder (plus the
//! built-in plugins `application.builtins` names), applies the recorded states and trusted publishers, follows changes made by
//! daemons sharing the store or by hand in it, watches the folder for hot reload, starts the job pool and serves
//! the REST API; [`Daemon::shutdown`] stops accepting, drains the requests and jobs and stops
//! every plugin — bounded. `plugsconc serve` runs one until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use plugsconc_host::sandbox::SandboxOptions;
use plugsconc_host::signature::Trust;
use plugsconc_host::{DISABLED_MARKER, Event, Query, Registry, RegistryOptions};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::api::{ApiState, router};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Heard, Store};
use crate::trust;

/// The registry options the configuration asks for.
pub fn registry_options(config: &Config) -> anyhow::Result<RegistryOptions> {
    Ok(RegistryOptions {
        insecure_skip_checksum: config.security.insecure_skip_checksum,
        trust: trust::configured(config)?,
        sandbox: SandboxOptions {
            enabled: !config.security.disable_sandbox,
            require: config.security.require_sandbox,
            data_root: Some(config.directories.data_dir.join("plugins")),
        },
        host_env: plugsconc_host::DEFAULT_HOST_ENV
            .iter()
            .map(|&name| name.to_owned())
            .chain(config.security.plugin_env.iter().cloned())
            .collect(),
        config_dir: Some(config.directories.plugin_configs_dir.clone()),
        // What a daemon killed without stopping its plugins left is ended at the next start.
        launch_record: Some(config.directories.data_dir.join("launched")),
        scanners: config
            .security
            .scanners(&config.directories.data_dir)
            .context("security.scan_commands")?,
        backoff: config.supervisor.backoff(),
        restart_wait: Duration::from_secs(config.supervisor.restart_wait_secs),
        // The configuration checked the names against the linked built-ins.
        builtins: plugsconc_host::BuiltinSelection::Only(
            config.application.builtins.iter().cloned().collect(),
        ),
        ..RegistryOptions::default()
    })
}

/// A running daemon: its API listening, its plugins, jobs and background work under way until
/// [`Daemon::shutdown`]. Dropped without a shutdown, its API stops accepting and its background
/// work ends, but its plugins and jobs are not drained.
pub struct Daemon {
    address: SocketAddr,
    registry: Registry,
    jobs: crate::jobs::Pool,
    /// Cancels the API server's stop token when dropped.
    stop: DropGuard,
    server: JoinHandle<()>,
    background: JoinSet<()>,
    locator: crate::locator::Locator,
    data_dir: PathBuf,
    stop_mode: crate::config::StopMode,
    jobs_grace: Duration,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// How long requests in flight may run on once shutdown begins: a plugin call without an
/// execution limit or a stalled client does not hold the daemon up.
const DRAIN_REQUESTS: Duration = Duration::from_secs(10);

impl Daemon {
    /// Brings the daemon up as `config` says and returns once its REST API listens.
    ///
    /// # Errors
    ///
    /// Whatever stops the daemon from starting: a folder that cannot be created, a store that
    /// cannot be opened, a trusted publisher's key that cannot be read, an address that cannot
    /// be listened on; each error names the configuration key or path at fault.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let started = Instant::now();
        match raise_open_files_limit() {
            Ok(limit) => tracing::info!(limit, "open files limit"),
            Err(err) => tracing::warn!(error = %err, "cannot raise the open files limit"),
        }
        let plugins_dir = config.directories.plugins_dir.clone();
        std::fs::create_dir_all(&plugins_dir).with_context(|| {
            format!("cannot create the plugins folder {}", plugins_dir.display())
        })?;
        // Installs killed midway (kill -9, power loss) leave hidden folders no one else removes.
        let leftovers = {
            let dir = plugins_dir.clone();
            tokio::task::spawn_blocking(move || {
                plugsconc_host::install::remove_leftovers(&dir).map_err(anyhow::Error::from)
            })
            .await
            .context("clearing the plugins folder was interrupted")??
        };
        for path in leftovers {
            tracing::warn!(path = %path.display(), "cleared what an interrupted install left");
        }
        let store: Arc<dyn Store> = Arc::from(
            crate::store::open(
                &config.store.url,
                &config.store.schema,
                &config.directories.data_dir,
            )
            .await?,
        );
        // The store wins over the markers: a daemon killed between writing one and the other left
        // them disagreeing, and the catalog reads the markers when it opens.
        let states = store.states().await?;
        {
            let plugins_dir = plugins_dir.clone();
            tokio::task::spawn_blocking(move || reconcile_markers(&plugins_dir, &states))
                .await
                .context("reconciling the .disabled markers")?;
        }
        let options = registry_options(&config)?;
        let (base_trust, require_checksum) =
            (options.trust.clone(), !options.insecure_skip_checksum);
        let registry = Registry::open(&plugins_dir, options).await?;
        if config.file_watcher.fw_enabled && config.file_watcher.fw_watch_plugins {
            let rescan = config.file_watcher.fw_rescan_secs;
            registry.watch(
                Duration::from_millis(config.file_watcher.fw_debounce_ms),
                (rescan > 0).then(|| Duration::from_secs(rescan)),
            )?;
        }
        let origin: Arc<str> = format!(
            "{}-{}-{:04x}",
            config.application.app_name,
            std::process::id(),
            fastrand::u16(..)
        )
        .into();
        apply_states(&registry, store.as_ref()).await?;
        trust::refresh(&registry, store.as_ref(), &base_trust).await?;
        let mut background = tokio::task::JoinSet::new();
        if !config.logging.log_filename.is_empty() {
            let (dir, file) = (
                config.directories.logs_dir.clone(),
                config.logging.log_filename.clone(),
            );
            let max_age = Duration::from_secs(config.logging.log_max_age.saturating_mul(86_400));
            background.spawn(async move {
                loop {
                    let (dir, file) = (dir.clone(), file.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        crate::logging::prune(&dir, &file, max_age)
                    })
                    .await;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
        background.spawn(record_versions(
            registry.clone(),
            store.clone(),
            origin.clone(),
        ));
        // Where installs go: the registry's resolved folder.
        let install_dir = registry
            .root()
            .map_or_else(|| plugins_dir.clone(), ToOwned::to_owned);
        let states = crate::states::States::new(registry.clone(), store.clone());
        let applied =
            crate::sharing::Applied::new(config.directories.data_dir.join("shared-bundles"));
        if let Some(heard) = store.listen().await? {
            let sharing = crate::sharing::Sharing {
                states: states.clone(),
                registry: registry.clone(),
                store: store.clone(),
                plugins_dir: install_dir.clone(),
                require_checksum,
                limits: config.install.limits(),
                applied: applied.clone(),
            };
            // What changed between reading the states above and listening.
            if let Err(err) = states.converge_all().await {
                tracing::warn!(error = %err, "cannot read the plugin states; trying again when the listener reconnects");
            }
            // What the catalog's other daemons installed (or uninstalled) before this one started.
            if let Err(err) = sharing.resync().await {
                tracing::warn!(error = %err, "cannot read the shared bundles; trying again when the listener reconnects");
            }
            background.spawn(follow(
                registry.clone(),
                store.clone(),
                origin.clone(),
                base_trust.clone(),
                sharing,
                heard,
            ));
        }
        let token = crate::api::load_token(&config.api.token, &config.directories.data_dir)
            .with_context(|| {
                format!(
                    "cannot read or create the API token in {}",
                    config.directories.data_dir.display()
                )
            })?;
        let listener = tokio::net::TcpListener::bind(&config.api.listen)
            .await
            .with_context(|| format!("cannot listen on api.listen {}", config.api.listen))?;
        let address = listener.local_addr()?;
        let locator = crate::locator::Locator::here(address);
        if let Err(err) = locator.write(&config.directories.data_dir) {
            tracing::warn!(error = %err, dir = %config.directories.data_dir.display(), "cannot record where the daemon listens; the CLI finds it through api.listen only");
        }
        let count = registry.list(&plugsconc_host::Query::default()).len();
        tracing::info!(%address, plugins = count, dir = %plugins_dir.display(), store = store.kind(), %origin, "plugsconc serving");
        let metrics: Arc<Metrics> = Arc::default();
        background.spawn(count_alerts(registry.clone(), metrics.clone()));
        let descriptors: Arc<crate::calls::DescriptorCache> = Arc::default();
        let workers = match config.worker_pool.wp_max_workers {
            0 => std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            n => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let pool = &config.worker_pool;
        let jobs = crate::jobs::Pool::start(
            crate::jobs::pool::PoolOptions {
                workers,
                capacity: pool.wp_queue_max,
                lease: Duration::from_millis(pool.wp_job_lease_ms),
                poll: Duration::from_millis(pool.wp_poll_ms),
                name: origin.to_string(),
            },
            vec![
                Arc::new(crate::jobs::tasks::Noop),
                Arc::new(crate::jobs::tasks::Sleep),
                Arc::new(crate::jobs::tasks::Call {
                    caller: crate::calls::Caller {
                        registry: registry.clone(),
                        descriptors: descriptors.clone(),
                        metrics: metrics.clone(),
                    },
                }),
            ],
            store.jobs(),
        )
        .await;
        {
            let metrics = metrics.clone();
            jobs.observe(Box::new(move |job| {
                metrics.job_finished(&job.task, job.state.as_str(), job.duration());
            }));
        }
        let app = router(ApiState {
            registry: registry.clone(),
            started,
            token: token.into(),
            descriptors,
            store: store.clone(),
            origin: origin.clone(),
            metrics,
            jobs: jobs.clone(),
            plugins_dir: install_dir,
            installs: Arc::new(crate::api::InstallGate::new(&config.install)),
            base_trust: base_trust.clone(),
            require_checksum,
            applied,
            states,
            logs: (config.logging.log_enable_persistent_queue
                && !config.logging.log_remove_on_complete)
                .then(|| {
                    Arc::new(crate::api::logs::LogSource::new(
                        config
                            .directories
                            .data_dir
                            .join(&config.logging.log_db_file),
                        config.logging.log_queue.clone(),
                    ))
                }),
        });
        let limits = crate::api::server::Limits {
            header_read_timeout: Duration::from_secs(config.api.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.api.idle_timeout_secs),
            max_connections: usize::try_from(config.api.max_connections).unwrap_or(usize::MAX),
            body_idle_timeout: Duration::from_secs(config.api.body_idle_timeout_secs),
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(crate::api::server::serve(
            listener,
            app,
            limits,
            stop.clone().cancelled_owned(),
        ));
        Ok(Self {
            address,
            registry,
            jobs,
            stop: stop.drop_guard(),
            server,
            background,
            locator,
            data_dir: config.directories.data_dir.clone(),
            stop_mode: config.worker_pool.wp_stop_mode,
            jobs_grace: Duration::from_secs(config.worker_pool.wp_shutdown_grace_secs),
        })
    }

    /// Where the REST API listens (the bound port when `api.listen` asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The catalog.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Stops the daemon, bounded: the API stops accepting and its requests in flight get 10 s,
    /// the job pool stops as `worker_pool.wp_stop_mode` says within
    /// `worker_pool.wp_shutdown_grace_secs` (jobs still running then are given up, as after a
    /// crash), then the background work ends and every plugin is drained and stopped.
    pub async fn shutdown(self) {
        let Self {
            registry,
            jobs,
            stop,
            mut server,
            mut background,
            locator,
            data_dir,
            stop_mode,
            jobs_grace,
            ..
        } = self;
        drop(stop);
        if tokio::time::timeout(DRAIN_REQUESTS, &mut server)
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests still in flight 10 s after the signal; dropping them");
            server.abort();
        }
        locator.remove(&data_dir);
        tracing::info!(mode = %stop_mode, "shutting down: stopping the job pool");
        // Running jobs get a bounded grace; those still running then are given up, as after a
        // crash: their crash policy runs them again at the next start or on another daemon.
        let mode = match stop_mode {
            crate::config::StopMode::Shutdown => crate::jobs::StopMode::Shutdown,
            crate::config::StopMode::Stop => crate::jobs::StopMode::Stop,
            crate::config::StopMode::Terminate => crate::jobs::StopMode::Terminate,
        };
        if tokio::time::timeout(jobs_grace, jobs.stop(mode))
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = jobs_grace.as_secs(),
                "jobs still running after the grace; giving them up"
            );
            jobs.abandon().await;
        }
        tracing::info!("shutting down: stopping plugins");
        background.abort_all();
        while background.join_next().await.is_some() {}
        registry.shutdown().await;
    }
}

/// Raises the soft limit of open files to the hard limit (sockets of API clients, plugin
/// pipes, watched folders, the store all need descriptors; the usual soft default of 1024 runs
/// out long before the hard one). Answers the soft limit now in force.
fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Writes or removes each plugin's `.disabled` marker to match the state the store recorded
/// for it; plugins the store knows nothing of keep theirs. Answers how many markers changed.
fn reconcile_markers(plugins_dir: &Path, states: &BTreeMap<String, bool>) -> usize {
    let discovery = match plugsconc_host::discover(plugins_dir) {
        Ok(discovery) => discovery,
        Err(err) => {
            tracing::warn!(error = %err, "cannot scan the plugins folder to match the .disabled markers to the store");
            return 0;
        }
    };
    let mut changed = 0;
    for plugin in &discovery.plugins {
        let Some(&enabled) = states.get(&plugin.manifest.name) else {
            continue;
        };
        if plugin.disabled != enabled {
            continue;
        }
        let marker = plugin.dir.join(DISABLED_MARKER);
        let result = if enabled {
            match std::fs::remove_file(&marker) {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else {
            std::fs::write(&marker, b"disabled as recorded in the catalog store\n")
        };
        match result {
            Ok(()) => {
                changed += 1;
                tracing::info!(plugin = %plugin.manifest.name, enabled, "the .disabled marker disagreed with the store; now matches it");
            }
            Err(err) => {
                tracing::warn!(plugin = %plugin.manifest.name, marker = %marker.display(), error = %err, "cannot make the .disabled marker match the store");
            }
        }
    }
    changed
}

/// Makes each plugin's status follow the state recorded in the store (at start, before anything
/// else can change one).
async fn apply_states(registry: &Registry, store: &dyn Store) -> anyhow::Result<()> {
    for (name, enabled) in store.states().await? {
        crate::states::apply(registry, &name, enabled).await;
    }
    Ok(())
}

/// Applies changes other daemons announce; rereads everything after a lost connection.
async fn follow(
    registry: Registry,
    store: Arc<dyn Store>,
    origin: Arc<str>,
    base_trust: Trust,
    sharing: crate::sharing::Sharing,
    mut heard: tokio::sync::mpsc::Receiver<Heard>,
) {
    let states = sharing.states.clone();
    while let Some(event) = heard.recv().await {
        match event {
            Heard::Change(notice) if *notice.origin == *origin => {}
            Heard::Change(crate::store::Notice {
                plugin,
                action: Some(action),
                ..
            }) => sharing.apply(&plugin, action).await,
            Heard::Change(notice) if notice.publishers => {
                if *notice.origin != *origin
                    && let Err(err) = trust::refresh(&registry, store.as_ref(), &base_trust).await
                {
                    tracing::warn!(error = %err, "cannot reload the trusted publishers");
                }
            }
            Heard::Change(notice) if *notice.origin != *origin => {
                tracing::info!(plugin = %notice.plugin, from = %notice.origin, "change from another daemon");
                // The notice's own state may be older than the store's by now.
                if let Err(err) = states.converge(&notice.plugin).await {
                    tracing::warn!(plugin = %notice.plugin, error = %err, "cannot read the plugin's state; it is read again at the next resynchronisation");
                }
            }
            Heard::Change(_) => {}
            Heard::Row(row) => row_changed(&registry, store.as_ref(), &states, &row).await,
            Heard::Resync => {
                tracing::info!("catalog listener reconnected; resynchronising");
                if let Err(err) = states.converge_all().await {
                    tracing::warn!(error = %err, "resynchronisation failed");
                }
                if let Err(err) = trust::refresh(&registry, store.as_ref(), &base_trust).await {
                    tracing::warn!(error = %err, "cannot reload the trusted publishers");
                }
                // Until it succeeds: after a long outage the first tries fail too.
                let mut wait = Duration::from_secs(1);
                while let Err(err) = sharing.resync().await {
                    tracing::warn!(error = %err, retry_in_secs = wait.as_secs(), "cannot read the shared bundles");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Applies a row changed in the store by hand (a trigger's hint): a `plugin_state` row is read
/// again and applied; `plugin_endpoints` is read at each listing, so nothing waits. A row for a
/// plugin this daemon does not have, or of a table it does not know, is reported and ignored.
async fn row_changed(
    registry: &Registry,
    store: &dyn Store,
    states: &crate::states::States,
    row: &crate::store::RowChange,
) {
    let plugin = row.plugin.as_str();
    let known = registry.get(plugin).is_some();
    match row.table.as_str() {
        "plugin_state" if known => {
            tracing::info!(plugin, op = %row.op, "plugin state changed in the store");
            if let Err(err) = states.converge(plugin).await {
                tracing::warn!(plugin, error = %err, "cannot read the plugin's state; it is read again at the next resynchronisation");
            }
        }
        "plugin_state" | "plugin_endpoints" if !known && row.op != "DELETE" => {
            // Unless the store shares a bundle of it, which brings it here.
            let shared = store
                .shared_bundles()
                .await
                .is_ok_and(|bundles| bundles.iter().any(|b| b.plugin == plugin && !b.removed));
            if !shared {
                tracing::warn!(table = %row.table, op = %row.op, plugin, "ignoring a changed store row: no plugin of that name here");
            }
        }
        "plugin_state" | "plugin_endpoints" => {
            tracing::debug!(table = %row.table, op = %row.op, plugin, "store row changed");
        }
        _ => {
            tracing::warn!(table = %row.table, op = %row.op, plugin, "ignoring a change to a table the daemon does not follow");
        }
    }
}

/// Records each plugin version the daemon sees (at start, when added, when reloaded), and the
/// HTTP endpoints its manifest declares (an uninstall forgets them; a plugin that only left one
/// daemon's folder may still be served by another daemon sharing the store, and the API lists
/// endpoints only for the plugins a daemon has).
async fn record_versions(registry: Registry, store: Arc<dyn Store>, origin: Arc<str>) {
    let mut events = registry.subscribe();
    let actor = format!("watcher@{origin}");
    let record = |name: String| {
        let (registry, store, actor) = (registry.clone(), store.clone(), actor.clone());
        async move {
            let Some(info) = registry.get(&name) else {
                return;
            };
            let endpoints: Vec<(String, String)> = info
                .http
                .iter()
                .map(|route| (route.method.clone(), route.path.clone()))
                .collect();
            if let Err(err) = store.set_endpoints(&name, &endpoints).await {
                tracing::warn!(plugin = %name, error = %err, "cannot record the plugin's endpoints");
            }
            let (Some(version), Some(sha)) = (info.version, info.manifest_sha256) else {
                return;
            };
            if let Err(err) = store
                .record_version(&name, &version.to_string(), &sha, &actor)
                .await
            {
                tracing::warn!(plugin = %name, error = %err, "cannot record the plugin version");
            }
        }
    };
    for info in registry.list(&Query::default()) {
        record(info.name).await;
    }
    loop {
        match events.recv().await {
            Ok(Event::Added { name } | Event::Reloaded { name, .. } | Event::Updated { name }) => {
                record(name).await
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Counts the registry's resource alerts in the metrics.
async fn count_alerts(registry: Registry, metrics: Arc<Metrics>) {
    let mut events = registry.subscribe();
    loop {
        match events.recv().await {
            Ok(Event::ResourceAlert {
                name, violation, ..
            }) => metrics.resource_alert(&name, violation.resource),
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(root: &Path, name: &str, marked: bool) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), "#!/bin/sh\n").unwrap();
        std::fs::write(
            dir.join("manifest.yaml"),
            format!(
                "plugin:\n  name: {name}\n  type: animal\n  version: 1.0.0\n  entrypoint: ./{name}\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: ANIMAL_PLUGIN\n  magic_cookie_value: animal\n"
            ),
        )
        .unwrap();
        if marked {
            std::fs::write(dir.join(DISABLED_MARKER), b"").unwrap();
        }
    }

    /// A daemon on an empty folder in `root`, its API on a port the OS picks.
    fn config(root: &Path) -> Config {
        let mut config = Config::default();
        config.directories.plugins_dir = root.join("plugins");
        config.directories.plugin_configs_dir = root.join("plugin-configs");
        config.directories.logs_dir = root.join("logs");
        config.directories.data_dir = root.join("data");
        std::fs::create_dir_all(&config.directories.data_dir).unwrap();
        config.api.listen = "127.0.0.1:0".into();
        config
    }

    /// The response to a plain `GET path` on `address`, head and body.
    async fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_started_daemon_answers_on_its_bound_port_and_shuts_down_within_a_bound() {
        let root = tempfile::tempdir().unwrap();
        let config = config(root.path());
        let data_dir = config.directories.data_dir.clone();
        let daemon = Daemon::start(config).await.unwrap();
        let address = daemon.address();
        assert_ne!(address.port(), 0, "the bound port, not the one asked for");
        assert_eq!(
            crate::locator::Locator::read(&data_dir).map(|l| l.address),
            Some(address.to_string()),
            "the CLI can find it"
        );
        let health = tokio::time::timeout(Duration::from_secs(30), get(address, "/api/v1/health"))
            .await
            .expect("the API answers")
            .unwrap();
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.contains(r#""status":"ok""#), "{health}");
        tokio::time::timeout(Duration::from_secs(60), daemon.shutdown())
            .await
            .expect("shutdown is bounded");
        assert!(
            crate::locator::Locator::read(&data_dir).is_none(),
            "the locator is removed"
        );
        assert!(
            get(address, "/api/v1/health").await.is_err(),
            "nothing listens any more"
        );
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let raised = raise_open_files_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(raised, limit.rlim_cur);
    }

    #[test]
    fn markers_follow_the_store_and_unrecorded_plugins_keep_theirs() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        plugin(root, "on_but_marked", true);
        plugin(root, "off_but_unmarked", false);
        plugin(root, "agreeing", true);
        plugin(root, "unrecorded", true);
        let states = BTreeMap::from([
            ("on_but_marked".to_owned(), true),
            ("off_but_unmarked".to_owned(), false),
            ("agreeing".to_owned(), false),
            ("elsewhere".to_owned(), true),
        ]);
        assert_eq!(reconcile_markers(root, &states), 2);
        let marked = |name: &str| root.join(name).join(DISABLED_MARKER).exists();
        assert!(!marked("on_but_marked"));
        assert!(marked("off_but_unmarked"));
        assert!(marked("agreeing"));
        assert!(marked("unrecorded"));
        assert_eq!(
            reconcile_markers(root, &states),
            0,
            "nothing left to change"
        );
    }
}
