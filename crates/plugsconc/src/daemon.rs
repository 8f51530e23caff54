//! `plugsconc serve`: the daemon. Loads the configuration, opens the catalog of the plugins
//! folder (plus the built-in plugins), watches the folder for hot reload, serves the REST API,
//! and on SIGINT or SIGTERM stops accepting, drains and stops every plugin, and exits — bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use plugsconc_host::signature::{Publisher, SignaturePolicy, Trust};
use plugsconc_host::{Registry, RegistryOptions};

use crate::api::{ApiState, router};
use crate::config::Config;

/// The registry options the configuration asks for.
fn registry_options(config: &Config) -> anyhow::Result<RegistryOptions> {
    let publishers = config
        .security
        .trusted_publishers
        .iter()
        .map(|path| Publisher::load(path).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("security.trusted_publishers")?;
    Ok(RegistryOptions {
        insecure_skip_checksum: config.security.insecure_skip_checksum,
        trust: Trust {
            policy: if config.allow_unsigned() {
                SignaturePolicy::AllowUnsigned
            } else {
                SignaturePolicy::RequireSigned
            },
            publishers,
            unsigned_allowed: config.security.unsigned_allowed.iter().cloned().collect(),
        },
        ..RegistryOptions::default()
    })
}

/// Runs the daemon until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let plugins_dir = config.directories.plugins_dir.clone();
    std::fs::create_dir_all(&plugins_dir)
        .with_context(|| format!("cannot create the plugins folder {}", plugins_dir.display()))?;
    let registry = Registry::open(&plugins_dir, registry_options(&config)?).await?;
    if config.file_watcher.fw_enabled && config.file_watcher.fw_watch_plugins {
        let rescan = config.file_watcher.fw_rescan_secs;
        registry.watch(
            Duration::from_millis(config.file_watcher.fw_debounce_ms),
            (rescan > 0).then(|| Duration::from_secs(rescan)),
        )?;
    }
    let listener = tokio::net::TcpListener::bind(&config.api.listen)
        .await
        .with_context(|| format!("cannot listen on api.listen {}", config.api.listen))?;
    let address = listener.local_addr()?;
    let count = registry.list(&plugsconc_host::Query::default()).len();
    tracing::info!(%address, plugins = count, dir = %plugins_dir.display(), "plugsconc serving");
    // One line on stdout that scripts (and the tests) can wait for.
    println!(
        "plugsconc listening on http://{address} with {count} plugins from {}",
        plugins_dir.display()
    );
    let token = crate::api::load_token(&config.api.token, &config.directories.data_dir)
        .with_context(|| {
            format!(
                "cannot read or create the API token in {}",
                config.directories.data_dir.display()
            )
        })?;
    let app = router(ApiState {
        registry: registry.clone(),
        started,
        token: token.into(),
        descriptors: Arc::default(),
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the API server failed")?;
    tracing::info!("shutting down: stopping plugins");
    registry.shutdown().await;
    println!("plugsconc stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
