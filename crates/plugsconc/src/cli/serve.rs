//! `plugsconc serve`: the daemon on the effective configuration.

use clap::Args;

use super::ConfigFlags;
use plugsconc_daemon::daemon::Daemon;
use plugsconc_host::Query;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigFlags,
}

/// Loads the configuration, starts the daemon and runs it until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let loaded = args.config.load()?;
    let config = loaded.config;
    let _logs = plugsconc_daemon::logging::init(
        &config.logging,
        &config.directories.logs_dir,
        &config.directories.data_dir,
    )?;
    let plugins_dir = config.directories.plugins_dir.clone();
    // Listening before the start: a signal during it stops the daemon once it is up, gracefully,
    // instead of killing the process half-way.
    let stop = shutdown_signal();
    let daemon = Daemon::start(config).await?;
    let count = daemon.registry().list(&Query::default()).len();
    // One line on stdout that scripts (and the tests) can wait for.
    println!(
        "plugsconc listening on http://{} with {count} plugins from {}",
        daemon.address(),
        plugins_dir.display()
    );
    stop.await;
    daemon.shutdown().await;
    println!("plugsconc stopped");
    Ok(())
}

/// Listens for SIGINT and SIGTERM from now on; resolves on the first.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (term, interrupt) => {
                let err = term
                    .err()
                    .or(interrupt.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::warn!(error = %err, "cannot listen for SIGTERM/SIGINT; only Ctrl-C stops the daemon");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
