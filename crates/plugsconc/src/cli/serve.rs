//! `plugsconc serve`: the daemon on the effective configuration.

use std::path::PathBuf;

use clap::Args;

use plugsconc_daemon::config::Config;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (default: config.yaml when it exists; embedded defaults otherwise).
    #[arg(long, env = "PLUGSCONC_CONFIG")]
    config: Option<PathBuf>,
    /// Override a key: `section.key=value` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// Loads the configuration and runs the daemon until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let loaded = Config::load(args.config.as_deref(), std::env::vars(), &args.sets)?;
    let config = loaded.config;
    let _logs = plugsconc_daemon::logging::init(
        &config.logging,
        &config.directories.logs_dir,
        &config.directories.data_dir,
    )?;
    plugsconc_daemon::daemon::run(config).await
}
