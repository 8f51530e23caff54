//! Command-line surface: one module per subcommand.

mod call;
mod client;
mod config;
mod jobs;
mod logs;
mod plugins;
mod serve;
mod sign;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use plugsconc_daemon::config::{Config, Loaded};
use tracing_subscriber::EnvFilter;

/// Run, call and manage plugins (wire-compatible with HashiCorp go-plugin).
#[derive(Debug, Parser)]
#[command(name = "plugsconc", version, about)]
pub struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The daemon to talk to, `host:port` (by default the one the data folder's daemon.json
    /// names, else the configuration's api.listen); it must answer.
    #[arg(long, global = true, env = "PLUGSCONC_DAEMON", value_name = "ADDRESS")]
    pub daemon: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Launch a plugin binary, call one unary gRPC method with a JSON body, print the JSON reply.
    Call(call::CallArgs),
    /// Inspect and manage plugins: list, info, verify, enable, disable, install, uninstall,
    /// reload, call.
    Plugins(plugins::PluginsArgs),
    /// Run the daemon: the plugins folder's catalog, hot reload and the REST API.
    Serve(serve::ServeArgs),
    /// Install a plugin from a folder or a .tar.gz bundle (through the running daemon, or into
    /// the plugins folder): the same as `plugins install`.
    Install(plugins::InstallCommand),
    /// Print the daemon's log lines, or one plugin's, and follow them.
    Logs(logs::LogsArgs),
    /// Submit, follow, list and cancel jobs on the running daemon.
    Jobs(jobs::JobsArgs),
    /// Show the effective configuration and where each value comes from.
    Config(config::ConfigArgs),
    /// Create a publisher key pair for signing plugins.
    Keygen(sign::KeygenArgs),
    /// Sign a plugin folder (its manifest and its binary's hash) with a publisher key.
    Sign(sign::SignArgs),
}

impl Cli {
    /// The daemon sets its logging up from its configuration.
    pub fn logs_from_config(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }

    /// Runs the chosen subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        let daemon = self.daemon.as_deref();
        match self.command {
            Command::Call(args) => call::run(args).await,
            Command::Plugins(args) => plugins::run(args, daemon).await,
            Command::Config(args) => config::run(&args),
            Command::Logs(args) => logs::run(args).await,
            Command::Jobs(args) => jobs::run(args, daemon).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Install(args) => plugins::install_command(args, daemon).await,
            Command::Keygen(args) => sign::keygen(args).await,
            Command::Sign(args) => sign::sign(args).await,
        }
    }
}

/// Where the configuration comes from, for every subcommand that reads it (flattened into
/// each; global, so it may follow a nested subcommand such as `plugins list`).
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigFlags {
    /// The configuration file (default: config.yaml when it exists; embedded defaults otherwise).
    #[arg(long, global = true, env = "PLUGSCONC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a configuration key: `section.key=value` (repeatable; lists are comma-separated).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ConfigFlags {
    /// Loads the defaults, the file, the `PLUGSCONC_*` variables and the `--set` flags.
    ///
    /// # Errors
    ///
    /// The configuration error, naming the key, its layer and what was expected.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        Ok(Config::load(
            self.config.as_deref(),
            std::env::vars(),
            &self.sets,
        )?)
    }
}

/// Console logging on stderr; plugin log lines arrive here with their plugin's name.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug,h2=info,hyper=info,tower=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
