//! `plugsconc serve`: the daemon on the effective configuration.

use clap::Args;

use super::ConfigFlags;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigFlags,
}

/// Loads the configuration and runs the daemon until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let loaded = args.config.load()?;
    let config = loaded.config;
    let _logs = plugsconc_daemon::logging::init(
        &config.logging,
        &config.directories.logs_dir,
        &config.directories.data_dir,
    )?;
    plugsconc_daemon::daemon::run(config).await
}
